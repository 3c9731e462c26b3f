"""No double runs: a configured model runs at most once per minute-tick, whatever fires it.

Two things can fire a model: chap's own cron (``chap_schedule_sensor``) and an operator
schedule. The rule (also in the README's Scale section):

- ``CHAP_SCHEDULER_OPERATOR_SCHEDULE_COVERS=unscheduled`` (default): an operator schedule
  runs only the models chap does not schedule (``scheduleEnabled`` false, no cron, or a
  cron that cannot be used). Models with a working chap schedule run on chap's cron only.
- ``=all``: an operator schedule runs every model, except one whose chap cron also falls
  on that very minute: that minute belongs to chap's cron (the sensor launches it).
- Whatever the setting, every scheduled run carries the tag ``chap_scheduler/model_tick``
  = ``[<location>/]<model>@<UTC minute>``; the sensor and the schedules launch nothing for a model and
  minute that already has a run with that tag (this also covers a schedule that could not
  read chap's schedules and so ran every model).

Pure: the callers pass chap's setups, the tick and what the instance already holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args

from croniter import croniter

from .chap_schedules import InvalidCron, ScheduledSetup, timezone, validate_cron
from .partition_keys import key_order

OperatorScope = Literal["unscheduled", "all"]
OPERATOR_SCOPES: tuple[str, ...] = get_args(OperatorScope)


def tick_minute(tick: datetime) -> str:
    """The tick's UTC minute, e.g. ``2026-11-23T06:00Z`` (seconds dropped: both instigators agree on it)."""
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def model_tick(partition_key: str, tick: datetime, location: str = "") -> str:
    """The value of the run tag ``chap_scheduler/model_tick`` (defs/tags.py): one model at one minute (of one DHIS2: ids repeat across them)."""
    return f"{location + '/' if location else ''}{partition_key}@{tick_minute(tick)}"


def chap_cron(setup: ScheduledSetup, tz: str) -> str | None:
    """The setup's usable chap cron expression, or None when chap's cron never fires it."""
    expression = (setup.schedule_cron_expression or "").strip()
    if not setup.schedule_enabled or not expression:
        return None
    try:
        timezone(tz)
        return validate_cron(expression)
    except InvalidCron:
        return None


def chap_fires_at(expression: str, tick: datetime, tz: str) -> bool:
    """Whether a (valid) cron expression has a tick in the same minute as ``tick`` (in ``tz``)."""
    local = tick.astimezone(timezone(tz)).replace(second=0, microsecond=0)
    return bool(croniter.match(expression, local))


@dataclass
class OperatorTickPlan:
    run: list[str] = field(default_factory=list)  # partition keys to launch
    left_to_chap: list[str] = field(default_factory=list)  # chap's cron runs them
    already_run: list[str] = field(default_factory=list)  # a run for this model and minute exists
    note: str = ""  # why the plan fell back (chap's schedules unreadable)

    def summary(self) -> str:
        parts = []
        if self.left_to_chap:
            parts.append(f"left to chap's own schedule: {', '.join(self.left_to_chap)}")
        if self.already_run:
            parts.append(f"already run at this minute: {', '.join(self.already_run)}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


def plan_operator_tick(
    known: Iterable[str],
    setups: Iterable[ScheduledSetup] | None,
    *,
    tick: datetime,
    tz: str,
    scope: OperatorScope,
    already_run: Iterable[str] = (),
    unreadable: str = "",
) -> OperatorTickPlan:
    """Which known models an operator schedule launches at ``tick``.

    ``setups`` None means chap's schedules could not be read (``unreadable`` says why): then
    every known model is launched (its run will report the problem), minus ``already_run``.
    """
    if scope not in OPERATOR_SCOPES:
        raise ValueError(f"operator schedule scope {scope!r} is not one of {', '.join(OPERATOR_SCOPES)}")
    plan = OperatorTickPlan()
    done = set(already_run)
    crons: dict[str, str] = {}
    if setups is None:
        plan.note = "chap's schedules could not be read, so every model was launched" + (
            f" ({unreadable})" if unreadable else ""
        )
    else:
        for setup in setups:
            expression = chap_cron(setup, tz)
            if expression is not None:
                crons[str(setup.id)] = expression
    for key in sorted(set(known), key=key_order):
        expression = crons.get(key)
        if expression is not None and (scope == "unscheduled" or chap_fires_at(expression, tick, tz)):
            plan.left_to_chap.append(key)
        elif key in done:
            plan.already_run.append(key)
        else:
            plan.run.append(key)
    return plan
