"""DHIS2 period ids: parsing, canonical formatting, ordering, arithmetic. Pure stdlib, no I/O.

=========  ===========================  =====================  ====================
type       accepted on input            ``Period.id`` (DHIS2)  ``Period.chap_id``
=========  ===========================  =====================  ====================
day        ``20240315``, ``2024-03-15``  ``20240315``           ``20240315``
week       ``2024W1``, ``2024W01``       ``2024W1`` (unpadded)  ``2024W01`` (padded)
month      ``202401``, ``2024-01``       ``202401``             ``202401``
quarter    ``2024Q1``                    ``2024Q1``             ``2024Q1``
year       ``2024``                      ``2024``               ``2024``
=========  ===========================  =====================  ====================

Weeks are ISO-8601 (Monday start). DHIS2 emits weekly ids unpadded and chap zero-padded; both
parse to equal :class:`Period` objects, so compare periods (or ``.id``), never raw strings.
A period is its type plus an ``ordinal`` that grows by one from each period to the next, so
shifting, counting and ordering are arithmetic; one table row per type says how to map
ordinals to days and ids.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import lru_cache, total_ordering


class PeriodType(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class PeriodError(ValueError):
    """A period id, period type or period argument is invalid or unsupported."""


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _week_ids(start: date) -> tuple[str, str]:
    year, week, _ = start.isocalendar()  # the ISO year: 2024-12-30 starts 2025W1
    return f"{year:04d}W{week}", f"{year:04d}W{week:02d}"


@dataclass(frozen=True)
class _Kind:
    adjective: str
    keyword: str  # the longest LAST_n_* DHIS2 has (no LAST_24_MONTHS, no LAST_104_WEEKS)
    of_day: Callable[[date], int]  # ordinal of the period that contains a day
    first: Callable[[int], date]
    last: Callable[[int], date]
    ids: Callable[[date, int], tuple[str, str]]  # (DHIS2 id, chap id) from start day and ordinal


def _same(pid: str) -> tuple[str, str]:
    return pid, pid


_KINDS: dict[PeriodType, _Kind] = {
    PeriodType.DAY: _Kind(
        "daily", "LAST_180_DAYS", date.toordinal, date.fromordinal, date.fromordinal,
        lambda d, o: _same(f"{d.year:04d}{d.month:02d}{d.day:02d}"),
    ),
    PeriodType.WEEK: _Kind(
        "weekly", "LAST_52_WEEKS", lambda d: (d.toordinal() - 1) // 7,  # date(1, 1, 1) is a Monday
        lambda o: date.fromordinal(o * 7 + 1), lambda o: date.fromordinal(o * 7 + 7), lambda d, o: _week_ids(d),
    ),
    PeriodType.MONTH: _Kind(
        "monthly", "LAST_12_MONTHS", lambda d: d.year * 12 + d.month - 1,
        lambda o: date(o // 12, o % 12 + 1, 1), lambda o: _month_end(o // 12, o % 12 + 1),
        lambda d, o: _same(f"{d.year:04d}{d.month:02d}"),
    ),
    PeriodType.QUARTER: _Kind(
        "quarterly", "LAST_4_QUARTERS", lambda d: d.year * 4 + (d.month - 1) // 3,
        lambda o: date(o // 4, o % 4 * 3 + 1, 1), lambda o: _month_end(o // 4, o % 4 * 3 + 3),
        lambda d, o: _same(f"{d.year:04d}Q{o % 4 + 1}"),
    ),
    PeriodType.YEAR: _Kind(
        "yearly", "LAST_10_YEARS", lambda d: d.year,
        lambda o: date(o, 1, 1), lambda o: date(o, 12, 31), lambda d, o: _same(f"{o:04d}"),
    ),
}


@total_ordering
@dataclass(frozen=True, repr=False)
class Period:
    """One DHIS2 period: its type and ordinal; ``start`` and ``end`` are its first and last day.

    Make them with :func:`parse_period`, :func:`covering` or :meth:`shift`. Periods of one type
    are ordered; comparing periods of different types raises :class:`PeriodError`.
    """

    type: PeriodType
    #: Per-type consecutive integer: ``p.shift(n).ordinal == p.ordinal + n``.
    ordinal: int
    start: date = field(init=False, compare=False)
    end: date = field(init=False, compare=False)
    id: str = field(init=False, compare=False)  # DHIS2 form (weekly unpadded: 2024W1)
    chap_id: str = field(init=False, compare=False)  # as chap emits it (weekly padded: 2024W01)

    def __post_init__(self) -> None:
        kind = _KINDS[self.type]
        try:
            start, end = kind.first(self.ordinal), kind.last(self.ordinal)
        except (ValueError, OverflowError):
            raise PeriodError(f"{kind.adjective} period is outside the supported years 0001-9999") from None
        for name, value in zip(("start", "end", "id", "chap_id"), (start, end, *kind.ids(start, self.ordinal))):
            object.__setattr__(self, name, value)

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"Period({self.id!r})"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Period):
            return NotImplemented
        if other.type is not self.type:
            raise PeriodError(
                f"cannot compare {_KINDS[self.type].adjective} period {self} with "
                f"{_KINDS[other.type].adjective} period {other}; only periods of the same type are ordered"
            )
        return self.ordinal < other.ordinal

    def shift(self, n: int) -> Period:
        """The period ``n`` periods later (negative ``n``: earlier)."""
        return self if n == 0 else Period(self.type, self.ordinal + n)


# -- parsing ---------------------------------------------------------------------------

_SUPPORTED_FORMS = (
    "supported forms: daily 20240315 or 2024-03-15, weekly (ISO-8601, Monday start) "
    "2024W1 or 2024W01, monthly 202401 or 2024-01, quarterly 2024Q1, yearly 2024"
)


def _week(s: str, y: int, w: int) -> int:
    if not 1 <= w <= 53:
        raise PeriodError(f"invalid week {w} in period id {s!r}; ISO weeks are numbered 1-53 (2024W1 or 2024W01)")
    weeks = date(y, 12, 28).isocalendar()[1]  # 28 December is always in the year's last week
    if w > weeks:
        raise PeriodError(
            f"invalid week in period id {s!r}: ISO year {y} has only {weeks} weeks (valid: {y}W1-{y}W{weeks})"
        )
    return (date.fromisocalendar(y, w, 1).toordinal() - 1) // 7


def _quarter(s: str, y: int, q: int) -> int:
    if not 1 <= q <= 4:
        raise PeriodError(f"invalid quarter {q} in period id {s!r}; quarters are Q1-Q4 (2024Q1)")
    return y * 4 + q - 1


def _month(s: str, y: int, m: int) -> int:
    if not 1 <= m <= 12:
        raise PeriodError(f"invalid month {m:02d} in period id {s!r}; months are 01-12 (202401 or 2024-01)")
    return y * 12 + m - 1


def _day(s: str, y: int, m: int, d: int) -> int:
    try:
        return date(y, m, d).toordinal()
    except ValueError as exc:
        raise PeriodError(
            f"invalid date in period id {s!r} ({exc}); daily ids are yyyyMMdd or yyyy-MM-dd (20240315 or 2024-03-15)"
        ) from None


# Each form's digit groups (the first is the year) go to the function that checks them.
_FORMS: list[tuple[re.Pattern[str], PeriodType, Callable[..., int]]] = [
    (re.compile(r"([0-9]{4})"), PeriodType.YEAR, lambda s, y: y),
    (re.compile(r"([0-9]{4})W([0-9]{1,2})"), PeriodType.WEEK, _week),
    (re.compile(r"([0-9]{4})Q([0-9])"), PeriodType.QUARTER, _quarter),
    (re.compile(r"([0-9]{4})-?([0-9]{2})"), PeriodType.MONTH, _month),
    (re.compile(r"([0-9]{4})(?P<dash>-?)([0-9]{2})(?P=dash)([0-9]{2})"), PeriodType.DAY, _day),  # both dashes or none
]


@lru_cache(maxsize=4096)  # ids repeat across analytics rows
def _parse(s: str, expected: PeriodType | None) -> Period:
    for pattern, ptype, ordinal_of in _FORMS:
        if (m := pattern.fullmatch(s)) is not None:
            numbers = [int(g) for g in m.groups() if g not in ("", "-")]
            if numbers[0] < 1:
                raise PeriodError(f"invalid year {numbers[0]:04d} in period id {s!r}; years 0001-9999 are accepted")
            period = Period(ptype, ordinal_of(s, *numbers))
            break
    else:
        raise PeriodError(f"unsupported or malformed period id {s!r}; {_SUPPORTED_FORMS}")
    if expected is not None and period.type is not expected:
        raise PeriodError(
            f"period id {s!r} is a {_KINDS[period.type].adjective} ({period.type}) period, "
            f"expected a {_KINDS[expected].adjective} ({expected}) period"
        )
    return period


def parse_period(period_id: str, period_type: PeriodType | str | None = None) -> Period:
    """Parse a DHIS2 (or chap) period id, ignoring surrounding whitespace; forms in the module docstring.

    With ``period_type`` (anything :func:`period_type_of` accepts), an id of another type raises.
    """
    if not isinstance(period_id, str):
        raise PeriodError(f"period id must be a string, got {period_id!r}; {_SUPPORTED_FORMS}")
    return _parse(period_id.strip(), None if period_type is None else period_type_of(period_type))


_TYPE_NAMES = {t.value: t for t in PeriodType} | {k.adjective: t for t, k in _KINDS.items()}


def period_type_of(value: str) -> PeriodType:
    """Map chap's ``periodType`` (``month``…) or DHIS2's (``Monthly``…) to a PeriodType."""
    if isinstance(value, PeriodType):
        return value
    key = value.strip().lower() if isinstance(value, str) else None
    found = _TYPE_NAMES.get(key)  # type: ignore[arg-type]
    if found is None:
        hint = " (chap's 'any' has to be resolved to a concrete period type first)" if key == "any" else ""
        raise PeriodError(
            f"unsupported period type {value!r}{hint}; supported: day, week, month, quarter, year "
            "(also daily, weekly, monthly, quarterly, yearly in any case)"
        )
    return found


# -- calendar --------------------------------------------------------------------------


def covering(day: date, period_type: PeriodType | str) -> Period:
    """The period of ``period_type`` that contains ``day`` (2024-12-31, week -> 2025W1); a datetime counts as its date."""
    ptype = period_type_of(period_type)
    return Period(ptype, _KINDS[ptype].of_day(day))


def periods_back(today: date, period_type: PeriodType, n: int) -> Period:
    """The period ``n`` periods before the one containing ``today``: 0 is the one in progress, 1 the last complete."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise PeriodError(f"periods back must be a whole number >= 0, got {n!r}")
    if n < 0:
        raise PeriodError(f"periods back must be >= 0 (0 = current period, 1 = last complete), got {n}")
    return covering(today, period_type).shift(-n)


def period_range(start: Period, end: Period, cap: int) -> list[Period]:
    """Every period from ``start`` to ``end`` inclusive, in order; never truncated.

    Raises :class:`PeriodError` for mixed types, a start after the end, or more than ``cap`` periods.
    """
    if start.type is not end.type:
        raise PeriodError(
            f"start period {start} is {_KINDS[start.type].adjective} but end period {end} is "
            f"{_KINDS[end.type].adjective}; a range needs two periods of the same type"
        )
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise PeriodError(f"period cap must be a whole number >= 1, got {cap!r}")
    count = end.ordinal - start.ordinal + 1
    if count < 1:
        raise PeriodError(f"start period {start} is after end period {end}")
    if count > cap:
        raise PeriodError(
            f"period range {start}..{end} has {count} {_KINDS[start.type].adjective} periods, more than the cap "
            f"of {cap}; raise CHAP_SCHEDULER_PERIOD_CAP or move the start period later"
        )
    return [start.shift(i) for i in range(count)]


def probe_keyword(period_type: PeriodType | str) -> str:
    """The longest DHIS2 relative period keyword for ``period_type`` (it excludes the current period)."""
    return _KINDS[period_type_of(period_type)].keyword


def dhis2_id(period_id: str) -> str:
    """The DHIS2 form of a period id from anywhere (chap pads weeks: ``2027W01`` -> ``2027W1``).

    Ids that do not parse are returned unchanged, so reports never lose what chap said.
    """
    try:
        return parse_period(period_id).id
    except PeriodError:
        return period_id


def calendar_order(period_id: str) -> tuple[int, str]:
    """Sort key in calendar order (``2024W9`` before ``2024W10``); unparsable ids first, by text."""
    try:
        return (parse_period(period_id).start.toordinal(), period_id)
    except PeriodError:
        return (0, period_id)
