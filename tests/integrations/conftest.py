"""Simulators of the DR integrations, started as separate processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sim.bms.process import SimulatorProcess


@pytest.fixture(scope="module")
def bms_sim(stack, tmp_path_factory) -> Iterator[SimulatorProcess]:
    """One BMS simulator process per test module (tests use unique idempotency keys)."""
    from energy.stack.process import free_port

    with SimulatorProcess.start("bms", free_port(), log_dir=tmp_path_factory.mktemp("bms")) as sim:
        yield sim


@pytest.fixture
def bms_admin(bms_sim: SimulatorProcess) -> Iterator[httpx.Client]:
    """Admin client of the module's BMS simulator; faults are cleared after each test."""
    with httpx.Client(base_url=bms_sim.base_url, timeout=5) as client:
        yield client
        client.post("/_admin/faults", json={})
