"""What is due next (sensor tick message, overview column) and one run per model per minute, on a test instance."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from chap_scheduler_dagster.defs.tags import MODEL_TICK_TAG
from chap_scheduler_dagster.core.next_due import OperatorSchedule, next_runs, soonest
from chap_scheduler_dagster.core.overview import OverviewRow, render_overview
from chap_scheduler_dagster.defs import sensors
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.overview import overview_materialization
from chap_scheduler_dagster.defs.schedules import dhis2_chap_prediction_schedule
from chap_scheduler_dagster.defs.sensors import chap_schedule_sensor
from chap_scheduler_dagster.settings import get_settings

from .test_sensors import LAST_WEEK, PARTITIONS, TEST_DHIS2, chap_answers, context, schedule_context, setup_row

MONDAY_0600 = datetime(2026, 11, 23, 6, 0, 30, tzinfo=UTC)
SUNDAY = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)


@pytest.fixture
def instance(persistent_instance, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_HTTP_GET_ATTEMPTS", "1")
    get_settings.cache_clear()
    return persistent_instance


def tick(instance, setups, cursor=None, when=MONDAY_0600, monkeypatch=None):
    monkeypatch.setattr(sensors, "now", lambda: when)
    with chap_answers(httpx.Response(200, json=setups)):
        return chap_schedule_sensor.evaluate_tick(context(instance, cursor))


# ---- what is due next --------------------------------------------------------------------------

def test_next_runs_from_chap_cron_and_the_operator_schedule():
    now = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    on = OperatorSchedule("ops", "0 5 * * *", "UTC", True, "unscheduled")
    runs = next_runs(["1", "2"], {"1": "0 6 * * 1"}, now=now, tz="UTC", operator=on, names={"1": "Monthly"})
    assert runs["1"].at == datetime(2026, 11, 30, 6, 0, tzinfo=UTC) and runs["1"].by == "chap cron '0 6 * * 1'"
    assert runs["2"].at == datetime(2026, 11, 24, 5, 0, tzinfo=UTC) and runs["2"].by == "schedule ops '0 5 * * *'"
    assert soonest(runs).setup_id == "2"
    assert soonest(runs).describe() == "configured model 2 at 2026-11-24 05:00 UTC by schedule ops '0 5 * * *'"
    # Operator schedule off: nothing runs model 2.
    off = OperatorSchedule("ops", "0 5 * * *", "UTC", False, "unscheduled")
    assert set(next_runs(["1", "2"], {"1": "0 6 * * 1"}, now=now, tz="UTC", operator=off)) == {"1"}
    # Covering all models, the operator schedule's earlier tick is model 1's next run too.
    every = OperatorSchedule("ops", "0 5 * * *", "UTC", True, "all")
    assert next_runs(["1"], {"1": "0 6 * * 1"}, now=now, tz="UTC", operator=every)["1"].by.startswith("schedule")
    # At a minute both fire, it is chap's.
    same = OperatorSchedule("ops", "0 6 * * 1", "UTC", True, "all")
    assert next_runs(["1"], {"1": "0 6 * * 1"}, now=now, tz="UTC", operator=same)["1"].by.startswith("chap cron")


def test_sensor_tick_message_names_the_next_due_model_and_time(instance, monkeypatch):
    data = tick(instance, [setup_row(3), setup_row(4, cron="0 5 * * *")], LAST_WEEK, when=SUNDAY,
                monkeypatch=monkeypatch)
    assert not data.run_requests
    assert "next due: configured model 4 (setup 4) at 2026-11-23 05:00 UTC by chap cron '0 5 * * *'" in data.skip_message


def test_overview_shows_each_models_next_run():
    rows = [OverviewRow(setup_id="1", next_run=datetime(2026, 11, 30, 6, tzinfo=UTC), next_by="chap cron '0 6 * * 1'"),
            OverviewRow(setup_id="2")]
    text = render_overview(rows, generated_at=SUNDAY)
    assert "| next run (UTC) |" in text
    assert "| 1 | never run |  |  |  |  |  | 2026-11-30 06:00 (chap cron '0 6 * * 1') |" in text
    assert "| 2 | never run |  |  |  |  |  |" in text
    # Nothing scheduled at all: no empty column.
    assert "next run" not in render_overview([OverviewRow(setup_id="2")], generated_at=SUNDAY)


def test_overview_reads_next_runs_from_the_chap_schedule_sensors_cursor(instance, monkeypatch):
    # Reading the daemon's stored cursor is covered end to end (test_e2e_double_runs.py).
    from chap_scheduler_dagster.defs import next_due

    monkeypatch.setattr(next_due, "chap_crons_from_sensor", lambda inst, location=None: {"3": "0 6 * * 1"})
    instance.add_dynamic_partitions(PARTITIONS, ["3", "4"])
    text = overview_materialization(instance).metadata["overview"].value
    assert "(chap cron '0 6 * * 1') |" in text
    assert "| 4 | never run |  |  |  |  |  |" in text  # the operator schedule is off by default


# ---- one run per model per minute ---------------------------------------------------------------

def test_sensor_does_not_launch_a_model_already_run_at_that_minute(instance, monkeypatch):
    instance.add_dynamic_partitions(PARTITIONS, ["3"])
    instance.create_run_for_job(
        job_def=dhis2_chap_prediction, run_config={}, tags={MODEL_TICK_TAG: "3@2026-11-23T06:00Z",
                                                             "dagster/partition": "3"},
    )
    data = tick(instance, [setup_row(3)], LAST_WEEK, monkeypatch=monkeypatch)
    assert not data.run_requests
    assert "already run at this minute: 3; next due: configured model 3" in data.skip_message
    # The tick is still accounted for: the next evaluation does not try again.
    assert '"last_tick":"2026-11-23T06:00:00+00:00"' in data.cursor


def test_sensor_and_schedule_runs_carry_the_model_tick(instance, monkeypatch):
    data = tick(instance, [setup_row(3)], LAST_WEEK, monkeypatch=monkeypatch)
    [run] = data.run_requests
    assert run.tags[MODEL_TICK_TAG] == "3@2026-11-23T06:00Z"

    instance.add_dynamic_partitions(PARTITIONS, ["3", "5"])
    ctx = schedule_context(instance, datetime(2026, 11, 23, 6, 0, tzinfo=UTC))
    with chap_answers(httpx.Response(200, json=[setup_row(3), setup_row(5, enabled=False)])):
        runs = dhis2_chap_prediction_schedule.evaluate_tick(ctx).run_requests
    # Model 3 has a chap schedule: by default the operator schedule leaves it to chap.
    assert [(r.partition_key, r.tags[MODEL_TICK_TAG]) for r in runs] == [("5", "5@2026-11-23T06:00Z")]


def test_schedule_skips_a_model_already_run_at_that_minute_even_if_chap_is_unreadable(instance):
    instance.add_dynamic_partitions(PARTITIONS, ["3", "5"])
    instance.create_run_for_job(job_def=dhis2_chap_prediction, run_config={},
                                tags={MODEL_TICK_TAG: "3@2026-11-23T06:00Z", "dagster/partition": "3"})
    ctx = schedule_context(instance, datetime(2026, 11, 23, 6, 0, tzinfo=UTC))
    with chap_answers(httpx.Response(503, text="down")):
        runs = dhis2_chap_prediction_schedule.evaluate_tick(ctx).run_requests
    assert [r.partition_key for r in runs] == ["5"]
    assert TEST_DHIS2.password not in str([r.tags for r in runs])
