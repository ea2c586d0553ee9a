"""The first forecast model of a local run (decision 0951): where its models live, how many days of the
seeded history it trains on, and that a second ``energy run`` does not train again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from energy.first_model import MAX_DAYS, history_days, local_model_dir, trained_on_history
from energy.settings import Settings

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)


def test_history_days_are_the_whole_days_every_seeded_facility_has_at_most_56() -> None:
    assert history_days([], NOW) == 0
    one = (NOW - timedelta(days=20, hours=11), NOW - timedelta(hours=1))
    assert history_days([one], NOW) == 20
    later = (NOW - timedelta(days=12, hours=3), NOW)  # a facility seeded later has less
    assert history_days([one, later], NOW) == 12
    assert history_days([(NOW - timedelta(days=60), NOW)], NOW) == MAX_DAYS == 56


def _version(model_dir: Path, name: str, version: str, source: str) -> None:
    (model_dir / name / version).mkdir(parents=True)
    (model_dir / name / version / "meta.json").write_text(json.dumps({"source": source}))


def test_only_a_version_trained_on_the_stacks_own_rollups_counts_as_done(tmp_path: Path) -> None:
    _version(tmp_path, "platform", "20261201-aaaa", "synthetic")
    _version(tmp_path, "platform-60m", "20261202-bbbb", "influx")  # another interval's model
    assert trained_on_history(tmp_path, "platform") is None
    _version(tmp_path, "platform", "20261203-cccc", "influx")
    assert trained_on_history(tmp_path, "platform") == "platform-20261203-cccc"


def test_a_local_run_copies_the_shipped_models_once_and_keeps_what_it_trained(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    _version(shipped, "platform", "v1", "synthetic")
    (shipped / "platform" / "CURRENT").write_text("v1\n")
    (shipped / "platform" / "tmp").mkdir()  # a training's scratch folder is not copied
    settings = Settings(stack={"data_dir": tmp_path / "stack"}, forecast={"model_dir": shipped})

    local = local_model_dir(settings, environ={})
    assert local == tmp_path / "stack" / "models"
    assert (local / "platform" / "CURRENT").read_text() == "v1\n"
    assert (local / "platform" / "v1" / "meta.json").exists() and not (local / "platform" / "tmp").exists()

    (local / "platform" / "CURRENT").write_text("v2\n")  # the first model was promoted locally
    assert local_model_dir(settings, environ={}) == local
    assert (local / "platform" / "CURRENT").read_text() == "v2\n"
    assert (shipped / "platform" / "CURRENT").read_text() == "v1\n"  # the repository's artefacts untouched


def test_an_explicit_model_folder_is_used_as_it_is(tmp_path: Path) -> None:
    settings = Settings(stack={"data_dir": tmp_path / "stack"}, forecast={"model_dir": tmp_path / "mine"})
    chosen = local_model_dir(settings, environ={"ENERGY_FORECAST__MODEL_DIR": str(tmp_path / "mine")})
    assert chosen == tmp_path / "mine"
    assert not (tmp_path / "stack").exists()


def test_stopping_the_job_ends_the_training_it_started(tmp_path: Path) -> None:
    import os

    from energy.stack.process import spawn_detached, terminate_group, wait_until

    # a job (bash) that started a child of its own, as first-model starts `energy forecast train`
    child_pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {child_pid_file}; wait"
    job = spawn_detached(["bash", "-c", script], tmp_path / "job.log", tmp_path / "job.pid")
    assert wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text().strip() != "", 30)
    child = int(child_pid_file.read_text())
    assert os.getpgid(child) == job  # the child is in the job's process group

    assert terminate_group(job, timeout_s=20)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z"

    assert gone(job) and wait_until(lambda: gone(child), 10), "the child outlived the job"
