"""A utility integrator's day one, over real processes, once as OpenADR 3.0.1 and once as 3.1: the
strict VTN simulator, onboarding through the ``energy utility`` CLI only, the platform's API (webhook)
and the DR coordinator's VEN runtime.

Checked: the VEN registers and subscribes with the version's objects; string / valuesMap targets
dispatch exactly the targeted facilities; a GROUP target resolves through enrollments; an unknown
target dispatches nothing (recorded not applicable); with notifications lost, polling picks an event
up within two poll intervals; a VTN restart that reuses an id does not drop the new event."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dr_coordinator.entrypoints.ven_runtime import VenRuntime
from energy.settings import Settings
from energy.stack.process import free_port
from sim.bms.process import SimulatorProcess
from tests.dr.conftest import _CREATED_UTILITIES, dr_settings
from tests.dr.test_saga_e2e import api_server_on
from tests.waiting import wait_until

POLL_S = 4.0
HOOK_TOKEN = "integrator-hook-token-0123456789"


def energy_utility(*args: str, env: dict[str, str]) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("energy")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "energy.cli"]
    done = subprocess.run(
        [*argv, "utility", *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def targets(version: str, *names: str, kind: str = "RESOURCE_NAME") -> list[Any]:
    return list(names) if version == "3.1" else [{"type": kind, "values": list(names)}]


def event(program_id: str, minutes_from_now: int, tgt: list[Any] | None) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(minutes=minutes_from_now)).replace(microsecond=0)
    body: dict[str, Any] = {
        "programID": program_id,
        "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": "PT10M"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [2]}]}],
    }
    if tgt is not None:
        body["targets"] = tgt
    return body


async def _vens(bl: httpx.AsyncClient, name: str) -> list[dict[str, Any]] | None:
    return [v for v in (await bl.get("/vens")).json() if v.get("venName") == name] or None


async def dispatched(pool: Any, utility_id: str, vtn_event_id: str, created: str) -> list[str]:
    rows = await pool.fetch(
        """SELECT f.facility_id FROM dr_events e JOIN dr_event_facilities f USING (dr_event_id)
           WHERE e.utility_id = $1 AND e.vtn_event_id = $2 AND e.vtn_created_at = $3 ORDER BY 1""",
        utility_id,
        vtn_event_id,
        created,
    )
    return [r["facility_id"] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.0.1", "3.1"])
async def test_utility_integrator_day_one(version, settings: Settings, stack: Any, pg_pool: Any, uid: str, tmp_path):
    base_path = "/openadr3/3.1.0" if version == "3.1" else "/openadr3/3.0.1"
    bl_token = settings.seed.utility_bearer_token.get_secret_value()  # the utility's business logic
    utility_id = f"int-{version.replace('.', '')}-{uid}"
    _CREATED_UTILITIES.add(utility_id)
    api_port = free_port()
    sim_args = ("--openadr-version", version, "--sequential-ids", "--callback-url", "none")
    with SimulatorProcess.start("utility", free_port(), *sim_args, log_dir=tmp_path) as vtn:
        vtn_url = vtn.url(base_path)
        async with httpx.AsyncClient(
            base_url=vtn_url, headers={"Authorization": f"Bearer {bl_token}"}, timeout=15
        ) as bl:
            program_id = (await bl.post("/programs", json={"programName": f"peak-{uid}"})).json()["id"]

            # Onboarding through the CLI only.
            env = {"VEN_TOKEN": settings.dr.vtn_token.get_secret_value(), "HOOK_TOKEN": HOOK_TOKEN}
            energy_utility(
                "add", utility_id, "--vtn-url", vtn_url, "--openadr-version", version, "--ven-name",
                f"ven-{uid}", "--ven-token-env", "VEN_TOKEN", "--webhook-token-env", "HOOK_TOKEN", env=env,
            )  # fmt: skip
            energy_utility("program", utility_id, program_id, "--notice-s", "0", env=env)
            energy_utility("enroll", utility_id, program_id, "--facility", "fac-001", "--facility", "fac-002",
                           "--group", "north", env=env)  # fmt: skip
            shown = energy_utility("enroll", utility_id, program_id, "--facility", "fac-003", "--group", "south",
                                   env=env)  # fmt: skip
            assert shown["programs"][0]["enrolled_facilities"] == 3

            s = dr_settings(settings, ven_poll_interval_s=POLL_S, webhook_base_url=f"http://127.0.0.1:{api_port}")
            s = s.model_copy(update={"endpoints": s.endpoints.model_copy(update={"api_port": api_port})})
            runtime = VenRuntime(pg_pool, s, [utility_id])
            stop = asyncio.Event()
            async with api_server_on(s, api_port):
                task = asyncio.create_task(runtime.run(stop))
                try:
                    # Registers with the version's request object and subscribes with its operation names.
                    async def subscribed() -> Any:
                        subs = (await bl.get("/subscriptions")).json()
                        return subs if any(s.get("clientName") == f"ven-{uid}" for s in subs) else None

                    subs = await wait_until(
                        subscribed, timeout_s=30, what="the VEN's subscription at the VTN", interval_s=0.2
                    )
                    ops = subs[0]["objectOperations"][0]["operations"]
                    assert ops == (["CREATE", "UPDATE", "DELETE"] if version == "3.1" else ["POST", "PUT", "DELETE"])
                    assert [v["venName"] for v in (await bl.get("/vens")).json()] == [f"ven-{uid}"]

                    async def grant() -> None:
                        """3.1: the utility grants the VEN the targets it will use (a VEN sees targeted events
                        only so, decision 0410 rule 17); fac-404 is granted but not enrolled with us."""
                        if version != "3.1":
                            return
                        [ven] = await wait_until(
                            lambda: _vens(bl, f"ven-{uid}"),
                            timeout_s=3 * POLL_S,
                            what="the VEN registered",
                            interval_s=0.2,
                        )
                        granted = ["fac-001", "fac-002", "fac-003", "north", "south", "fac-404"]
                        body = {"objectType": "BL_VEN_REQUEST", "clientID": ven["clientID"],
                                "venName": ven["venName"], "targets": granted}  # fmt: skip
                        (await bl.put(f"/vens/{ven['id']}", json=body)).raise_for_status()

                        async def targeted_subscription() -> Any:
                            subs = (await bl.get("/subscriptions")).json()
                            return [s for s in subs if sorted(s.get("targets") or []) == sorted(granted)] or None

                        await wait_until(
                            targeted_subscription,
                            timeout_s=3 * POLL_S,
                            what="the subscription for the granted targets",
                            interval_s=0.2,
                        )

                    await grant()

                    # String (3.1) / RESOURCE_NAME (3.0.1) targets: exactly those facilities.
                    e1 = await bl.post("/events", json=event(program_id, 30, targets(version, "fac-001", "fac-003")))
                    assert e1.status_code == 201, e1.text
                    e1 = e1.json()
                    got = await wait_until(
                        lambda: dispatched(pg_pool, utility_id, e1["id"], e1["createdDateTime"]),
                        timeout_s=15,
                        what="event 1 dispatched",
                        interval_s=0.2,
                    )
                    assert got == ["fac-001", "fac-003"]

                    # GROUP target through enrollments.
                    e2 = await bl.post("/events", json=event(program_id, 60, targets(version, "north", kind="GROUP")))
                    e2 = e2.json()
                    got = await wait_until(
                        lambda: dispatched(pg_pool, utility_id, e2["id"], e2["createdDateTime"]),
                        timeout_s=15,
                        what="event 2 dispatched",
                        interval_s=0.2,
                    )
                    assert got == ["fac-001", "fac-002"]

                    # Unknown target: nothing dispatched, recorded not applicable.
                    e3 = (await bl.post("/events", json=event(program_id, 90, targets(version, "fac-404")))).json()
                    key = f"{e3['id']}@{e3['createdDateTime']}"

                    async def not_applicable() -> Any:
                        return await pg_pool.fetchval(
                            "SELECT outcome FROM dr_event_intake WHERE utility_id = $1 AND event_key = $2",
                            utility_id,
                            key,
                        )

                    assert (
                        await wait_until(not_applicable, timeout_s=15, what="event 3's intake outcome", interval_s=0.2)
                        == "not_applicable"
                    )
                    assert await dispatched(pg_pool, utility_id, e3["id"], e3["createdDateTime"]) == []

                    # Notifications lost (our webhook refuses the VTN's token): polling picks the event up
                    # within two poll intervals.
                    (await bl.post(vtn.url("/_admin/faults"), json={"wrong_token": True})).raise_for_status()
                    e4 = (await bl.post("/events", json=event(program_id, 120, targets(version, "fac-002")))).json()
                    t0 = time.monotonic()
                    got = await wait_until(
                        lambda: dispatched(pg_pool, utility_id, e4["id"], e4["createdDateTime"]),
                        timeout_s=2 * POLL_S,
                        what="event 4 dispatched by polling",
                        interval_s=0.2,
                    )
                    assert got == ["fac-002"] and time.monotonic() - t0 <= 2 * POLL_S
                    # An event for another VEN's site: a 3.1 VTN never shows it to us, a 3.0.1 VTN does (read_all)
                    # and we record it as not ours. Two complete polls after its creation settle it.
                    other = (await bl.post("/events", json=event(program_id, 130, targets(version, "site-x")))).json()
                    polls = runtime.vens[utility_id].polls

                    async def polled_twice() -> bool:
                        return runtime.vens[utility_id].polls >= polls + 2

                    await wait_until(polled_twice, timeout_s=4 * POLL_S, what="two complete polls", interval_s=0.2)
                    seen = await pg_pool.fetchval(
                        "SELECT outcome FROM dr_event_intake WHERE utility_id = $1 AND event_key = $2",
                        utility_id,
                        f"{other['id']}@{other['createdDateTime']}",
                    )
                    assert seen == (None if version == "3.1" else "not_applicable")
                    (await bl.post(vtn.url("/_admin/faults"), json={})).raise_for_status()

                    # Every notification our webhook took was answered 200, as the specification wants
                    deliveries = (await bl.get(vtn.url("/_admin/deliveries"))).json()
                    taken = [d for d in deliveries if d["outcome"] != "rejected"]  # rejected: the wrong_token phase
                    assert taken and {d["outcome"] for d in taken} == {"delivered"}, deliveries
                    # The VTN restarts (ids from "0" again, subscription gone): the new event "0" is not
                    # taken for the old one.
                    (await bl.post(vtn.url("/_admin/restart"))).raise_for_status()
                    again = (await bl.post("/programs", json={"programName": f"peak-{uid}"})).json()["id"]
                    assert again == program_id
                    await grant()  # the restarted VTN forgot the VEN's grants: the utility provisions them again
                    e5 = (await bl.post("/events", json=event(program_id, 150, targets(version, "fac-003")))).json()
                    assert e5["id"] == e1["id"] and e5["createdDateTime"] != e1["createdDateTime"]
                    got = await wait_until(
                        lambda: dispatched(pg_pool, utility_id, e5["id"], e5["createdDateTime"]),
                        timeout_s=3 * POLL_S,
                        what="event 5 dispatched after the VTN's restart",
                        interval_s=0.2,
                    )
                    assert got == ["fac-003"]
                    assert await wait_until(
                        subscribed, timeout_s=3 * POLL_S, what="re-subscribed after the restart", interval_s=0.2
                    )  # re-subscribed after the restart
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 15)
