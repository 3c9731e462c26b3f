"""The instance side of "what is due next" (rule: ``core.next_due``).

chap's crons are read from ``chap_schedule_sensor``'s cursor (exactly what it will fire:
enabled setups with a usable expression); whether the operator schedule is on, from its
stored state. Both are cheap reads of the instance, no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import dagster as dg

from ..core.chap_schedules import CursorEntry, parse_cursor
from ..core.next_due import NextRun, OperatorSchedule, next_runs
from ..settings import get_settings

CHAP_SCHEDULE_SENSOR = "chap_schedule_sensor"
OPERATOR_SCHEDULE = "dhis2_chap_prediction_schedule"


def _location(state) -> str | None:  # noqa: ANN001
    origin = getattr(getattr(state, "origin", None), "repository_origin", None)
    return getattr(getattr(origin, "code_location_origin", None), "location_name", None)


def _states(instance: dg.DagsterInstance, kind: str, name: str, location: str | None) -> list:
    """Stored states of this code location's sensor or schedule ``name``.

    Every DHIS2's code location has a sensor of the same name: with ``location`` unknown and
    more than one candidate, none is used rather than another DHIS2's.
    """
    try:
        from dagster._core.scheduler.instigation import InstigatorType

        wanted = InstigatorType.SENSOR if kind == "sensor" else InstigatorType.SCHEDULE
        states = [s for s in instance.all_instigator_state(instigator_type=wanted) if s.instigator_name == name]
    except Exception:  # noqa: BLE001 - an overview without next runs beats no overview
        return []
    if location is not None:
        return [s for s in states if _location(s) == location]
    return states if len({_location(s) for s in states}) <= 1 else []


def operator_schedule(instance: dg.DagsterInstance, location: str | None = None) -> OperatorSchedule:
    settings = get_settings()
    states = _states(instance, "schedule", OPERATOR_SCHEDULE, location)
    running = any(s.status.value in ("RUNNING", "AUTOMATICALLY_RUNNING") for s in states)
    return OperatorSchedule(
        OPERATOR_SCHEDULE, settings.operator_schedule_cron, settings.schedule_timezone, running,
        settings.operator_schedule_covers,
    )


def chap_crons(cursor: Mapping[str, CursorEntry]) -> dict[str, str]:
    return {key: entry.cron for key, entry in cursor.items() if entry.error is None and entry.cron}


def chap_crons_from_sensor(instance: dg.DagsterInstance, location: str | None = None) -> dict[str, str]:
    for state in _states(instance, "sensor", CHAP_SCHEDULE_SENSOR, location):
        data = state.instigator_data
        cursor = getattr(data, "cursor", None)
        if cursor:
            return chap_crons(parse_cursor(cursor))
    return {}


def scheduled_next_runs(
    instance: dg.DagsterInstance,
    keys: Iterable[str],
    *,
    crons: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
    now: datetime | None = None,
    location: str | None = None,
) -> dict[str, NextRun]:
    """``location``: the Dagster code location's name (None: unknown, see :func:`_states`)."""
    settings = get_settings()
    return next_runs(
        keys,
        chap_crons_from_sensor(instance, location) if crons is None else crons,
        now=now or datetime.now(UTC),
        tz=settings.schedule_timezone,
        operator=operator_schedule(instance, location),
        names=names,
    )
