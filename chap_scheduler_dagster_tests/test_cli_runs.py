"""chap-scheduler-run in process against the sandbox: runs carry the code location's origin and the
UI's tags; an id chap does not have gets no partition, run or report."""

from __future__ import annotations

import dagster as dg
import pytest

from chap_scheduler_dagster import cli
from chap_scheduler_dagster.cli_runs import DEFAULT_LOCATION, code_location_name, unknown_to_chap
from chap_scheduler_dagster.core.errors import SchedulerError
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.tags import MODEL_TAG
from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import REPO


@pytest.fixture
def sandbox_env(monkeypatch, dagster_home):
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        monkeypatch.chdir(REPO)
        monkeypatch.setenv("DHIS2_BASE_URL", sb.base_url)
        monkeypatch.setenv("DHIS2_USERNAME", "admin")
        monkeypatch.setenv("DHIS2_PASSWORD", "district")
        monkeypatch.delenv("DHIS2_TOKEN", raising=False)
        yield sb


def test_cli_run_has_the_origin_and_tags_of_a_ui_launch(sandbox_env, capsys):
    code = cli.main(["1", "99"])
    out = capsys.readouterr().out
    assert code == 1  # 99 is not a configured model
    assert "configured model 1: SUCCEEDED WITH WARNINGS\n" in out
    assert "configured model 99: NOT IN CHAP — chap lists no configured model with this id; nothing was run" in out
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        origin = run.remote_job_origin
        assert origin is not None and origin.location_name == "chap_scheduler_dagster"
        assert origin.repository_origin.repository_name == "__repository__"
        # What the job's Runs tab asks for.
        listed = instance.get_runs(dg.RunsFilter(job_name="dhis2_chap_prediction",
                                                 tags={".dagster/repository": "__repository__@chap_scheduler_dagster"}))
        assert [r.run_id for r in listed] == [run.run_id]
        assert run.tags["dagster/partition"] == "1"
        assert run.tags["dagster/partition_set"] == "dhis2_chap_prediction_partition_set"
        assert run.tags["chap_scheduler/dhis2"] == "default"  # the job's own tags, as in a UI launch
        assert run.tags[MODEL_TAG] == sandbox_env.chap.setups[1]["name"]
        assert run.is_success
        assert instance.get_dynamic_partitions(configured_models_partitions.name) == ["1"]
        assert instance.get_materialized_partitions(report_asset_key) == {"1"}


def test_unknown_to_chap():
    assert unknown_to_chap(["1", "99"], lambda: [1, 2]) == ["99"]
    assert unknown_to_chap([], lambda: 1 / 0) == []  # chap is not asked when nothing is new

    def down():
        raise SchedulerError("could not reach DHIS2")

    assert unknown_to_chap(["99"], down) == []  # cannot tell: the run reports what is unreachable


def test_code_location_name_from_the_workspace(tmp_path):
    assert code_location_name(REPO / "workspace.yaml") == "chap_scheduler_dagster"
    assert code_location_name(REPO / "deploy" / "docker" / "workspace.yaml") == "dhis2"
    assert code_location_name(tmp_path / "missing.yaml") == DEFAULT_LOCATION
    two = tmp_path / "two.yaml"
    two.write_text("load_from:\n  - grpc_server: {host: a, port: 1, location_name: x}\n"
                   "  - grpc_server: {host: b, port: 2, location_name: y}\n")
    assert code_location_name(two) == DEFAULT_LOCATION


@pytest.mark.e2e  # starts a chap-scheduler-run process
def test_ctrl_c_while_waiting_cancels_names_the_chap_job_and_stops(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from chap_scheduler_dagster.defs.tags import CHAP_JOB_TAG

    from .dagster_stack import BIN

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        sb.faults.update({"chap_job": "hang"})
        env = os.environ | {"DHIS2_BASE_URL": sb.base_url, "DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district",
                            "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.3", "DAGSTER_HOME": str(tmp_path),
                            "CHAP_SCHEDULER_CLI_CONCURRENCY": "1"}  # one at a time (fan-out: test_cli_fanout.py)
        cli_process = subprocess.Popen([str(BIN / "chap-scheduler-run"), "1", "2"], env=env, cwd=REPO,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            job_id, deadline = None, time.monotonic() + 90
            with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
                # The job tag is written by submit_prediction; Ctrl-C must land once await_prediction has begun.
                while not job_id and time.monotonic() < deadline:
                    job_id = next((r.tags.get(CHAP_JOB_TAG) for r in instance.get_runs() if r.tags.get(CHAP_JOB_TAG)
                                   and _step_started(instance, r.run_id, "await_prediction")), None)
                    time.sleep(0.3)
            assert job_id, "the run never reached await_prediction"
            cli_process.send_signal(signal.SIGINT)
            out, _ = cli_process.communicate(timeout=60)
        finally:
            if cli_process.poll() is None:
                cli_process.kill()
    assert cli_process.returncode == 1
    assert "configured model 1: CANCELED at await_prediction: the run was terminated during await_prediction" in out
    assert job_id in out  # the chap job that may still be running is named
    assert "  what to do: Terminating the run does not stop chap" in out and "re-execute this run from await_prediction" in out
    assert "interrupted: the remaining configured models were not run" in out
    assert "configured model 2:" not in out
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.CANCELED  # Dagster and the report agree


def test_all_says_why_chap_could_not_be_asked(monkeypatch, tmp_path, capsys):
    """--all builds the dhis2 resource outside a run: a missing variable is named, nothing runs."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DHIS2_BASE_URL", "http://dhis2.test")
    monkeypatch.setenv("DHIS2_USERNAME", "admin")
    for name in ("DHIS2_PASSWORD", "DHIS2_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["--all"]) == 2
    err = capsys.readouterr().err
    assert "could not list configured models: the environment variable DHIS2_PASSWORD is not set" in err
    assert "— Set DHIS2_PASSWORD in the environment of the code location" in err
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []


def _step_started(instance: dg.DagsterInstance, run_id: str, step: str) -> bool:
    return any(e.step_key == step for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))
