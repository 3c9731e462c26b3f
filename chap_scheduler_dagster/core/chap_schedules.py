"""chap's own schedules: which configured models are due, and the cursor that remembers it.

chap stores a five-field cron expression (``scheduleCronExpression``) and a flag
(``scheduleEnabled``) on every prediction setup but runs nothing itself. This module
decides, for one sensor tick, which setups are due. It is pure: the caller passes the
setups, the previous cursor, the time and the time zone, and gets back what to launch,
what to report and the next cursor.

Rules (also in the README):

- A setup fires at most once per cron tick. The cursor remembers, per setup, the cron
  expression and the last tick it accounted for; a tick is fired only if it is later.
- Missed ticks collapse: after downtime, only the latest due tick fires (one catch-up run).
- A setup the cursor has not seen yet (new, re-enabled, cron changed or repaired) does not
  fire for an old tick. Its latest tick is recorded as seen, unless that tick is at most
  ``grace`` old (it fell due between two sensor evaluations): then it fires.
- ``scheduleEnabled`` false, or no expression: never fired here, and forgotten, so turning
  the schedule on later starts from the next tick instead of catching up.
- A malformed expression is never fatal: the setup is skipped with a message. It is reported
  once per distinct bad expression (``newly_bad``), and listed on every tick (``bad``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import PlainSerializer, TypeAdapter, ValidationError

from .partition_keys import key_order

CURSOR_VERSION = 1
# Longest gap croniter may search for the previous match ("0 0 29 2 *" needs up to 8 years).
_MAX_YEARS_BETWEEN_MATCHES = 9


class InvalidCron(ValueError):
    """A schedule expression that cannot be used; ``str(err)`` says why in plain words."""


class ScheduledSetup(Protocol):
    """What this module needs of a chap prediction setup (``core.chap_models.PredictionSetup``)."""

    id: int
    name: str
    schedule_cron_expression: str | None
    schedule_enabled: bool


@dataclass(frozen=True)
class CursorEntry:
    cron: str
    # None: the expression is bad. Written in UTC with an offset (2026-11-23T06:00:00+00:00).
    last_tick: Annotated[datetime, PlainSerializer(lambda t: t.astimezone(UTC).isoformat())] | None = None
    error: str | None = None


@dataclass(frozen=True)
class DueRun:
    setup_id: int
    name: str
    cron: str
    tick: datetime  # in the schedule's time zone
    catch_up: bool  # more than one tick was missed since the last one fired

    @property
    def partition_key(self) -> str:
        return str(self.setup_id)

    @property
    def tick_iso(self) -> str:
        return self.tick.astimezone(UTC).isoformat()

    @property
    def run_key(self) -> str:
        return f"chap-cron:{self.setup_id}:{self.tick_iso}"


@dataclass(frozen=True)
class BadSchedule:
    setup_id: int
    name: str
    cron: str
    error: str

    @property
    def message(self) -> str:
        return (
            f"configured model {self.setup_id} ({self.name}): schedule {self.cron!r} skipped: {self.error}. "
            "Fix scheduleCronExpression in chap (five fields: minute hour day-of-month month day-of-week)."
        )


@dataclass
class CronPlan:
    due: list[DueRun] = field(default_factory=list)
    bad: list[BadSchedule] = field(default_factory=list)
    newly_bad: list[BadSchedule] = field(default_factory=list)
    not_due: list[int] = field(default_factory=list)
    first_seen: list[int] = field(default_factory=list)
    disabled: list[int] = field(default_factory=list)
    cursor: dict[str, CursorEntry] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the sensor tick when nothing is launched."""
        parts = []
        if self.not_due:
            parts.append(f"not due: {_ids(self.not_due)}")
        if self.first_seen:
            parts.append(f"first seen, waiting for their next tick: {_ids(self.first_seen)}")
        if self.disabled:
            parts.append(f"scheduleEnabled false or no cron (not launched): {_ids(self.disabled)}")
        parts += [b.message for b in self.bad]
        return "; ".join(parts) if parts else "no configured model has a schedule"


# ---- cron --------------------------------------------------------------------------------


def timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidCron(f"unknown time zone {name!r}") from exc


def validate_cron(expression: str) -> str:
    """Return the normalized expression, or raise :class:`InvalidCron`."""
    text = " ".join((expression or "").split())
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise InvalidCron(f"a cron expression needs exactly five fields, got {len(fields)}")
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC), max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES)
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidCron(str(exc) or type(exc).__name__) from exc
    return text


def latest_tick(expression: str, now: datetime, tz: str) -> datetime:
    """The latest tick of ``expression`` at or before ``now``, as a time in ``tz``."""
    text = validate_cron(expression)
    local_now = now.astimezone(timezone(tz))
    try:
        itr = croniter(
            text, local_now + timedelta(seconds=1), max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES
        )
        tick = itr.get_prev(datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidCron(f"it never matches a date ({exc})") from exc
    tick = tick.replace(second=0, microsecond=0)
    return tick.astimezone(timezone(tz))


def ticks_between(expression: str, after: datetime, until: datetime, tz: str, limit: int = 1000) -> int:
    """How many ticks fall in (after, until], counting at most ``limit``."""
    text = validate_cron(expression)
    itr = croniter(text, after.astimezone(timezone(tz)), max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES)
    count = 0
    while count < limit:
        nxt = itr.get_next(datetime)
        if nxt > until:
            break
        count += 1
    return count


# ---- cursor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cursor:
    v: int = CURSOR_VERSION
    setups: dict[str, CursorEntry] = field(default_factory=dict)


_CURSOR = TypeAdapter(_Cursor)


def parse_cursor(text: str | None) -> dict[str, CursorEntry]:
    """Read a cursor written by :func:`dump_cursor`. Anything unreadable counts as empty."""
    if not text:
        return {}
    try:
        return _CURSOR.validate_json(text).setups
    except ValidationError:
        return {}


def dump_cursor(entries: dict[str, CursorEntry]) -> str:
    """``{"v": 1, "setups": {"3": {"cron": …, "last_tick": …}}}``, setups in number order, empty fields left out."""
    setups = {key: entries[key] for key in sorted(entries, key=key_order)}
    return _CURSOR.dump_json(_Cursor(setups=setups), exclude_none=True).decode()


# ---- the plan ----------------------------------------------------------------------------


def plan_chap_cron(
    setups: Iterable[ScheduledSetup],
    cursor: dict[str, CursorEntry],
    *,
    now: datetime,
    tz: str,
    grace: timedelta,
) -> CronPlan:
    """Decide which setups are due now. See the module docstring for the rules."""
    plan = CronPlan()
    zone_error: str | None = None
    try:
        timezone(tz)
    except InvalidCron as exc:
        zone_error = str(exc)
    for setup in sorted(setups, key=lambda s: s.id):
        key = str(setup.id)
        expression = (setup.schedule_cron_expression or "").strip()
        if not setup.schedule_enabled or not expression:
            plan.disabled.append(setup.id)
            continue
        previous = cursor.get(key)
        try:
            if zone_error:
                raise InvalidCron(f"{zone_error} (CHAP_SCHEDULER_SCHEDULE_TIMEZONE)")
            normalized = validate_cron(expression)
            tick = latest_tick(normalized, now, tz)
        except InvalidCron as exc:
            bad = BadSchedule(setup.id, setup.name, expression, str(exc))
            plan.bad.append(bad)
            if previous is None or previous.error is None or previous.cron != expression:
                plan.newly_bad.append(bad)
            plan.cursor[key] = CursorEntry(cron=expression, last_tick=None, error=str(exc))
            continue
        plan.cursor[key] = CursorEntry(cron=normalized, last_tick=tick)
        known = previous is not None and previous.last_tick is not None and previous.cron == normalized
        if known:
            assert previous is not None and previous.last_tick is not None
            if tick > previous.last_tick:
                missed = ticks_between(normalized, previous.last_tick, tick, tz, limit=2)
                plan.due.append(DueRun(setup.id, setup.name, normalized, tick, catch_up=missed > 1))
            else:
                plan.not_due.append(setup.id)
                # Keep what was recorded (equal, or later if the clock went back).
                plan.cursor[key] = previous
        elif now - tick <= grace:
            plan.due.append(DueRun(setup.id, setup.name, normalized, tick, catch_up=False))
        else:
            plan.first_seen.append(setup.id)
    return plan


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids)


