"""DHIS2 period ids: parsing, canonical formatting, ordering, arithmetic and enumeration.

Pure stdlib, no I/O. Supported period types: daily, weekly (ISO-8601, Monday start),
monthly, quarterly and yearly.

Id forms
--------
=========  ===========================  =====================  ====================
type       accepted on input            ``Period.id`` (DHIS2)  ``Period.chap_id``
=========  ===========================  =====================  ====================
day        ``20240315``, ``2024-03-15``  ``20240315``           ``20240315``
week       ``2024W1``, ``2024W01``       ``2024W1`` (unpadded)  ``2024W01`` (padded)
month      ``202401``, ``2024-01``       ``202401``             ``202401``
quarter    ``2024Q1``                    ``2024Q1``             ``2024Q1``
year       ``2024``                      ``2024``               ``2024``
=========  ===========================  =====================  ====================

DHIS2 emits weekly ids unpadded (``%d``) and chap emits them zero-padded; both parse to
equal :class:`Period` objects, so compare ``Period`` objects (or ``.id``), never raw strings.

Every period carries an ``ordinal``: a per-type integer that increases by one from each
period to the next.  Shifting, counting and ordering are O(1) arithmetic on it.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

__all__ = [
    "PERIOD_CAP_SETTING",
    "Period",
    "PeriodError",
    "PeriodRangeError",
    "PeriodType",
    "count_periods",
    "covering",
    "parse_period",
    "period_range",
    "period_type_of",
    "periods_back",
    "probe_keyword",
    "probe_keyword_periods",
]

#: Name of the setting a user raises when a period range exceeds the cap.
PERIOD_CAP_SETTING = "CHAP_SCHEDULER_PERIOD_CAP"


class PeriodType(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class PeriodError(ValueError):
    """A period id, period type or period argument is invalid or unsupported."""


class PeriodRangeError(PeriodError):
    """A period range is empty (start after end) or longer than the allowed cap."""

    def __init__(
        self,
        message: str,
        *,
        start: Period | None = None,
        end: Period | None = None,
        count: int | None = None,
        cap: int | None = None,
    ) -> None:
        super().__init__(message)
        self.start = start
        self.end = end
        self.count = count
        self.cap = cap


_SUPPORTED_FORMS = (
    "supported forms: daily 20240315 or 2024-03-15, weekly (ISO-8601, Monday start) "
    "2024W1 or 2024W01, monthly 202401 or 2024-01, quarterly 2024Q1, yearly 2024"
)

_SUPPORTED_TYPES = (
    "supported: day, week, month, quarter, year "
    "(also daily, weekly, monthly, quarterly, yearly in any case)"
)

_ADJECTIVE = {
    PeriodType.DAY: "daily",
    PeriodType.WEEK: "weekly",
    PeriodType.MONTH: "monthly",
    PeriodType.QUARTER: "quarterly",
    PeriodType.YEAR: "yearly",
}

_ONE_DAY = timedelta(days=1)
_SIX_DAYS = timedelta(days=6)

_MIN_YEAR = 1
_MAX_YEAR = 9999


def _iso_weeks_in_year(year: int) -> int:
    """52 or 53: the ISO week number of 28 December is the year's last week."""
    return date(year, 12, 28).isocalendar()[1]


def _coerce_date(value: object, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise PeriodError(f"{what} must be a datetime.date, got {value!r}")


def _coerce_type(value: object) -> PeriodType:
    if isinstance(value, PeriodType):
        return value
    return period_type_of(value)  # type: ignore[arg-type]


@dataclass(frozen=True, repr=False)
class Period:
    """One DHIS2 period: ``type`` plus its first and last day (both inclusive).

    Construct via :func:`parse_period`, :func:`covering` or :meth:`shift`; direct
    construction ``Period(type, start, end)`` is validated (start must be aligned to the
    type and end must be the matching last day).

    Equality and hashing use (type, start, end).  Periods of the same type are ordered
    by start; comparing periods of different types raises :class:`PeriodError`.
    """

    type: PeriodType
    start: date
    end: date
    #: Calendar year of the period; for weeks the ISO year (2024-12-31 is in 2025W1).
    year: int = field(init=False, compare=False)
    #: Position within ``year``: day of year, ISO week, month, quarter, or 1 for years.
    index: int = field(init=False, compare=False)
    #: Per-type consecutive integer: ``p.shift(n).ordinal == p.ordinal + n``.
    ordinal: int = field(init=False, compare=False)
    _id: str = field(init=False, compare=False)
    _chap_id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        ptype = _coerce_type(self.type)
        start = _coerce_date(self.start, "period start")
        end = _coerce_date(self.end, "period end")
        set_(self, "type", ptype)
        set_(self, "start", start)
        set_(self, "end", end)

        y, m, d = start.year, start.month, start.day
        try:
            if ptype is PeriodType.DAY:
                year, index = y, start.timetuple().tm_yday
                ordinal = start.toordinal()
                expected_end = start
                pid = f"{y:04d}{m:02d}{d:02d}"
                chap = pid
            elif ptype is PeriodType.WEEK:
                if start.weekday() != 0:
                    raise PeriodError(
                        f"weekly period start {start.isoformat()} is not a Monday "
                        "(weeks are ISO-8601, Monday to Sunday)"
                    )
                year, index, _ = start.isocalendar()
                ordinal = (start.toordinal() - 1) // 7  # date(1, 1, 1) is a Monday
                expected_end = start + _SIX_DAYS
                pid = f"{year:04d}W{index}"
                chap = f"{year:04d}W{index:02d}"
            elif ptype is PeriodType.MONTH:
                if d != 1:
                    raise PeriodError(
                        f"monthly period start {start.isoformat()} is not the 1st of a month"
                    )
                year, index = y, m
                ordinal = y * 12 + (m - 1)
                expected_end = date(y, m, calendar.monthrange(y, m)[1])
                pid = f"{y:04d}{m:02d}"
                chap = pid
            elif ptype is PeriodType.QUARTER:
                if d != 1 or m not in (1, 4, 7, 10):
                    raise PeriodError(
                        f"quarterly period start {start.isoformat()} is not 1 Jan, 1 Apr, "
                        "1 Jul or 1 Oct"
                    )
                year, index = y, (m - 1) // 3 + 1
                ordinal = y * 4 + (index - 1)
                last_month = m + 2
                expected_end = date(y, last_month, calendar.monthrange(y, last_month)[1])
                pid = f"{y:04d}Q{index}"
                chap = pid
            else:  # PeriodType.YEAR
                if (m, d) != (1, 1):
                    raise PeriodError(
                        f"yearly period start {start.isoformat()} is not 1 January"
                    )
                year, index = y, 1
                ordinal = y
                expected_end = date(y, 12, 31)
                pid = f"{y:04d}"
                chap = pid
        except OverflowError as exc:
            raise PeriodError(
                f"{_ADJECTIVE[ptype]} period starting {start.isoformat()} ends after "
                "year 9999, which is not supported"
            ) from exc

        if end != expected_end:
            raise PeriodError(
                f"{_ADJECTIVE[ptype]} period {pid} starting {start.isoformat()} must end "
                f"on {expected_end.isoformat()}, got {end.isoformat()}"
            )
        set_(self, "year", year)
        set_(self, "index", index)
        set_(self, "ordinal", ordinal)
        set_(self, "_id", pid)
        set_(self, "_chap_id", chap)

    # -- ids -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """DHIS2 canonical id (weekly unpadded: ``2024W1``)."""
        return self._id

    @property
    def chap_id(self) -> str:
        """The id as chap emits it (weekly zero-padded: ``2024W01``)."""
        return self._chap_id

    def __str__(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"Period({self._id!r})"

    # -- arithmetic ----------------------------------------------------------------

    def shift(self, n: int) -> Period:
        """The period ``n`` periods later (negative ``n``: earlier)."""
        if n == 0:
            return self
        return _from_ordinal(self.type, self.ordinal + n)

    def contains(self, day: date) -> bool:
        """Whether ``day`` falls within this period."""
        return self.start <= _coerce_date(day, "day") <= self.end

    # -- ordering ------------------------------------------------------------------

    def _key(self, other: object, op: str) -> tuple[int, int] | None:
        if not isinstance(other, Period):
            return None
        if other.type is not self.type:
            raise PeriodError(
                f"cannot compare {_ADJECTIVE[self.type]} period {self._id} with "
                f"{_ADJECTIVE[other.type]} period {other._id} ({op}); "
                "only periods of the same type are ordered"
            )
        return self.ordinal, other.ordinal

    def __lt__(self, other: object) -> bool:
        k = self._key(other, "<")
        return NotImplemented if k is None else k[0] < k[1]

    def __le__(self, other: object) -> bool:
        k = self._key(other, "<=")
        return NotImplemented if k is None else k[0] <= k[1]

    def __gt__(self, other: object) -> bool:
        k = self._key(other, ">")
        return NotImplemented if k is None else k[0] > k[1]

    def __ge__(self, other: object) -> bool:
        k = self._key(other, ">=")
        return NotImplemented if k is None else k[0] >= k[1]


def _from_ordinal(ptype: PeriodType, ordinal: int) -> Period:
    """The period of ``ptype`` with the given ordinal (inverse of ``Period.ordinal``)."""
    try:
        if ptype is PeriodType.DAY:
            start = date.fromordinal(ordinal)
            return Period(ptype, start, start)
        if ptype is PeriodType.WEEK:
            start = date.fromordinal(ordinal * 7 + 1)
            return Period(ptype, start, start + _SIX_DAYS)
        if ptype is PeriodType.MONTH:
            y, m0 = divmod(ordinal, 12)
            m = m0 + 1
            return Period(ptype, date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1]))
        if ptype is PeriodType.QUARTER:
            y, q0 = divmod(ordinal, 4)
            m = q0 * 3 + 1
            return Period(
                ptype, date(y, m, 1), date(y, m + 2, calendar.monthrange(y, m + 2)[1])
            )
        return Period(ptype, date(ordinal, 1, 1), date(ordinal, 12, 31))
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, PeriodError):
            raise
        raise PeriodError(
            f"{_ADJECTIVE[ptype]} period is outside the supported years "
            f"{_MIN_YEAR:04d}-{_MAX_YEAR}"
        ) from exc


# -- parsing ---------------------------------------------------------------------------

_RE_DAY = re.compile(r"([0-9]{4})(-?)([0-9]{2})\2([0-9]{2})")  # both dashes or none
_RE_WEEK = re.compile(r"([0-9]{4})W([0-9]{1,2})")
_RE_MONTH = re.compile(r"([0-9]{4})-?([0-9]{2})")
_RE_QUARTER = re.compile(r"([0-9]{4})Q([0-9])")
_RE_YEAR = re.compile(r"[0-9]{4}")


def _check_year(year: int, pid: str) -> None:
    if year < _MIN_YEAR:
        raise PeriodError(
            f"invalid year {year:04d} in period id {pid!r}; years 0001-9999 are accepted"
        )


def _parse_uncached(period_id: str, period_type: PeriodType | None) -> Period:
    s = period_id.strip()
    if not s:
        raise PeriodError(f"empty period id {period_id!r}; {_SUPPORTED_FORMS}")

    parsed: Period
    n = len(s)
    if n == 4 and _RE_YEAR.fullmatch(s):
        y = int(s)
        _check_year(y, s)
        parsed = Period(PeriodType.YEAR, date(y, 1, 1), date(y, 12, 31))
    elif (m := _RE_WEEK.fullmatch(s)) is not None:
        y, w = int(m[1]), int(m[2])
        _check_year(y, s)
        if not 1 <= w <= 53:
            raise PeriodError(
                f"invalid week {w} in period id {s!r}; ISO weeks are numbered 1-53 "
                "(2024W1 or 2024W01)"
            )
        weeks = _iso_weeks_in_year(y)
        if w > weeks:
            raise PeriodError(
                f"invalid week in period id {s!r}: ISO year {y} has only {weeks} weeks "
                f"(valid: {y}W1-{y}W{weeks})"
            )
        try:
            start = date.fromisocalendar(y, w, 1)
            parsed = Period(PeriodType.WEEK, start, start + _SIX_DAYS)
        except OverflowError as exc:
            raise PeriodError(f"period id {s!r} ends after year 9999") from exc
    elif (m := _RE_QUARTER.fullmatch(s)) is not None:
        y, q = int(m[1]), int(m[2])
        _check_year(y, s)
        if not 1 <= q <= 4:
            raise PeriodError(
                f"invalid quarter {q} in period id {s!r}; quarters are Q1-Q4 (2024Q1)"
            )
        parsed = _from_ordinal(PeriodType.QUARTER, y * 4 + q - 1)
    elif (m := _RE_MONTH.fullmatch(s)) is not None:
        y, mo = int(m[1]), int(m[2])
        _check_year(y, s)
        if not 1 <= mo <= 12:
            raise PeriodError(
                f"invalid month {mo:02d} in period id {s!r}; months are 01-12 "
                "(202401 or 2024-01)"
            )
        parsed = _from_ordinal(PeriodType.MONTH, y * 12 + mo - 1)
    elif (m := _RE_DAY.fullmatch(s)) is not None:
        y, mo, d = int(m[1]), int(m[3]), int(m[4])
        _check_year(y, s)
        try:
            day = date(y, mo, d)
        except ValueError as exc:
            raise PeriodError(
                f"invalid date in period id {s!r} ({exc}); daily ids are "
                "yyyyMMdd or yyyy-MM-dd (20240315 or 2024-03-15)"
            ) from exc
        parsed = Period(PeriodType.DAY, day, day)
    else:
        raise PeriodError(f"unsupported or malformed period id {s!r}; {_SUPPORTED_FORMS}")

    if period_type is not None and parsed.type is not period_type:
        raise PeriodError(
            f"period id {s!r} is a {_ADJECTIVE[parsed.type]} ({parsed.type}) period, "
            f"expected a {_ADJECTIVE[period_type]} ({period_type}) period"
        )
    return parsed


@lru_cache(maxsize=4096)
def _parse_cached(period_id: str, period_type: PeriodType | None) -> Period:
    return _parse_uncached(period_id, period_type)


def parse_period(period_id: str, period_type: PeriodType | None = None) -> Period:
    """Parse a DHIS2 (or chap) period id; see the module docstring for accepted forms.

    Surrounding whitespace is ignored.  If ``period_type`` is given (a :class:`PeriodType`
    or any string :func:`period_type_of` accepts), an id of another type raises
    :class:`PeriodError`.  Results are cached (ids repeat across analytics rows).
    """
    if not isinstance(period_id, str):
        raise PeriodError(f"period id must be a string, got {period_id!r}; {_SUPPORTED_FORMS}")
    if period_type is not None and not isinstance(period_type, PeriodType):
        period_type = period_type_of(period_type)
    return _parse_cached(period_id, period_type)


#: Alias of :func:`parse_period` (which is already cached).


_TYPE_ALIASES: dict[str, PeriodType] = {
    "day": PeriodType.DAY,
    "daily": PeriodType.DAY,
    "week": PeriodType.WEEK,
    "weekly": PeriodType.WEEK,
    "month": PeriodType.MONTH,
    "monthly": PeriodType.MONTH,
    "quarter": PeriodType.QUARTER,
    "quarterly": PeriodType.QUARTER,
    "year": PeriodType.YEAR,
    "yearly": PeriodType.YEAR,
}


def period_type_of(value: str) -> PeriodType:
    """Map chap's ``periodType`` (``month``…) or DHIS2's (``Monthly``…) to a PeriodType."""
    if isinstance(value, PeriodType):
        return value
    if not isinstance(value, str):
        raise PeriodError(f"unsupported period type {value!r}; {_SUPPORTED_TYPES}")
    key = value.strip().lower()
    found = _TYPE_ALIASES.get(key)
    if found is None:
        hint = ""
        if key == "any":
            hint = " (chap's 'any' has to be resolved to a concrete period type first)"
        raise PeriodError(f"unsupported period type {value!r}{hint}; {_SUPPORTED_TYPES}")
    return found


# -- calendar helpers ------------------------------------------------------------------


def covering(day: date, period_type: PeriodType) -> Period:
    """The period of ``period_type`` that contains ``day`` (2024-12-31, week -> 2025W1).

    A ``datetime`` is reduced to its date (no time-zone conversion).
    """
    ptype = _coerce_type(period_type)
    d = _coerce_date(day, "day")
    y = d.year
    if ptype is PeriodType.DAY:
        return Period(ptype, d, d)
    if ptype is PeriodType.WEEK:
        return _from_ordinal(ptype, (d.toordinal() - 1) // 7)
    if ptype is PeriodType.MONTH:
        return _from_ordinal(ptype, y * 12 + d.month - 1)
    if ptype is PeriodType.QUARTER:
        return _from_ordinal(ptype, y * 4 + (d.month - 1) // 3)
    return Period(ptype, date(y, 1, 1), date(y, 12, 31))


def periods_back(today: date, period_type: PeriodType, n: int) -> Period:
    """The period ``n`` periods before the one containing ``today``.

    ``0`` is the period in progress, ``1`` the last complete period, and so on.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise PeriodError(f"periods back must be a whole number >= 0, got {n!r}")
    if n < 0:
        raise PeriodError(
            f"periods back must be >= 0 (0 = current period, 1 = last complete), got {n}"
        )
    return covering(today, period_type).shift(-n)


def _check_same_type(start: Period, end: Period) -> None:
    if not isinstance(start, Period) or not isinstance(end, Period):
        raise PeriodError(f"expected two Periods, got {start!r} and {end!r}")
    if start.type is not end.type:
        raise PeriodError(
            f"start period {start} is {_ADJECTIVE[start.type]} but end period {end} is "
            f"{_ADJECTIVE[end.type]}; a range needs two periods of the same type"
        )


def count_periods(start: Period, end: Period) -> int:
    """Number of periods from ``start`` to ``end`` inclusive; 0 if start is after end."""
    _check_same_type(start, end)
    return max(0, end.ordinal - start.ordinal + 1)


def period_range(start: Period, end: Period, cap: int) -> list[Period]:
    """Every period from ``start`` to ``end`` inclusive, in order.

    Raises :class:`PeriodRangeError` if start is after end or if the range holds more
    than ``cap`` periods (never truncates), :class:`PeriodError` for mixed types.
    """
    _check_same_type(start, end)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise PeriodError(f"period cap must be a whole number >= 1, got {cap!r}")
    if start.ordinal > end.ordinal:
        raise PeriodRangeError(
            f"start period {start} is after end period {end}",
            start=start,
            end=end,
            count=0,
            cap=cap,
        )
    count = end.ordinal - start.ordinal + 1
    if count > cap:
        raise PeriodRangeError(
            f"period range {start}..{end} has {count} {_ADJECTIVE[start.type]} periods, "
            f"more than the cap of {cap}; raise {PERIOD_CAP_SETTING} or move the start "
            "period later",
            start=start,
            end=end,
            count=count,
            cap=cap,
        )
    ptype = start.type
    first = start.ordinal
    return [start, *(_from_ordinal(ptype, first + i) for i in range(1, count))]


# -- DHIS2 relative periods ------------------------------------------------------------

# The longest LAST_n_* keyword DHIS2 has for each type (there is no LAST_24_MONTHS or
# LAST_104_WEEKS).  LAST_n_* covers the n complete periods before the current one.
_PROBE: dict[PeriodType, tuple[str, int]] = {
    PeriodType.DAY: ("LAST_180_DAYS", 180),
    PeriodType.WEEK: ("LAST_52_WEEKS", 52),
    PeriodType.MONTH: ("LAST_12_MONTHS", 12),
    PeriodType.QUARTER: ("LAST_4_QUARTERS", 4),
    PeriodType.YEAR: ("LAST_10_YEARS", 10),
}


def probe_keyword(period_type: PeriodType) -> str:
    """The longest valid DHIS2 relative period keyword for ``period_type``."""
    return _PROBE[_coerce_type(period_type)][0]


def probe_keyword_periods(today: date, period_type: PeriodType) -> list[Period]:
    """The periods DHIS2 expands :func:`probe_keyword` to, relative to ``today``.

    ``LAST_n_*`` excludes the current period: month at 2022-01-15 -> 202101..202112.
    """
    ptype = _coerce_type(period_type)
    n = _PROBE[ptype][1]
    current = covering(today, ptype)
    return period_range(current.shift(-n), current.shift(-1), cap=n)


def dhis2_id(period_id: str) -> str:
    """The DHIS2 form of a period id from anywhere (chap pads weeks: ``2027W01`` -> ``2027W1``).

    Ids that do not parse are returned unchanged, so reports never lose what chap said.
    """
    try:
        return parse_period(period_id.strip()).id
    except PeriodError:
        return period_id


def calendar_order(period_id: str) -> tuple[int, str]:
    """Sort key in calendar order (``2024W9`` before ``2024W10``); unparsable ids first, by text."""
    try:
        return (parse_period(period_id.strip()).start.toordinal(), period_id)
    except PeriodError:
        return (0, period_id)
