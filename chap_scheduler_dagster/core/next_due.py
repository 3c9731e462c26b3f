"""What is due next: each model's next scheduled run, from chap's cron or an operator schedule.

Pure: the caller passes each model's usable chap cron (what ``chap_schedule_sensor`` will
fire: its cursor), the operator schedule (cron, time zone, whether it is on, which models
it covers) and the time. The rule for who runs a model at a minute is ``core.double_runs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter

from .chap_schedules import InvalidCron, timezone, validate_cron
from .double_runs import OperatorScope
from .partition_keys import key_order

_MAX_YEARS = 9


@dataclass(frozen=True)
class OperatorSchedule:
    name: str
    cron: str
    tz: str
    running: bool
    scope: OperatorScope


@dataclass(frozen=True)
class NextRun:
    setup_id: str
    at: datetime  # UTC
    by: str  # "chap cron '0 6 * * 1'" or "schedule dhis2_chap_prediction_schedule '0 6 * * 1'"
    name: str = ""

    def describe(self) -> str:
        name = f" ({self.name})" if self.name else ""
        return f"configured model {self.setup_id}{name} at {self.at.strftime('%Y-%m-%d %H:%M')} UTC by {self.by}"


def next_tick(expression: str, now: datetime, tz: str) -> datetime | None:
    """The first tick of ``expression`` strictly after ``now``, in UTC; None if it cannot be computed."""
    try:
        text = validate_cron(expression)
        itr = croniter(text, now.astimezone(timezone(tz)), max_years_between_matches=_MAX_YEARS)
        return itr.get_next(datetime).astimezone(UTC)
    except (InvalidCron, ValueError, KeyError, Exception):  # noqa: BLE001 - a bad cron just has no next run
        return None


def next_runs(
    keys: Iterable[str],
    chap_crons: Mapping[str, str],
    *,
    now: datetime,
    tz: str,
    operator: OperatorSchedule | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, NextRun]:
    """Each model's next run (models nothing schedules are left out)."""
    names = names or {}
    operator_next = None
    if operator is not None and operator.running:
        operator_next = next_tick(operator.cron, now, operator.tz)
    out: dict[str, NextRun] = {}
    for key in keys:
        candidates: list[NextRun] = []
        cron = chap_crons.get(key)
        chap_at = next_tick(cron, now, tz) if cron else None
        if chap_at is not None:
            candidates.append(NextRun(key, chap_at, f"chap cron '{cron}'", names.get(key, "")))
        if operator_next is not None and operator is not None and (operator.scope == "all" or chap_at is None):
            # At a minute chap's cron also fires, the run is chap's (core.double_runs).
            if chap_at is None or operator_next != chap_at:
                candidates.append(
                    NextRun(key, operator_next, f"schedule {operator.name} '{operator.cron}'", names.get(key, ""))
                )
        if candidates:
            out[key] = min(candidates, key=lambda c: c.at)
    return out


def soonest(runs: Mapping[str, NextRun]) -> NextRun | None:
    if not runs:
        return None
    return min(runs.values(), key=lambda r: (r.at, key_order(r.setup_id)))
