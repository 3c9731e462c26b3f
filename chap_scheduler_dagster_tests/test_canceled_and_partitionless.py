"""A terminated run is `canceled` and says what may still run in chap; a run without a partition
writes no report, so no partition "?" and no phantom overview row."""

from __future__ import annotations

import dagster as dg

from chap_scheduler_dagster.core.cancellation import cancellation_facts, mark_canceled
from chap_scheduler_dagster.core.report import RunReport
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.overview import backstop_report, latest_report_rows, overview_materialization
from chap_scheduler_dagster.defs.reporting import report_materialization
from chap_scheduler_dagster.defs.resources import Dhis2Resource, UnavailableDhis2
from chap_scheduler_dagster.defs.tags import CHAP_JOB_TAG

from .test_sensors import PARTITIONS, BrokenDhis2, instance  # noqa: F401  (fixtures)

DHIS2 = "https://dhis2.example.org/dhis"


def test_terminated_while_waiting_names_the_chap_job_and_how_to_check_it():
    report = RunReport(setup_id="3", dhis2_url=DHIS2, setup_name="Malaria")
    report.job_id = "job-77"
    mark_canceled(report, "await_prediction")
    assert report.status == "canceled" and report.failed_step == "await_prediction"
    text = report.markdown()
    assert "- **Status:** CANCELED during `await_prediction`" in text
    assert "- **Why canceled:** `the run was terminated during await_prediction; chap job job-77 had been " \
           "accepted and may still be running`" in text
    assert f"GET {DHIS2}/api/routes/chap/run/v1/jobs/job-77" in text
    assert "re-execute this run from await_prediction" in text and "second prediction" in text
    assert report.metadata()["status"] == "canceled"


def test_terminated_before_or_while_posting():
    error, hint = cancellation_facts("submit_prediction", None, DHIS2)
    assert "while the request was being sent to chap" in error
    assert f"GET {DHIS2}/api/routes/chap/run/v1/jobs" in hint and "before launching again" in hint
    error, hint = cancellation_facts("fetch_analytics", None, DHIS2)
    assert "nothing had been sent to chap" in error and "Launch it again" in hint


def test_backstop_of_a_canceled_run_says_canceled_with_the_chap_job(instance):  # noqa: F811
    instance.add_dynamic_partitions(PARTITIONS, ["9"])
    broken = dhis2_chap_prediction.execute_in_process(
        partition_key="9", instance=instance, resources={"dhis2": BrokenDhis2(base_url=DHIS2)}, raise_on_error=False
    )
    run = instance.get_run_by_id(broken.run_id)
    # As the UI's Terminate leaves it, with the chap job id await_prediction had tagged.
    canceled = run.with_status(dg.DagsterRunStatus.CANCELED).with_tags({**run.tags, CHAP_JOB_TAG: "job-5"})
    # As a sensor gets the resource when a DHIS2_* variable is missing: chap is not asked.
    dhis2 = UnavailableDhis2(base_url=DHIS2, reason="the environment variable DHIS2_PASSWORD is not set")
    report = backstop_report(instance, canceled, dhis2)
    assert report is not None and report.status == "canceled"
    assert "chap job job-5 had been accepted and may still be running" in report.error
    assert f"GET {DHIS2}/api/routes/chap/run/v1/jobs/job-5" in report.hint  # the resource's address
    assert "CANCELED during" in report.markdown()


def test_a_run_without_partition_writes_no_report_and_no_overview_row(instance):  # noqa: F811
    result = dhis2_chap_prediction.execute_in_process(
        instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=DHIS2, username="admin", password="district")},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "the run has no partition" in failure.step_failure_data.error.message
    assert "Pick a configured model (partition)" in failure.step_failure_data.error.message
    assert instance.get_materialized_partitions(report_asset_key) == set()
    assert instance.fetch_materializations(report_asset_key, limit=1).records == []


def test_a_report_under_a_key_that_is_no_chap_id_is_not_a_model(instance):  # noqa: F811
    instance.add_dynamic_partitions(PARTITIONS, ["1"])
    # What a partition-less run of the earlier version left behind.
    instance.report_runless_asset_event(report_materialization(RunReport(setup_id="?", dhis2_url=DHIS2)))
    assert [row.setup_id for row in latest_report_rows(instance)] == ["1"]
    text = overview_materialization(instance).metadata["overview"].value
    assert "?" not in text.split("| model |")[1] and "deleted in chap" not in text


def test_invalid_config_after_a_success_keeps_the_last_good_forecast_in_the_overview(instance):  # noqa: F811
    from dhis2_sandbox import Sandbox, SandboxConfig

    instance.add_dynamic_partitions(PARTITIONS, ["1"])

    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb:
        def run(window: dict):
            return dhis2_chap_prediction.execute_in_process(
                partition_key="1", instance=instance, raise_on_error=False,
                resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
                run_config={"ops": {"probe_covariates": {"config": window}}},
            )

        good = run({"end_mode": "offset", "end_period_offset": 3})
        assert good.success
        typo = run({"end_mode": "fixed"})  # no end_date: passes the launchpad, fails in probe_covariates
        assert not typo.success
    [row] = latest_report_rows(instance)
    assert (row.status, row.failed_step, row.run_id) == ("failed", "probe_covariates", typo.run_id)
    assert row.last_success_run_id == good.run_id and row.last_success_prediction_id
    pid = row.last_success_prediction_id
    text = overview_materialization(instance).metadata["overview"].value
    assert f", prediction {pid} ([{good.run_id[:8]}](/runs/{good.run_id})) |" in text


def test_last_success_is_found_behind_a_streak_of_failures(instance):  # noqa: F811
    instance.add_dynamic_partitions(PARTITIONS, ["4"])
    good = RunReport(setup_id="4", dhis2_url=DHIS2, run_id="good-run")
    good.prediction_id = 11
    good.succeed()
    instance.report_runless_asset_event(report_materialization(good))
    for i in range(8):
        bad = RunReport(setup_id="4", dhis2_url=DHIS2, run_id=f"bad-{i}")
        bad.status, bad.failed_step, bad.error = "failed", "probe_covariates", "typo"
        instance.report_runless_asset_event(report_materialization(bad))
    [row] = latest_report_rows(instance)
    assert row.status == "failed" and row.run_id == "bad-7"
    assert (row.last_success_run_id, row.last_success_prediction_id) == ("good-run", "11")


def test_overview_table_has_last_attempt_and_last_success_per_model(instance):  # noqa: F811
    instance.add_dynamic_partitions(PARTITIONS, ["4", "6"])
    good = RunReport(setup_id="4", dhis2_url=DHIS2, run_id="good-run", setup_name="Yearly")
    good.prediction_id = 11
    good.succeed()
    instance.report_runless_asset_event(report_materialization(good))
    stopped = RunReport(setup_id="4", dhis2_url=DHIS2, run_id="stopped-run")
    stopped.job_id = "job-1"
    mark_canceled(stopped, "await_prediction")
    instance.report_runless_asset_event(report_materialization(stopped))
    table = overview_materialization(instance).metadata["models"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns][:3] == ["model", "name", "status"]
    records = {r.data["model"]: r.data for r in table.records}
    assert records["4"]["status"] == "canceled" and records["4"]["step"] == "await_prediction"
    assert records["4"]["name"] == "Yearly" and records["4"]["run"] == "stopped-run"
    assert (records["4"]["last_prediction_id"], records["4"]["last_success_run"]) == ("11", "good-run")
    assert records["6"]["status"] == "never run" and records["6"]["in_chap"] is True
    assert overview_materialization(instance).metadata["canceled"].value == 1
