"""The notifications sensor: tells operators, once, when a model fails, recovers, goes stale, gets
chap outbreak alerts, or when the discovery sensors cannot reach DHIS2/chap.

It reads the instance (finished runs of ``dhis2_chap_prediction`` and their reports, the
discovery sensors' latest ticks), applies the rules of ``core.notifications`` and sends through
the configured channels. Its state is the sensor cursor (``NotifyState`` as JSON). It only
reads what runs left behind, so a slow or broken channel can never fail or block a prediction:
a failed delivery is retried a few times, then logged in this sensor's tick.

With no channel configured it does nothing (and keeps no state).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
from pydantic import SecretStr
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from ..core.errors import redact_url
from ..core.report_metadata import Key, text
from ..core.notifications import (
    UNREACHABLE_MARK,
    Notification,
    NotifySettings,
    NotifyState,
    RunOutcome,
    SensorTick,
    Where,
    check_stale,
    forget_models,
    observe_run,
    observe_sensor,
)
from ..core.notify_channels import all_secrets, configured_channels, deliver
from ..settings import get_settings
from .assets import report_asset_key
from .jobs import dhis2_chap_prediction
from .tags import DHIS2_TAG, PARTITION_TAG
from .partitions import configured_models_partitions
from .resources import Dhis2Resource

SENSOR_NAME = "chap_notifications_sensor"
WATCHED_SENSORS = ("configured_models_sensor", "chap_schedule_sensor")
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
MAX_RUNS_PER_TICK = 100
LOOK_BACK_SECONDS = 5.0  # run storage keeps update times in whole seconds
MAX_HANDLED_RUNS = 300
# A tick must end well inside Dagster's sensor timeout: past this, further messages are summarized.
MAX_MESSAGES_PER_TICK = 10
INTERVAL_SECONDS = NotifySettings().notify_interval_seconds

# The clock, replaceable in tests.
now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


# Channel secrets, each bound to its environment variable by name (the UI shows names, never values).
SECRET_ENV = {
    "notify_webhook_url": "CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL",
    "slack_token": "CHAP_SCHEDULER_SLACK_TOKEN",
    "teams_webhook_url": "CHAP_SCHEDULER_TEAMS_WEBHOOK_URL",
    "smtp_password": "CHAP_SCHEDULER_SMTP_PASSWORD",
}


class NotifyChannelsResource(dg.ConfigurableResource):
    """The notification channels' secrets. Non-secret channel settings come from CHAP_SCHEDULER_* settings."""

    notify_webhook_url: str = ""
    slack_token: str = ""
    teams_webhook_url: str = ""
    smtp_password: str = ""

    def settings(self) -> NotifySettings:
        """The notification settings with the secrets Dagster resolved from the EnvVars."""
        base = NotifySettings()
        update = {name: SecretStr(getattr(self, name)) for name in SECRET_ENV if getattr(self, name)}
        return base.model_copy(update=update)


def notify_channels_from_env() -> NotifyChannelsResource:
    """Bind each set secret to its EnvVar (an unset one stays empty: that channel is off)."""
    return NotifyChannelsResource(**{name: dg.EnvVar(env) for name, env in SECRET_ENV.items() if os.environ.get(env)})


def where_of(settings: NotifySettings, dhis2: Dhis2Resource) -> Where:
    """Where messages come from: the ``dhis2`` resource's address (redacted), the location, the links."""
    return Where(
        dhis2_url=redact_url(dhis2.base_url),
        location_name=get_settings().location_name,
        dagster_url=settings.dagster_url,
        report_asset_path=tuple(report_asset_key.path),
    )


def _failure_facts(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, str]:
    """(failed step, error) from the run's own events, for a failed run whose report is not written yet."""
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        if event is not None:
            data = event.step_failure_data
            message = data.error.message.strip() if data and data.error else (event.message or "")
            return event.step_key or "unknown step", message
    return "run", f"the run ended {run.status.value} before its steps wrote a report"


def _report_of(instance: dg.DagsterInstance, key: str, run_id: str) -> dict:
    """The run report's metadata written by this run (by its ops, or by the backstop), or {}."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=report_asset_key, asset_partitions=[key]), limit=20
    ).records
    for record in records:
        meta = dict(record.asset_materialization.metadata) if record.asset_materialization else {}
        if record.run_id == run_id or text(meta, Key.RUN_ID) == run_id:
            return meta
    return {}


def run_outcome(instance: dg.DagsterInstance, record) -> RunOutcome | None:
    run = record.dagster_run
    key = run.tags.get(PARTITION_TAG)
    if not key:
        return None
    meta = _report_of(instance, key, run.run_id)
    succeeded = run.status == dg.DagsterRunStatus.SUCCESS
    failed_step, error = text(meta, Key.FAILED_STEP), text(meta, Key.ERROR)
    if not succeeded and not error:
        # The backstop may not have written the report yet: take the facts from the run's events.
        failed_step, error = _failure_facts(instance, run)
    prediction = text(meta, Key.PREDICTION_ID)
    pending = text(meta, Key.CHAP_ALERTS_PENDING)
    finished = record.update_timestamp
    return RunOutcome(
        model_id=key, run_id=run.run_id, succeeded=succeeded,
        finished_at=finished if finished.tzinfo else finished.replace(tzinfo=UTC),
        model_name=text(meta, Key.CONFIGURED_MODEL), period_type=text(meta, Key.PERIOD_TYPE),
        failed_step=failed_step, error=error, hint=text(meta, Key.HINT),
        prediction_id=int(prediction) if prediction.isdigit() else None,
        alerts_pending=int(pending) if pending.isdigit() else 0,
        alerts_summary=text(meta, Key.CHAP_ALERTS_SUMMARY),
    )


def _new_runs(instance: dg.DagsterInstance, state: NotifyState) -> list:
    """Finished runs not handled yet, oldest first. The first tick takes each model's latest runs only."""
    job = dhis2_chap_prediction.name
    # Several DHIS2s may share one instance (one code location each): only this location's runs.
    tags = {DHIS2_TAG: get_settings().location_name or "default"}
    if state.watermark is None:
        records = instance.get_run_records(dg.RunsFilter(job_name=job, statuses=FINISHED, tags=tags), limit=500)
        latest: dict[str, list] = {}
        for record in records:  # newest first: keep the latest run, and the latest success before it
            key = record.dagster_run.tags.get(PARTITION_TAG)
            if not key:
                continue
            kept = latest.setdefault(key, [])
            if not kept or (len(kept) == 1 and kept[0].dagster_run.status != dg.DagsterRunStatus.SUCCESS
                            and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS):
                kept.append(record)
        chosen = {id(r) for kept in latest.values() for r in kept}
        # Oldest first, in storage order (update times tie within a second).
        return [r for r in reversed(records) if id(r) in chosen]
    after = datetime.fromtimestamp(state.watermark - LOOK_BACK_SECONDS, UTC)
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job, statuses=FINISHED, updated_after=after, tags=tags),
        limit=MAX_RUNS_PER_TICK, order_by="update_timestamp", ascending=True,
    )
    fresh = [r for r in records if r.dagster_run.run_id not in state.handled_runs]
    return sorted(fresh, key=lambda r: (r.update_timestamp, r.storage_id))


def _advance(state: NotifyState, records: list, at: datetime) -> None:
    if not records:
        if state.watermark is None:
            state.watermark = at.timestamp()
        return
    newest = max(r.update_timestamp.timestamp() for r in records)
    state.watermark = max(newest, state.watermark or 0.0)
    state.handled_runs = [*state.handled_runs, *(r.dagster_run.run_id for r in records)][-MAX_HANDLED_RUNS:]


def sensor_ticks(instance: dg.DagsterInstance, limit: int, location: str | None = None) -> dict[str, list[SensorTick]]:
    """The latest ticks (newest first) of the discovery sensors of this code location."""
    out: dict[str, list[SensorTick]] = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name not in WATCHED_SENSORS:
            continue
        if location and state.repository_selector.location_name != location:
            continue  # the same sensor of another DHIS2's code location
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=limit)
        out[state.instigator_name] = [
            SensorTick(
                timestamp=t.timestamp,
                unreachable=t.status == TickStatus.SKIPPED and UNREACHABLE_MARK in (t.skip_reason or ""),
                reason=(t.skip_reason or "").partition(": ")[2] or (t.skip_reason or ""),
            )
            for t in ticks
            if t.status in (TickStatus.SKIPPED, TickStatus.SUCCESS)
        ]
    return out


def evaluate(
    instance: dg.DagsterInstance,
    state: NotifyState,
    settings: NotifySettings,
    where: Where,
    at: datetime,
    location: str | None = None,
) -> list[Notification]:
    """Every message this tick calls for (state is updated in place)."""
    messages: list[Notification] = []
    records = _new_runs(instance, state)
    for record in records:
        outcome = run_outcome(instance, record)
        if outcome is not None:
            messages += observe_run(state, outcome, where)
    _advance(state, records, at)
    known = list(instance.get_dynamic_partitions(configured_models_partitions.name))
    forget_models(state, known)
    messages += check_stale(state, known, at, where, settings.stale_after)
    for sensor, ticks in sensor_ticks(instance, settings.notify_unreachable_ticks, location).items():
        messages += observe_sensor(state, sensor, ticks, settings.notify_unreachable_ticks, where, at)
    return [m for m in messages if not settings.muted(m)]


def _bounded(messages: list[Notification], where: Where) -> list[Notification]:
    if len(messages) <= MAX_MESSAGES_PER_TICK:
        return messages
    kept, rest = messages[: MAX_MESSAGES_PER_TICK - 1], messages[MAX_MESSAGES_PER_TICK - 1 :]
    kinds = ", ".join(sorted({m.kind for m in rest}))
    return [*kept, Notification(
        kind=rest[0].kind, severity="warning", location=where.label,
        what=f"{len(rest)} more notifications this round ({kinds}) were not sent one by one",
        fix="Open the chap_predictions_overview asset in Dagster for every model's latest status.",
    )]


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Tells operators once: a model's prediction failed / recovered, a model is stale, chap raised "
    "pending outbreak alerts, or the discovery sensors cannot reach DHIS2/chap. Channels (webhook, Slack, Teams, "
    "email) come from CHAP_SCHEDULER_* settings; with none configured it does nothing.",
)
def chap_notifications_sensor(
    context: dg.SensorEvaluationContext, notify_channels: NotifyChannelsResource, dhis2: Dhis2Resource
):
    settings = notify_channels.settings()
    channels = configured_channels(settings)
    if not channels:
        return dg.SkipReason(
            "no notification channel configured (CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL, CHAP_SCHEDULER_SLACK_TOKEN, "
            "CHAP_SCHEDULER_TEAMS_WEBHOOK_URL or CHAP_SCHEDULER_SMTP_HOST)"
        )
    state = NotifyState.load(context.cursor)
    at = now()
    origin = getattr(context, "code_location_origin", None)
    location = getattr(origin, "location_name", None)
    here = where_of(settings, dhis2)
    messages = _bounded(evaluate(context.instance, state, settings, here, at, location), here)
    deliveries = deliver(channels, messages, secrets=all_secrets(settings), attempts=settings.notify_attempts)
    for d in deliveries:
        (context.log.info if d.ok else context.log.warning)(d.describe())
    failed = sum(1 for d in deliveries if not d.ok)
    summary = (
        f"{len(messages)} notifications to {len(channels)} channels"
        + (f"; {failed} deliveries failed (see the tick's log)" if failed else "")
        if messages else "nothing to tell"
    )
    return dg.SensorResult(cursor=state.dump(), skip_reason=summary)


notification_sensors = [chap_notifications_sensor]
