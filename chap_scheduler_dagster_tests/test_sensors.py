"""Sensors, schedule and overview of the code location: sensor ticks against a respx DHIS2 with chap behind its
route, runs against the sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest
import respx

from chap_scheduler_dagster.core import chap_client
from chap_scheduler_dagster.core.report import RunReport
from chap_scheduler_dagster.defs import sensors
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.overview import (
    overview_asset_key,
    overview_on_canceled,
    overview_on_failure,
    overview_on_success,
)
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.reporting import report_materialization
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.defs.schedules import build_prediction_schedule, dhis2_chap_prediction_schedule
from chap_scheduler_dagster.defs.sensors import chap_schedule_sensor, configured_models_sensor
from chap_scheduler_dagster.settings import get_settings
from dhis2_sandbox import Sandbox, SandboxConfig

BASE = "http://dhis2.test"
SETUPS_URL = f"{BASE}/api/routes/chap/run/v1/crud/prediction-setups"
PARTITIONS = configured_models_partitions.name
SECRET = "district"
PASSWORD = "district-secret"  # the sandbox's, for the runs against it


def setup_row(setup_id: int, cron: str | None = "0 6 * * 1", enabled: bool = True) -> dict:
    return {
        "id": setup_id,
        "name": f"setup {setup_id}",
        "configuredModel": {"id": 1, "name": "naive_model"},
        "startPeriod": "202101",
        "orgUnits": ["OU_A"],
        "covariateSources": [],
        "periodType": "month",
        "scheduleCronExpression": cron,
        "scheduleEnabled": enabled,
        "quantileTargets": [],
    }


@pytest.fixture(autouse=True)
def one_attempt(monkeypatch):
    """One GET attempt, so an unreachable DHIS2 does not back off for seconds."""
    monkeypatch.setenv("CHAP_SCHEDULER_HTTP_GET_ATTEMPTS", "1")
    get_settings.cache_clear()


@pytest.fixture
def instance(persistent_instance):
    """Sensor contexts need an instance on files (conftest: one per module, wiped per test)."""
    return persistent_instance


@pytest.fixture
def clients(monkeypatch):
    """Counts chap clients opened and closed, to show that no tick leaks one."""
    counts = {"opened": 0, "closed": 0}
    original_init, original_close = chap_client.ChapClient.__init__, chap_client.ChapClient.close

    def init(self, *args, **kwargs):
        counts["opened"] += 1
        original_init(self, *args, **kwargs)

    def close(self):
        counts["closed"] += 1
        original_close(self)

    monkeypatch.setattr(chap_client.ChapClient, "__init__", init)
    monkeypatch.setattr(chap_client.ChapClient, "close", close)
    return counts


# Partitioned run requests are resolved against the job, so the context needs the definitions.
TEST_DHIS2 = Dhis2Resource(base_url="http://dhis2.test", username="admin", password=SECRET)
SENSOR_DEFS = dg.Definitions(
    jobs=[dhis2_chap_prediction],
    sensors=[configured_models_sensor, chap_schedule_sensor],
    resources={"dhis2": TEST_DHIS2},
)


def context(instance, cursor: str | None = None) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),  # lets Dagster check partition keys, as the daemon does
        cursor=cursor,
        definitions=SENSOR_DEFS,
        resources={"dhis2": TEST_DHIS2},
    )


def chap_answers(*responses):
    """A respx router whose prediction-setups route answers ``responses`` in turn."""
    router = respx.mock(assert_all_called=False)
    router.get(SETUPS_URL).mock(side_effect=list(responses))
    return router


def apply(instance, data) -> None:
    """Apply dynamic partition requests, as the daemon does (the test context does not)."""
    for request in data.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def discover(instance, *responses):
    with chap_answers(*responses):
        data = configured_models_sensor.evaluate_tick(context(instance))
    apply(instance, data)
    return data


def report_for(instance, key: str, status: str = "succeeded", run_id: str = "") -> None:
    report = RunReport(setup_id=key, dhis2_url=BASE, setup_name=f"setup {key}", run_id=run_id)
    report.status = status  # type: ignore[assignment]
    report.prediction_id = 40 + int(key) if status == "succeeded" else None
    report.finish()
    instance.report_runless_asset_event(report_materialization(report))


# ---- discovery -----------------------------------------------------------------------------


def test_discovery_adds_new_models(instance, clients):
    data = discover(instance, httpx.Response(200, json=[setup_row(3), setup_row(10)]))
    assert [type(r).__name__ for r in data.dynamic_partitions_requests] == ["AddDynamicPartitionsRequest"]
    assert sorted(instance.get_dynamic_partitions(PARTITIONS)) == ["10", "3"]
    assert not data.run_requests
    assert clients == {"opened": 1, "closed": 1}


def test_discovery_removes_deleted_models_and_keeps_their_reports(instance, clients):
    instance.add_dynamic_partitions(PARTITIONS, ["3", "4", "5"])
    report_for(instance, "5")
    data = discover(instance, httpx.Response(200, json=[setup_row(3), setup_row(4), setup_row(6)]))
    kinds = {type(r).__name__: list(r.partition_keys) for r in data.dynamic_partitions_requests}
    assert kinds == {"AddDynamicPartitionsRequest": ["6"], "DeleteDynamicPartitionsRequest": ["5"]}
    assert sorted(instance.get_dynamic_partitions(PARTITIONS)) == ["3", "4", "6"]
    history = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=report_asset_key, asset_partitions=["5"]), limit=5
    ).records
    assert len(history) == 1 and history[0].asset_materialization.metadata["status"].value == "succeeded"
    [overview] = data.asset_events
    assert overview.asset_key == overview_asset_key
    text = overview.metadata["overview"].value
    assert "| 5 — setup 5 (deleted in chap) | succeeded |" in text and "| 6 — setup 6 | never run |" in text
    assert clients == {"opened": 1, "closed": 1}


def test_discovery_no_change_is_a_skip(instance):
    instance.add_dynamic_partitions(PARTITIONS, ["3"])
    data = discover(instance, httpx.Response(200, json=[setup_row(3)]))
    assert data.skip_message == "no change: 1 configured models (3)"
    assert not data.dynamic_partitions_requests


@pytest.mark.parametrize(
    "answer, reason",
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "could not reach DHIS2 at http://dhis2.test"),
        (
            httpx.Response(502, json={"httpStatusCode": 502, "message": "Bad Gateway", "status": "ERROR"}),
            "chap-core did not answer (HTTP 502",
        ),
        (httpx.Response(502, text="<html>bad gateway</html>"), "HTTP 502 from DHIS2 or its proxy"),
        (httpx.Response(401, json={"httpStatusCode": 401, "message": "Unauthorized"}), "authentication failed"),
        (httpx.Response(200, json=[{"id": "not-a-number"}]), "not a list of prediction setups"),
    ],
)
def test_discovery_skips_and_changes_nothing_when_unreachable(instance, clients, answer, reason):
    instance.add_dynamic_partitions(PARTITIONS, ["3", "4"])
    data = discover(instance, answer)
    assert data.skip_message.startswith("DHIS2 or chap unavailable, partitions unchanged: ")
    assert reason in data.skip_message
    assert SECRET not in data.skip_message
    assert not data.dynamic_partitions_requests
    assert sorted(instance.get_dynamic_partitions(PARTITIONS)) == ["3", "4"]
    assert clients == {"opened": 1, "closed": 1}


def test_unreachable_skip_carries_the_hint(instance):
    data = discover(instance, httpx.ConnectError("refused"))
    assert "— Check DHIS2_BASE_URL" in data.skip_message


# ---- chap's own schedules ------------------------------------------------------------------

MONDAY_0600 = datetime(2026, 11, 23, 6, 0, 30, tzinfo=UTC)
LAST_WEEK = json.dumps({"v": 1, "setups": {"3": {"cron": "0 6 * * 1", "last_tick": "2026-11-16T06:00:00+00:00"}}})


@pytest.fixture
def clock(monkeypatch):
    def set_now(when: datetime) -> None:
        monkeypatch.setattr(sensors, "now", lambda: when)

    set_now(MONDAY_0600)
    return set_now


def cron_tick(instance, setups, cursor=None):
    with chap_answers(httpx.Response(200, json=setups)):
        data = chap_schedule_sensor.evaluate_tick(context(instance, cursor))
    apply(instance, data)
    return data


def test_chap_cron_due_launches_one_run_and_adds_the_partition(instance, clock, clients):
    data = cron_tick(instance, [setup_row(3), setup_row(4, cron=None)], LAST_WEEK)
    [run] = data.run_requests
    assert run.partition_key == "3"
    assert run.run_key == "chap-cron:3:2026-11-23T06:00:00+00:00"
    assert run.tags["chap_scheduler/trigger"] == "chap-cron"
    assert "chap_scheduler/catch_up" not in run.tags
    assert instance.get_dynamic_partitions(PARTITIONS) == ["3"]  # unknown key added with the run
    assert json.loads(data.cursor)["setups"]["3"]["last_tick"] == "2026-11-23T06:00:00+00:00"
    assert clients == {"opened": 1, "closed": 1}


def test_chap_cron_not_due(instance, clock):
    clock(datetime(2026, 11, 22, 23, 0, tzinfo=UTC))
    data = cron_tick(instance, [setup_row(3)], LAST_WEEK)
    assert not data.run_requests and "not due: 3" in data.skip_message
    assert json.loads(data.cursor) == json.loads(LAST_WEEK)


def test_chap_cron_restart_never_fires_twice(instance, clock):
    first = cron_tick(instance, [setup_row(3)], LAST_WEEK)
    # A crash before the cursor was saved re-evaluates the same cursor: the same run key, which the
    # daemon deduplicates.
    replay = cron_tick(instance, [setup_row(3)], LAST_WEEK)
    assert [r.run_key for r in replay.run_requests] == [r.run_key for r in first.run_requests]
    # With the saved cursor (normal restart, or a slow next tick), nothing is launched.
    clock(datetime(2026, 11, 23, 6, 7, tzinfo=UTC))
    again = cron_tick(instance, [setup_row(3)], first.cursor)
    assert not again.run_requests and "not due: 3" in again.skip_message


def test_chap_cron_catch_up_after_downtime_is_one_run(instance, clock):
    clock(datetime(2026, 11, 23, 9, 30, tzinfo=UTC))
    cursor = json.dumps({"v": 1, "setups": {"3": {"cron": "0 6 * * *", "last_tick": "2026-10-01T06:00:00+00:00"}}})
    data = cron_tick(instance, [setup_row(3, cron="0 6 * * *")], cursor)
    [run] = data.run_requests
    assert run.run_key == "chap-cron:3:2026-11-23T06:00:00+00:00"
    assert run.tags["chap_scheduler/catch_up"] == "true"


def test_chap_cron_uses_the_settings_time_zone(instance, clock, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_SCHEDULE_TIMEZONE", "Africa/Kampala")  # UTC+3
    get_settings.cache_clear()
    clock(datetime(2026, 11, 23, 3, 0, 20, tzinfo=UTC))  # 06:00:20 in Kampala
    data = cron_tick(instance, [setup_row(3)], LAST_WEEK)
    assert [r.run_key for r in data.run_requests] == ["chap-cron:3:2026-11-23T03:00:00+00:00"]


def test_chap_cron_new_setup_waits_for_its_next_tick(instance, clock):
    clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    data = cron_tick(instance, [setup_row(3)])
    assert not data.run_requests and "first seen" in data.skip_message
    assert json.loads(data.cursor)["setups"]["3"]["last_tick"] == "2026-11-23T06:00:00+00:00"


def test_chap_cron_bad_expression_is_skipped_with_a_message_and_a_report(instance, clock):
    data = cron_tick(instance, [setup_row(3, cron="0 6 * *"), setup_row(4, cron="61 6 * * 1")])
    assert not data.run_requests
    assert "configured model 3 (setup 3): schedule '0 6 * *' skipped: a cron expression needs exactly five" in (
        data.skip_message
    )
    assert "schedule '61 6 * * 1' skipped" in data.skip_message
    reports = {e.partition: e for e in data.asset_events}
    assert set(reports) == {"3", "4"} and all(e.asset_key == report_asset_key for e in reports.values())
    assert reports["3"].metadata["status"].value == "skipped"
    assert "Fix scheduleCronExpression" in reports["3"].metadata["report"].value
    assert sorted(instance.get_dynamic_partitions(PARTITIONS)) == ["3", "4"]
    # Reported once: the next tick still says why in its message, but writes no new report.
    again = cron_tick(instance, [setup_row(3, cron="0 6 * *")], data.cursor)
    assert not again.asset_events and "skipped" in again.skip_message


def test_chap_cron_disabled_setups_are_never_launched(instance, clock):
    data = cron_tick(instance, [setup_row(3, enabled=False)], LAST_WEEK)
    assert not data.run_requests
    assert "scheduleEnabled false or no cron (not launched): 3" in data.skip_message
    assert json.loads(data.cursor)["setups"] == {}


@pytest.fixture
def sandbox():
    """The DHIS2 sandbox with chap behind its route; its setup 7 is a copy of its monthly setup 1."""
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1, password=PASSWORD)) as sb:
        sb.chap.add_setup(sb.chap.setups[1] | {"id": 7, "name": "Test district model"})
        yield sb


def test_explicit_launch_runs_a_disabled_setup(instance, sandbox):
    sandbox.chap.setups[7]["scheduleEnabled"] = False
    instance.add_dynamic_partitions(PARTITIONS, ["7"])
    result = dhis2_chap_prediction.execute_in_process(
        partition_key="7",
        instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=sandbox.base_url, username="admin", password=PASSWORD)},
    )
    assert result.success


def test_chap_cron_unreachable_skips_and_keeps_the_cursor(instance, clock):
    with chap_answers(httpx.ConnectError("refused")):
        data = chap_schedule_sensor.evaluate_tick(context(instance, LAST_WEEK))
    assert not data.run_requests and data.skip_message.startswith("DHIS2 or chap unavailable, nothing launched")
    assert data.cursor in (None, LAST_WEEK)


# ---- operator schedule ---------------------------------------------------------------------


def schedule_context(instance, when: datetime, *schedules) -> dg.ScheduleEvaluationContext:
    defs = dg.Definitions(
        jobs=[dhis2_chap_prediction],
        schedules=list(schedules) or [dhis2_chap_prediction_schedule],
        resources={"dhis2": TEST_DHIS2},
    )
    return dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def(),
        resources={"dhis2": TEST_DHIS2},
    )


def test_operator_schedule_defaults_from_settings():
    settings = get_settings()
    assert dhis2_chap_prediction_schedule.cron_schedule == settings.operator_schedule_cron
    assert dhis2_chap_prediction_schedule.execution_timezone == settings.schedule_timezone
    assert dhis2_chap_prediction_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert dhis2_chap_prediction_schedule.job_name == "dhis2_chap_prediction"


def test_operator_schedule_launches_one_run_per_model_idempotently(instance):
    instance.add_dynamic_partitions(PARTITIONS, ["10", "3"])
    when = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    ctx = schedule_context(instance, when)
    with chap_answers(httpx.Response(200, json=[]), httpx.Response(200, json=[])):  # chap schedules nothing
        runs = dhis2_chap_prediction_schedule.evaluate_tick(ctx).run_requests
        again = dhis2_chap_prediction_schedule.evaluate_tick(schedule_context(instance, when)).run_requests
    assert [(r.partition_key, r.run_key) for r in runs] == [
        ("3", "operator:3:2026-11-23T06:00:00+00:00"),
        ("10", "operator:10:2026-11-23T06:00:00+00:00"),
    ]
    assert runs[0].run_config == {"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}}
    assert runs[0].tags["chap_scheduler/trigger"] == "schedule:dhis2_chap_prediction_schedule"
    assert [r.run_key for r in again] == [r.run_key for r in runs]
    assert SECRET not in json.dumps(runs[0].run_config)


def test_operator_schedule_without_models_skips(instance):
    ctx = schedule_context(instance, datetime(2026, 11, 23, 6, tzinfo=UTC))
    data = dhis2_chap_prediction_schedule.evaluate_tick(ctx)
    assert not data.run_requests and "no configured models known yet" in data.skip_message


def test_further_schedule_with_its_own_window(instance):
    monthly = build_prediction_schedule(
        "monthly_offset", "0 7 5 * *", {"end_mode": "offset", "end_period_offset": 1}, execution_timezone="Africa/Kampala"
    )
    assert monthly.execution_timezone == "Africa/Kampala"
    instance.add_dynamic_partitions(PARTITIONS, ["3"])
    ctx = schedule_context(instance, datetime(2026, 12, 5, 4, tzinfo=UTC), monthly)
    with chap_answers(httpx.Response(200, json=[])):
        [run] = monthly.evaluate_tick(ctx).run_requests
    assert run.run_config["ops"]["probe_covariates"]["config"] == {"end_mode": "offset", "end_period_offset": 1}
    with pytest.raises(ValueError, match="end_mode"):
        build_prediction_schedule("typo", "0 7 * * *", {"end_mode": "fixd"})
    with pytest.raises(ValueError, match="end_date"):  # the cross-field rule, at load time too
        build_prediction_schedule("no_date", "0 7 * * *", {"end_mode": "fixed"})
    defs = dg.Definitions(jobs=[dhis2_chap_prediction], schedules=[monthly], resources={"dhis2": TEST_DHIS2})
    # Loading reads the current instance's definitions state; test contexts built from an instance_ref
    # are never exited and can leave a dead one behind, so give the check a live instance.
    with dg.instance_for_test():
        dg.Definitions.validate_loadable(defs)


# ---- overview and the report backstop ------------------------------------------------------


class BrokenDhis2(Dhis2Resource):
    """Fails while the run starts, before any op can write a report (like a missing env var)."""

    def setup_for_execution(self, context) -> None:
        raise RuntimeError("You have attempted to fetch the environment variable 'DHIS2_PASSWORD' which is not set.")


def execute(instance, key: str, base_url: str = BASE, dhis2: Dhis2Resource | None = None):
    return dhis2_chap_prediction.execute_in_process(
        partition_key=key,
        instance=instance,
        resources={"dhis2": dhis2 or Dhis2Resource(base_url=base_url, username="admin", password=PASSWORD)},
        raise_on_error=False,
    )


def run_status_tick(instance, sensor_def, result, event_type: dg.DagsterEventType):
    [entry] = instance.all_logs(result.run_id, of_type=event_type)
    ctx = dg.build_run_status_sensor_context(
        sensor_name=sensor_def.name,
        dagster_event=entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"dhis2": Dhis2Resource(base_url=BASE, username="admin", password=PASSWORD)},
    )
    return sensor_def(ctx)


def overview_text(instance) -> str:
    event = instance.get_latest_materialization_event(overview_asset_key)
    assert event is not None
    return event.asset_materialization.metadata["overview"].value


def test_overview_after_success_and_failure(instance, sandbox):
    instance.add_dynamic_partitions(PARTITIONS, ["7", "8", "9"])
    ok = execute(instance, "7", sandbox.base_url)
    assert ok.success
    [prediction_id] = sandbox.chap.predictions
    run_status_tick(instance, overview_on_success, ok, dg.DagsterEventType.RUN_SUCCESS)
    text = overview_text(instance)
    assert text.startswith(f"# chap predictions overview (`{BASE}`)")  # the sensor's dhis2 resource
    # The sandbox forecasts months already over (its data lags): the overview says so, and why.
    assert "| 7 — Test district model | succeeded with warnings |" in text
    assert "## Warnings (latest run)" in text and "2 predicted periods already over" in text
    assert f"| {prediction_id} | [{ok.run_id[:8]}](/runs/{ok.run_id}) |" in text
    assert "| 8 | never run |" in text

    sandbox.stop()  # DHIS2 goes down: nothing listens on its port any more
    down = execute(instance, "8", sandbox.base_url)
    assert not down.success
    skip = run_status_tick(instance, overview_on_failure, down, dg.DagsterEventType.RUN_FAILURE)
    assert "wrote the missing report" not in skip.skip_message  # the ops wrote their own report
    text = overview_text(instance)
    assert "| 8 | **FAILED** |" in text and f"| probe_covariates |  | [{down.run_id[:8]}](/runs/{down.run_id}) |" in text
    assert "could not reach DHIS2" in text
    assert PASSWORD not in text


def test_backstop_writes_the_report_of_a_run_that_could_not(instance):
    instance.add_dynamic_partitions(PARTITIONS, ["9"])
    broken = execute(instance, "9", dhis2=BrokenDhis2(base_url=BASE))
    assert not broken.success
    assert not instance.fetch_materializations(report_asset_key, limit=1).records, "no op wrote a report"
    skip = run_status_tick(instance, overview_on_failure, broken, dg.DagsterEventType.RUN_FAILURE)
    assert "wrote the missing report for configured model 9 (failed at resource initialization)" in skip.skip_message
    [record] = instance.fetch_materializations(report_asset_key, limit=5).records
    meta = record.asset_materialization.metadata
    assert record.asset_materialization.partition == "9"
    assert meta["status"].value == "failed" and meta["failed_step"].value == "resource initialization"
    assert "DHIS2_PASSWORD" in meta["error"].value and meta["run_id"].value == broken.run_id
    assert "FAILED at `resource initialization`" in meta["report"].value
    assert f"- **Instance:** `{BASE}`" in meta["report"].value  # the sensor's dhis2 resource
    text = overview_text(instance)
    assert "| 9 | **FAILED** |" in text and f"[{broken.run_id[:8]}](/runs/{broken.run_id})" in text
    # A second look at the same run does not write a second report.
    run_status_tick(instance, overview_on_failure, broken, dg.DagsterEventType.RUN_FAILURE)
    assert len(instance.fetch_materializations(report_asset_key, limit=5).records) == 1


def test_overview_lists_deleted_models_with_their_last_report(instance, sandbox):
    sandbox.chap.remove_setup(5)
    sandbox.chap.add_setup(sandbox.chap.setups[1] | {"id": 3})
    instance.add_dynamic_partitions(PARTITIONS, ["3"])
    report_for(instance, "5", run_id="run-of-5")
    ok = execute(instance, "3", sandbox.base_url)
    run_status_tick(instance, overview_on_success, ok, dg.DagsterEventType.RUN_SUCCESS)
    text = overview_text(instance)
    assert "| 5 — setup 5 (deleted in chap) | succeeded |" in text and "[run-of-5](/runs/run-of-5)" in text


def test_sensors_watch_only_the_prediction_job():
    for sensor_def in (overview_on_success, overview_on_failure, overview_on_canceled):
        assert sensor_def.default_status == dg.DefaultSensorStatus.RUNNING
    assert configured_models_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert configured_models_sensor.minimum_interval_seconds == get_settings().discovery_interval_seconds
    assert chap_schedule_sensor.job_name == "dhis2_chap_prediction"


# ---- namespacing per DHIS2 ------------------------------------------------------------------


@pytest.mark.e2e  # imports the code location in a fresh Python process
def test_location_name_prefixes_overview_report_and_partitions(tmp_path):
    code = (
        "import json\n"
        "from chap_scheduler_dagster.definitions import defs\n"
        "from chap_scheduler_dagster.defs.overview import overview_asset_key\n"
        "from chap_scheduler_dagster.defs.assets import report_asset_key\n"
        "from chap_scheduler_dagster.defs.partitions import configured_models_partitions as p\n"
        "print(json.dumps([overview_asset_key.path, report_asset_key.path, p.name,"
        " sorted(s.name for s in defs.sensors), [s.name for s in defs.schedules]]))\n"
    )
    env = {"CHAP_SCHEDULER_LOCATION_NAME": "sierra_leone", "PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    overview, report, partitions, sensor_names, schedule_names = json.loads(out.stdout.strip().splitlines()[-1])
    assert overview == ["sierra_leone", "chap_predictions_overview"]
    assert report == ["sierra_leone", "dhis2_chap_prediction_report"]
    assert partitions == "sierra_leone__chap_configured_models"
    assert sensor_names == sorted(
        [
            "chap_notifications_sensor",
            "chap_predictions_overview_on_canceled",
            "chap_predictions_overview_on_failure",
            "chap_predictions_overview_on_success",
            "chap_schedule_sensor",
            "configured_models_sensor",
        ]
    )
    assert schedule_names == ["dhis2_chap_prediction_schedule"]
