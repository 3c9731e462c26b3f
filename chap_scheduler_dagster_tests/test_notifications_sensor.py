"""The notifications sensor over a real Dagster instance: runs and reports in the instance, the
cursor carried from tick to tick, messages to a real loopback webhook receiver."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from chap_scheduler_dagster.defs import notifications as notif
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import dhis2_resource_definition

from .notify_receivers import start_http_receiver

PASSWORD = "pw-district-xyz"


@pytest.fixture
def receiver():
    r = start_http_receiver()
    yield r
    r.close()


@pytest.fixture
def env(monkeypatch, receiver):
    monkeypatch.setenv("CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL", receiver.url + "/hook")
    monkeypatch.setenv("CHAP_SCHEDULER_DAGSTER_URL", "http://dagster.local:3000")
    monkeypatch.setenv("DHIS2_BASE_URL", "http://admin:" + PASSWORD + "@dhis2.local/dhis")
    monkeypatch.setenv("DHIS2_PASSWORD", PASSWORD)
    for name in ("SLACK_TOKEN", "TEAMS_WEBHOOK_URL", "SMTP_HOST", "STALE_AFTER_DAYS", "NOTIFY_MUTE"):
        monkeypatch.delenv(f"CHAP_SCHEDULER_{name}", raising=False)


def _finish(instance, key: str, ok: bool, **meta) -> str:
    """A finished run of the prediction job for partition ``key``, with the report its ops would write."""
    run_id = str(uuid.uuid4())
    status = dg.DagsterRunStatus.SUCCESS if ok else dg.DagsterRunStatus.FAILURE
    instance.add_run(DagsterRun(job_name="dhis2_chap_prediction", run_id=run_id, status=status,
                                tags={"dagster/partition": key, "chap_scheduler/dhis2": "default"}))
    metadata = {"status": "succeeded" if ok else "failed", "run_id": run_id, "configured_model": "ewars monthly",
                "period_type": "month", "failed_step": "" if ok else "probe_covariates",
                "error": "" if ok else f"DHIS2 said no (password {PASSWORD})",
                "hint": "" if ok else "Fix ops.probe_covariates.config", **meta}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=report_asset_key, partition=key, metadata=metadata))
    return run_id


@pytest.fixture
def instance(persistent_instance):
    """Sensor contexts need an instance on files (conftest: one per module, wiped per test)."""
    return persistent_instance


def _tick(instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"notify_channels": notif.notify_channels_from_env(),
                                                 "dhis2": dhis2_resource_definition()})
    result = notif.chap_notifications_sensor(context)
    return result.cursor, result


def test_nothing_configured_means_nothing_done(instance, monkeypatch):
    for name in ("NOTIFY_WEBHOOK_URL", "SLACK_TOKEN", "TEAMS_WEBHOOK_URL", "SMTP_HOST"):
        monkeypatch.delenv(f"CHAP_SCHEDULER_{name}", raising=False)
    context = dg.build_sensor_context(instance=instance,
                                      resources={"notify_channels": notif.notify_channels_from_env(),
                                                 "dhis2": dhis2_resource_definition()})
    result = notif.chap_notifications_sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert "no notification channel configured" in result.skip_message


def test_transitions_alerts_and_stale_through_the_sensor(instance, env, receiver, monkeypatch):
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(notif, "now", lambda: clock[0])
    instance.add_dynamic_partitions(configured_models_partitions.name, ["3"])
    cursor, _ = _tick(instance, None)  # first tick: nothing ran yet
    assert receiver.received == []
    for _ in range(3):
        _finish(instance, "3", ok=False)
        cursor, _ = _tick(instance, cursor)
    ok_run = _finish(instance, "3", ok=True, prediction_id=42, chap_alerts_pending=4,
                     chap_alerts_summary="4 alerts (4 action) in 2 org units")
    cursor, result = _tick(instance, cursor)
    cursor, _ = _tick(instance, cursor)  # nothing new: nothing sent
    bodies = [r.json() for r in receiver.received]
    assert [b["kind"] for b in bodies] == ["failed", "recovered", "alerts"]
    failed, recovered, alerts = bodies
    assert failed["model"] == {"id": "3", "name": "ewars monthly"}
    assert failed["location"] == "http://dhis2.local/dhis"
    assert failed["fix"] == "Fix ops.probe_covariates.config"
    assert recovered["links"]["run"] == f"http://dagster.local:3000/runs/{ok_run}"
    assert alerts["prediction_id"] == 42 and "4 pending outbreak alert(s)" in alerts["what"]
    assert result.skip_reason and "2 notifications to 1 channels" in result.skip_reason.skip_message
    for got in receiver.received:
        assert PASSWORD not in got.body.decode()
    # Stale, with the sensor's clock pinned 41 days ahead: one message, then silence.
    clock[0] = clock[0] + timedelta(days=41)
    cursor, _ = _tick(instance, cursor)
    cursor, _ = _tick(instance, cursor)
    assert [r.json()["kind"] for r in receiver.received[3:]] == ["stale"]
    state = json.loads(cursor)
    assert state["models"]["3"]["stale_said"] is True


def test_first_tick_with_history_reports_only_the_current_state(instance, env, receiver):
    instance.add_dynamic_partitions(configured_models_partitions.name, ["1", "2"])
    _finish(instance, "1", ok=False)
    _finish(instance, "1", ok=True)
    _finish(instance, "2", ok=True)
    _finish(instance, "2", ok=False)
    _finish(instance, "2", ok=False)
    _tick(instance, None)
    bodies = [r.json() for r in receiver.received]
    assert [(b["kind"], b["model"]["id"]) for b in bodies] == [("failed", "2")]


def _add_failed_run(instance, partition: str, *, dhis2: str) -> None:
    """A failed run without events: one that ended before its steps wrote a report."""
    instance.add_run(DagsterRun(job_name="dhis2_chap_prediction", run_id=str(uuid.uuid4()),
                                status=dg.DagsterRunStatus.FAILURE,
                                tags={"dagster/partition": partition, "chap_scheduler/dhis2": dhis2}))


def test_runs_of_another_dhis2_on_the_same_instance_are_not_ours(instance, env, receiver):
    instance.add_dynamic_partitions(configured_models_partitions.name, ["3"])
    cursor, _ = _tick(instance, None)
    _add_failed_run(instance, "3", dhis2="sierra_leone")
    _tick(instance, cursor)
    assert receiver.received == []


def test_muted_kind_is_not_sent(instance, env, receiver, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_NOTIFY_MUTE", "failed")
    instance.add_dynamic_partitions(configured_models_partitions.name, ["3"])
    cursor, _ = _tick(instance, None)
    _finish(instance, "3", ok=False)
    _tick(instance, cursor)
    assert receiver.received == []


def test_failed_run_without_a_report_is_still_told(instance, env, receiver):
    """The backstop may write the report after this sensor looked: the run's own facts are used."""
    instance.add_dynamic_partitions(configured_models_partitions.name, ["5"])
    cursor, _ = _tick(instance, None)
    _add_failed_run(instance, "5", dhis2="default")
    _tick(instance, cursor)
    [body] = [r.json() for r in receiver.received]
    assert body["kind"] == "failed" and body["model"] == {"id": "5", "name": None}
    assert body["what"] == "the prediction failed at run: the run ended FAILURE before its steps wrote a report"


def test_channel_secrets_are_bound_to_env_var_names_only(env):
    resource = notif.notify_channels_from_env()
    fields = resource._get_non_default_public_field_values()  # what the UI's resource page lists
    assert {k: v.env_var_name for k, v in fields.items()} == {"notify_webhook_url": "CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL"}
    assert all(isinstance(v, dg.EnvVar) for v in fields.values())
