"""The drill's verdict (pure comparison) and the scripts' usage errors, without servers."""

from __future__ import annotations

import subprocess

from scripts.backup.restore_drill import DrillReport, build_parser, compare_counts
from tests.infra.conftest import ROOT

SCRIPTS = ROOT / "scripts" / "backup"


def test_identical_counts_have_no_differences() -> None:
    assert compare_counts("postgres", {"meters": 200, "facilities": 20}, {"facilities": 20, "meters": 200}) == []


def test_every_kind_of_difference_is_reported_by_name() -> None:
    problems = compare_counts(
        "influxdb",
        {"raw_90d.readings": 10, "rollups_2y.meter_rollups": 5, "rollups_2y.facility_rollups": 1},
        {"raw_90d.readings": 9, "rollups_2y.facility_rollups": 1, "autogen.stray": 3},
    )
    assert problems == [
        "influxdb: autogen.stray appeared after restore (3), not in the source",
        "influxdb: raw_90d.readings has 9 after restore, source has 10",
        "influxdb: rollups_2y.meter_rollups missing after restore (source has 5)",
    ]


def test_report_is_ok_only_without_differences() -> None:
    report = DrillReport(postgres_source={"a": 1}, postgres_restored={"a": 1})
    assert report.ok and report.as_dict()["ok"] is True
    report.differences.append("postgres: a has 0 after restore, source has 1")
    assert not report.ok and report.as_dict()["differences"] == ["postgres: a has 0 after restore, source has 1"]


def test_drill_requires_every_endpoint() -> None:
    parser = build_parser()
    required = {a.dest for a in parser._actions if a.required}
    assert required == {
        "pg_source",
        "pg_scratch_admin",
        "influx_source_rpc",
        "influx_source_http",
        "influx_scratch_rpc",
        "influx_scratch_http",
        "workdir",
    }


def test_backup_scripts_reject_wrong_usage_with_a_usage_line() -> None:
    for script in ("pg_backup.sh", "pg_restore.sh", "influx_backup.sh", "influx_restore.sh"):
        out = subprocess.run([str(SCRIPTS / script)], capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 64, script
        assert out.stderr.startswith("usage: "), script


def test_pg_restore_refuses_a_hostile_database_name() -> None:
    out = subprocess.run(
        [
            str(SCRIPTS / "pg_restore.sh"),
            "/nonexistent.dump",
            "postgresql://postgres@127.0.0.1:1/postgres",
            'x"; DROP DATABASE energy; --',
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 64 and "bad database name" in out.stderr
