"""Sensors that follow chap: its configured models (partitions) and its own cron schedules.

Both list chap's prediction setups through the DHIS2 route with a fresh client that is
closed at the end of the tick. When DHIS2 or chap cannot be used, the tick is skipped with
the reason and the fix, and nothing changes (partitions and cursor stay as they were).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import ValidationError

from ..core.chap_models import PredictionSetup
from ..core.chap_schedules import dump_cursor, parse_cursor, plan_chap_cron
from ..core.errors import SchedulerError, redact_url
from ..core.partition_keys import diff_partitions, key_order
from ..core.double_runs import model_tick
from ..core.next_due import soonest
from ..core.report import RunReport
from ..settings import get_settings
from .jobs import dhis2_chap_prediction
from .next_due import chap_crons, scheduled_next_runs
from .one_run_per_tick import runs_at_tick
from .overview import overview_materialization
from .partitions import configured_models_partitions
from .reporting import report_materialization
from .resources import Dhis2Resource
from .tags import CATCH_UP_TAG, CRON_TAG, CRON_TICK_TAG, MODEL_TICK_TAG, launch_tags

CHAP_CRON_INTERVAL_SECONDS = 60
# A setup the sensor sees for the first time fires only for a tick at most this old.
CHAP_CRON_GRACE = timedelta(seconds=2 * CHAP_CRON_INTERVAL_SECONDS)

# A sensor evaluation must finish well inside Dagster's sensor timeout (60 s by default), so a
# DHIS2 that hangs costs at most 2 attempts of 10 s here, whatever the run settings say.
SENSOR_HTTP_TIMEOUT_SECONDS = 10.0
SENSOR_HTTP_GET_ATTEMPTS = 2

# The clock, replaceable in tests.
now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def _list_setups(dhis2: Dhis2Resource) -> list[PredictionSetup] | str:
    """chap's prediction setups, or the reason they could not be listed (no secrets in it)."""
    settings = get_settings()
    settings = settings.model_copy(
        update={
            "http_timeout_seconds": min(settings.http_timeout_seconds, SENSOR_HTTP_TIMEOUT_SECONDS),
            "http_get_attempts": min(settings.http_get_attempts, SENSOR_HTTP_GET_ATTEMPTS),
        }
    )
    try:
        with dhis2.chap(settings) as chap:
            return chap.list_prediction_setups()
    except SchedulerError as err:
        hint = f" — {err.hint}" if err.hint else ""
        return f"{err}{hint}"
    except ValidationError as err:
        return (
            f"chap at {redact_url(dhis2.base_url)} answered with prediction setups this scheduler cannot read: "
            f"{err.error_count()} problems, first: {err.errors()[0].get('msg', '')} — check the chap-core version"
        )


@dg.sensor(
    name="configured_models_sensor",
    minimum_interval_seconds=get_settings().discovery_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the partitions of dhis2_chap_prediction equal to chap's configured models (prediction "
    "setups): adds new ids, removes deleted ones (their report history stays). Skips, changing nothing, "
    "when DHIS2 or chap is unreachable.",
)
def configured_models_sensor(context: dg.SensorEvaluationContext, dhis2: Dhis2Resource):
    setups = _list_setups(dhis2)
    if isinstance(setups, str):
        context.log.warning(f"discovery skipped: {setups}")
        return dg.SkipReason(f"DHIS2 or chap unavailable, partitions unchanged: {setups}")
    partitions = configured_models_partitions
    diff = diff_partitions(context.instance.get_dynamic_partitions(partitions.name), (str(s.id) for s in setups))
    if not diff.changed:
        return dg.SkipReason(f"no change: {len(diff.keep)} configured models ({', '.join(diff.keep) or 'none'})")
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if diff.add:
        requests.append(partitions.build_add_request(diff.add))
        context.log.info(f"configured models added: {diff.add}")
    if diff.remove:
        requests.append(partitions.build_delete_request(diff.remove))
        context.log.info(f"configured models deleted in chap, partitions removed (report history kept): {diff.remove}")
    # The overview lists new models as "never run" and deleted ones as "deleted in chap" right away.
    overview = overview_materialization(
        context.instance, known=[*diff.keep, *diff.add], names={str(s.id): s.name for s in setups},
        code_location=_code_location(context), dhis2_url=redact_url(dhis2.base_url),
    )
    return dg.SensorResult(dynamic_partitions_requests=requests, asset_events=[overview])


@dg.sensor(
    name="chap_schedule_sensor",
    job=dhis2_chap_prediction,
    minimum_interval_seconds=CHAP_CRON_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Honours chap's own schedules: one run per due scheduleCronExpression tick of every setup with "
    "scheduleEnabled true (time zone CHAP_SCHEDULER_SCHEDULE_TIMEZONE). Missed ticks collapse into one catch-up "
    "run; bad expressions are skipped with a message.",
)
def chap_schedule_sensor(context: dg.SensorEvaluationContext, dhis2: Dhis2Resource):
    settings = get_settings()
    setups = _list_setups(dhis2)
    if isinstance(setups, str):
        context.log.warning(f"chap schedules not checked: {setups}")
        return dg.SkipReason(f"DHIS2 or chap unavailable, nothing launched: {setups}")
    plan = plan_chap_cron(
        setups, parse_cursor(context.cursor), now=now(), tz=settings.schedule_timezone, grace=CHAP_CRON_GRACE
    )
    for bad in plan.bad:
        context.log.warning(bad.message)

    known = set(context.instance.get_dynamic_partitions(configured_models_partitions.name))
    needed = [d.partition_key for d in plan.due] + [str(b.setup_id) for b in plan.newly_bad]
    missing = sorted({k for k in needed if k not in known}, key=key_order)

    # One run per model per minute: an operator schedule may already have run it at this minute.
    ticks = {d.partition_key: model_tick(d.partition_key, d.tick, settings.location_name) for d in plan.due}
    already = runs_at_tick(context.instance, ticks)
    for key, run_id in already.items():
        context.log.info(f"configured model {key}: already run at this minute by run {run_id}; not launched again")
    plan.due = [d for d in plan.due if d.partition_key not in already]

    run_requests = []
    for due in plan.due:
        tags = {
            **launch_tags("chap-cron", due.name),
            CRON_TAG: due.cron,
            CRON_TICK_TAG: due.tick_iso,
            MODEL_TICK_TAG: model_tick(due.partition_key, due.tick, settings.location_name),
        }
        if due.catch_up:
            tags[CATCH_UP_TAG] = "true"
        run_requests.append(dg.RunRequest(partition_key=due.partition_key, run_key=due.run_key, tags=tags))
        context.log.info(
            f"configured model {due.setup_id} ({due.name}) due at {due.tick.isoformat()} ({due.cron})"
            + (" — catch-up for missed ticks" if due.catch_up else "")
        )

    asset_events = []
    for bad in plan.newly_bad:
        report = RunReport.skipped(
            str(bad.setup_id), redact_url(dhis2.base_url), location=settings.location_name, setup_name=bad.name,
            reason=f"chap's schedule {bad.cron!r} is not a valid cron expression: {bad.error}",
            hint="Fix scheduleCronExpression of this configured model in chap (five fields: minute hour "
            "day-of-month month day-of-week). Manual launches still work.",
        )
        asset_events.append(report_materialization(report))

    # What is due next, from chap's crons (this tick's cursor) and the operator schedule if it is on.
    upcoming = soonest(scheduled_next_runs(
        context.instance, [str(s.id) for s in setups], crons=chap_crons(plan.cursor),
        names={str(s.id): s.name for s in setups}, now=now(), location=_code_location(context),
    ))
    next_text = f"next due: {upcoming.describe()}" if upcoming else "next due: nothing is scheduled"
    if already:
        next_text = f"already run at this minute: {', '.join(sorted(already, key=key_order))}; {next_text}"
    context.log.info(next_text)
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=dump_cursor(plan.cursor),
        dynamic_partitions_requests=[configured_models_partitions.build_add_request(missing)] if missing else [],
        asset_events=asset_events,
        skip_reason=None if run_requests else f"{plan.summary()}; {next_text}",
    )


def _code_location(context: dg.SensorEvaluationContext) -> str | None:
    """Dagster's name of this code location (None in tests built without one)."""
    try:
        origin = context.code_location_origin
    except Exception:  # noqa: BLE001 - not every context knows it
        return None
    return getattr(origin, "location_name", None)


chap_sensors = [configured_models_sensor, chap_schedule_sensor]
