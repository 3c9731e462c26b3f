"""Point 5: the backstop report names the cause from the run's own events, and what it had done with chap."""

from __future__ import annotations

import dagster as dg
import pytest

from chap_scheduler_dagster.core.run_cause import JOB_TAG, POST_TAG, RunEvent, explain_run
from chap_scheduler_dagster.definitions import defs
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.overview import overview_on_canceled, overview_on_failure
from chap_scheduler_dagster.defs.resources import dhis2_from_environment, dhis2_resource_definition

RUN = "6f1c0c2e-0000-4000-8000-00000000abcd"
STARTED = [RunEvent("STEP_START", step="probe_covariates"), RunEvent("STEP_SUCCESS", step="probe_covariates"),
           RunEvent("STEP_START", step="submit_prediction"), RunEvent("STEP_SUCCESS", step="submit_prediction"),
           RunEvent("STEP_START", step="await_prediction")]
FAILED_OUTSIDE = RunEvent("PIPELINE_FAILURE", "This run has been marked as failed from outside the execution context.")


def explain(events, tags=None, status="FAILURE", chap_status=None):
    return explain_run(events, tags or {}, run_id=RUN, setup_id="3", status=status, chap_status=chap_status)


@pytest.mark.parametrize(
    "event",
    [
        RunEvent("ENGINE_EVENT", "[DagsterApiServer] Run execution process for x was terminated by signal 9 (SIGKILL). "
                 "This usually indicates that the process was killed by the operating system"),
        RunEvent("ENGINE_EVENT", "GRPC server: Subprocess for x terminated unexpectedly with exit code -9"),
    ],
)
def test_killed_worker_names_the_signal_the_step_and_the_job(event):
    cause = explain([*STARTED, event, FAILED_OUTSIDE], {POST_TAG: "answered", JOB_TAG: "job-7"}, chap_status="STARTED")
    assert cause.step == "await_prediction"
    assert cause.error == ("the run worker process died during await_prediction: signal 9 (SIGKILL) "
                           "(killed: `kill -9`, or the out-of-memory killer)")
    assert "chap accepted it as job job-7 (chap says STARTED), which may still be running" in cause.text
    assert "outside the execution context" not in cause.text


def test_run_monitoring_timeout():
    events = [*STARTED, RunEvent("PIPELINE_CANCELING", "Canceling due to exceeding maximum runtime of 5400 seconds."),
              RunEvent("PIPELINE_FAILURE", "Exceeded maximum runtime of 5400 seconds.")]
    cause = explain(events, {POST_TAG: "answered", JOB_TAG: "job-7"})
    assert cause.step == "await_prediction"
    assert "run monitoring stopped the run during await_prediction: it ran longer than its limit of 5400 s" in cause.error
    assert "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS" in cause.hint and "job-7" in cause.submission


def test_terminated_run():
    cause = explain([*STARTED, RunEvent("PIPELINE_CANCELING", "Sending run termination request.")], status="CANCELED")
    assert cause.error.startswith("the run was terminated during await_prediction")


def test_missing_variable_from_dagsters_own_words():
    events = [RunEvent("ENGINE_EVENT", "Failure", error="DagsterInvalidConfigError: You have attempted to fetch the "
                       "environment variable 'DHIS2_PASSWORD' which is not set."), FAILED_OUTSIDE]
    cause = explain(events)
    assert cause.step == "resource initialization"
    assert "DHIS2_PASSWORD is not set" in cause.error and "Set DHIS2_PASSWORD" in cause.hint
    assert cause.submission == "The run had not sent anything to chap, so launching again is safe."


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({POST_TAG: "sending"}, f"name ending with [dagster run {RUN}] before launching again"),
        ({POST_TAG: "answer lost"}, "predictionSetupId=3"),
        ({POST_TAG: "not created"}, "launching again is safe"),
        ({}, "had not sent anything to chap"),
    ],
)
def test_what_the_run_had_done_with_chap(tags, expected):
    assert expected in explain([*STARTED, RunEvent("ENGINE_EVENT", "terminated by signal 15")], tags).submission


def test_backstop_with_the_real_resource_and_a_missing_variable(monkeypatch, instance):
    monkeypatch.setenv("DHIS2_BASE_URL", "http://dhis2.test")
    monkeypatch.setenv("DHIS2_USERNAME", "admin")
    monkeypatch.delenv("DHIS2_PASSWORD", raising=False)
    monkeypatch.delenv("DHIS2_TOKEN", raising=False)
    job = defs.resolve_job_def("dhis2_chap_prediction")
    instance.add_dynamic_partitions("chap_configured_models", ["4"])
    result = job.execute_in_process(instance=instance, partition_key="4", raise_on_error=False)
    assert not result.success
    [entry] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name=overview_on_failure.name, dagster_event=entry.dagster_event, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id), resources={"dhis2": dhis2_resource_definition()})
    overview_on_failure(context)
    meta = instance.fetch_materializations(report_asset_key, limit=1).records[0].asset_materialization.metadata
    assert meta["failed_step"].value == "resource initialization"
    text = meta["report"].value
    assert "the environment variable DHIS2_PASSWORD is not set in the code location" in text
    assert "**What to do:** Set DHIS2_PASSWORD in the environment of the code location" in text
    assert "Error executing resource_fn" not in text
    assert "- **Instance:** `http://dhis2.test`" in text  # the resource knows the address without the password
    assert overview_on_canceled.name.endswith("canceled")


def test_instance_files_say_what_run_monitoring_really_does():
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    for path in (repo / "dagster.yaml", repo / "deploy" / "docker" / "dagster.yaml"):
        text = " ".join(path.read_text().split())
        assert "a run whose worker process died is caught by max_runtime_seconds" not in text
        assert "code server that started the run process sees it exit and fails the run within seconds" in text


def test_a_dead_runs_job_is_found_by_name_when_its_id_was_never_recorded(monkeypatch):
    import respx

    from chap_scheduler_dagster.core.reconcile import run_marker
    from chap_scheduler_dagster.defs.run_backstop import chap_lookup

    monkeypatch.setenv("DHIS2_BASE_URL", "http://dhis2.test")
    monkeypatch.setenv("DHIS2_USERNAME", "admin")
    monkeypatch.setenv("DHIS2_PASSWORD", "pw")
    monkeypatch.delenv("DHIS2_TOKEN", raising=False)
    run = dg.DagsterRun(job_name="dhis2_chap_prediction", run_id=RUN, tags={POST_TAG: "sending"})
    route = "http://dhis2.test/api/routes/chap/run/v1/jobs"
    with respx.mock() as router:
        listing = router.get(route).respond(200, json=[{"id": "job-42", "name": f"m {run_marker(RUN)}",
                                                        "status": "STARTED"}])
        router.get(f"{route}/job-42").respond(200, json="STARTED")
        tags, status = chap_lookup(run, "3", dhis2_from_environment())
    assert listing.calls.last.request.url.params["predictionSetupId"] == "3"
    assert tags[JOB_TAG] == "job-42" and status == "STARTED"
    cause = explain([*STARTED, RunEvent("ENGINE_EVENT", "terminated by signal 9")], tags, chap_status=status)
    assert "chap accepted it as job job-42 (chap says STARTED)" in cause.text
    # No POST recorded: chap is not asked at all.
    with respx.mock() as router:
        assert chap_lookup(dg.DagsterRun(job_name="x", run_id=RUN, tags={}), "3", dhis2_from_environment()) == ({}, None)
