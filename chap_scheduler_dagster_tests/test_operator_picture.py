"""Progress while waiting, model tags, re-execution rules and the state IO manager (no webserver)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import respx

from chap_scheduler_dagster.core.chap_client import ChapClient
from chap_scheduler_dagster.core.errors import SchedulerError
from chap_scheduler_dagster.core.prediction_steps import PredictionRun
from chap_scheduler_dagster.core.reexecution import body_missing, continue_in_run
from chap_scheduler_dagster.core.report import RunReport
from chap_scheduler_dagster.core.wait_progress import WaitProgress
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.defs.run_state import KEY_PREFIX, state_key
from chap_scheduler_dagster.defs.tags import MODEL_TAG, MAX_TAG_VALUE, launch_tags, model_tags
from dhis2_sandbox import Sandbox, SandboxConfig

from .core_fixtures import CHAP, DHIS2, PASSWORD, USER


class Clock:
    """Time that moves only when the client sleeps between polls."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _job(job_id: str) -> dict:
    return {"id": job_id, "type": "create_prediction", "name": "p", "status": "PENDING",
            "start_time": "2026-01-01T00:00:00", "end_time": None, "result": None, "error": None,
            "prediction_setup_id": 3}


def test_waiting_logs_each_change_and_at_least_every_minute():
    clock = Clock()
    # 10 s polls: PENDING for 30 s, STARTED for 150 s, then SUCCESS.
    statuses = ["PENDING"] * 3 + ["STARTED"] * 15 + ["SUCCESS"]
    lines: list[str] = []
    with respx.mock(base_url=CHAP, assert_all_called=False) as mock:
        mock.get("/v1/jobs").respond(json=[_job("j9")])
        mock.get("/v1/jobs/j9").mock(side_effect=[httpx.Response(200, json=s) for s in statuses])
        with ChapClient(DHIS2, username=USER, password=PASSWORD, sleep=clock.sleep) as chap:
            progress = WaitProgress("j9", 3600, lines.append, clock=clock)
            status = chap.wait_for_job("j9", timeout_seconds=3600, poll_interval_seconds=10,
                                       on_status=progress.on_status, on_poll=progress.on_poll, clock=clock)
    assert status == "SUCCESS"
    assert lines == [
        "chap job j9: PENDING (0 s of the 3600 s timeout)",
        "chap job j9: STARTED (30 s of the 3600 s timeout)",
        "still waiting on chap job j9: STARTED (90 s of the 3600 s timeout)",
        "still waiting on chap job j9: STARTED (150 s of the 3600 s timeout)",
        "chap job j9: SUCCESS (180 s of the 3600 s timeout)",
    ]


def test_no_silence_longer_than_a_minute_whatever_the_poll_interval():
    clock = Clock()
    lines: list[tuple[float, str]] = []
    progress = WaitProgress("j1", 600, lambda line: lines.append((clock.now, line)), clock=clock)
    progress.on_status("STARTED")
    for _ in range(40):  # 7 s polls for 280 s
        clock.sleep(7)
        progress.on_poll("STARTED")
    times = [t for t, _ in lines]
    assert max(b - a for a, b in zip(times, times[1:])) <= 60 + 7
    assert all("j1" in line and "of the 600 s timeout" in line for _, line in lines)


def test_model_tags():
    assert model_tags(None) == {} and model_tags("  ") == {}
    assert model_tags("Malaria  monthly\n(ewars)") == {MODEL_TAG: "Malaria monthly (ewars)"}
    assert len(model_tags("x" * 500)[MODEL_TAG]) == MAX_TAG_VALUE
    assert launch_tags("cli", "M") == {"chap_scheduler/trigger": "cli", MODEL_TAG: "M"}


def _state(run_id: str, tmp_path: Path) -> PredictionRun:
    report = RunReport(setup_id="1", dhis2_url="http://x", run_id=run_id,
                       started_at=datetime(2026, 1, 1, tzinfo=UTC))
    report.status, report.failed_step, report.error = "failed", "await_prediction", "timeout"
    report.job_id = "job-1"
    return PredictionRun(report=report, body_path=tmp_path / "gone.json")


def test_state_from_a_parent_run_becomes_this_runs_own(tmp_path):
    run = _state("parent", tmp_path)
    now = datetime(2026, 2, 1, tzinfo=UTC)
    line = continue_in_run(run, "child", "await_prediction", parent_run_id="parent", now=now)
    assert line and "waiting again on chap job job-1 (no new request is sent to chap)" in line
    r = run.report
    assert (r.run_id, r.started_at, r.status, r.failed_step, r.error) == ("child", now, "running", None, None)
    assert r.reexecution_of == "run parent, from step await_prediction"
    assert "- **Re-execution of:** run parent, from step await_prediction" in r.markdown()
    assert run.job_id == "job-1"  # the same chap job
    assert body_missing(run)
    # Within one run nothing changes.
    assert continue_in_run(run, "child", "await_prediction") is None
    assert run.report.reexecution_of == "run parent, from step await_prediction"


def test_state_is_stored_in_the_instance_and_each_step_gets_a_copy(instance):
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        instance.add_dynamic_partitions(configured_models_partitions.name, ["1"])
        result = dhis2_chap_prediction.execute_in_process(
            partition_key="1", instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
            run_config={"ops": {"probe_covariates": {"config": {"end_mode": "offset", "end_period_offset": 3}}}},
        )
        assert result.success
        keys = {state_key([result.run_id, step, "result"])
                for step in ("probe_covariates", "fetch_analytics", "submit_prediction")}
        stored = instance.run_storage.get_cursor_values(keys)
        assert set(stored) == keys and all(k.startswith(KEY_PREFIX) for k in keys)
        # The state stored after probe_covariates is what that step returned: later steps did not change it.
        import base64
        import pickle

        probed = pickle.loads(base64.b64decode(stored[state_key([result.run_id, "probe_covariates", "result"])]))
        submitted = pickle.loads(base64.b64decode(stored[state_key([result.run_id, "submit_prediction", "result"])]))
        assert probed.job_id is None and probed.report.analytics_rows is None
        assert submitted.job_id and submitted.report.analytics_rows
        assert PASSWORD not in str(stored) and "district" not in str(stored)
        run = instance.get_run_by_id(result.run_id)
        assert run.tags[MODEL_TAG] == sb.chap.setups[1]["name"]


def test_a_state_that_is_not_stored_fails_with_a_way_out(instance):
    from chap_scheduler_dagster.defs.run_state import RunStateIOManager

    # The two attributes the IO manager reads from Dagster's InputContext.
    upstream = SimpleNamespace(step_key="probe_covariates", run_id="gone",
                               get_identifier=lambda: ["gone", "probe_covariates", "result"])
    context = SimpleNamespace(upstream_output=upstream, instance=instance)
    with pytest.raises(SchedulerError) as info:
        RunStateIOManager().load_input(context)
    assert "probe_covariates of run gone is not stored" in str(info.value)
    assert "launch a new run" in info.value.hint


def test_the_job_brings_its_io_manager_and_takes_every_other_resource_from_definitions():
    from chap_scheduler_dagster.definitions import defs
    from chap_scheduler_dagster.defs.run_state import RunStateIOManager

    assert set(dhis2_chap_prediction.resource_defs) == {"io_manager"}  # dhis2 is not pinned on the job
    resolved = defs.resolve_job_def("dhis2_chap_prediction")
    assert set(resolved.resource_defs) == {"io_manager", "dhis2", "notify_channels"}
    assert resolved.resource_defs["io_manager"].configurable_resource_cls is RunStateIOManager
    assert resolved.resource_defs["dhis2"] is defs.resources["dhis2"]  # the environment-bound definition
