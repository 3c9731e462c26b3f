"""Runs say which model they are for: the model-name tag set when sensors and schedules create them."""

from __future__ import annotations

from datetime import UTC, datetime

from chap_scheduler_dagster.core.report import RunReport
from chap_scheduler_dagster.defs.reporting import report_materialization
from chap_scheduler_dagster.defs.tags import MODEL_TAG
from chap_scheduler_dagster.defs.schedules import dhis2_chap_prediction_schedule

from .test_sensors import (  # noqa: F401  (fixtures)
    LAST_WEEK,
    PARTITIONS,
    clock,
    cron_tick,
    instance,
    schedule_context,
    setup_row,
)


def test_chap_cron_runs_carry_the_model_name(instance, clock):  # noqa: F811
    data = cron_tick(instance, [setup_row(3)], LAST_WEEK)
    [run] = data.run_requests
    assert run.tags[MODEL_TAG] == "setup 3"
    assert run.tags["chap_scheduler/trigger"] == "chap-cron"


def test_operator_schedule_runs_carry_the_name_from_the_latest_report(instance):  # noqa: F811
    instance.add_dynamic_partitions(PARTITIONS, ["3", "4"])
    report = RunReport(setup_id="3", dhis2_url="http://dhis2.test", setup_name="Malaria monthly")
    report.succeed()
    instance.report_runless_asset_event(report_materialization(report))
    ctx = schedule_context(instance, datetime(2026, 11, 23, 6, 0, tzinfo=UTC))
    runs = {r.partition_key: r.tags for r in dhis2_chap_prediction_schedule.evaluate_tick(ctx).run_requests}
    assert runs["3"][MODEL_TAG] == "Malaria monthly"
    assert MODEL_TAG not in runs["4"]  # never reported: the run tags itself once it has loaded the model
    assert runs["4"]["chap_scheduler/trigger"] == "schedule:dhis2_chap_prediction_schedule"
