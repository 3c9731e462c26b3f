"""Period ids for the sandbox (private to the sandbox; the scheduler has its own helpers).

Each supported period is an absolute integer *index* per period type:

* ``month``: ``year * 12 + (month - 1)``; id ``YYYYMM`` (input also ``YYYY-MM``)
* ``week`` (ISO, Monday start): ``(monday.toordinal() - 1) // 7``; id ``YYYYWn`` unpadded on output,
  ``YYYYWnn`` accepted on input; ``pad=True`` gives chap's zero-padded form
* ``quarter``: ``year * 4 + (q - 1)``; id ``YYYYQn``
* ``year``: the year; id ``YYYY``
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_MONTH_RE = re.compile(r"^(\d{4})-?(\d{2})$")
_WEEK_RE = re.compile(r"^(\d{4})W(\d{1,2})$")
_QUARTER_RE = re.compile(r"^(\d{4})Q([1-4])$")
_YEAR_RE = re.compile(r"^(\d{4})$")

MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)


def parse(pid: str) -> tuple[str, int] | None:
    """Parse a period id into ``(period_type, index)``; ``None`` if not a valid id."""
    m = _MONTH_RE.match(pid)
    if m:
        y, mo = int(m.group(1)), int(m.group(2))
        if 1 <= mo <= 12:
            return "month", y * 12 + mo - 1
        return None
    m = _WEEK_RE.match(pid)
    if m:
        y, w = int(m.group(1)), int(m.group(2))
        try:
            monday = date.fromisocalendar(y, w, 1)
        except ValueError:
            return None
        return "week", (monday.toordinal() - 1) // 7
    m = _QUARTER_RE.match(pid)
    if m:
        return "quarter", int(m.group(1)) * 4 + int(m.group(2)) - 1
    m = _YEAR_RE.match(pid)
    if m:
        return "year", int(m.group(1))
    return None


def format_id(ptype: str, index: int, pad: bool = False) -> str:
    """Canonical id of a period (DHIS2 form; ``pad=True`` zero-pads weeks like chap)."""
    if ptype == "month":
        return f"{index // 12:04d}{index % 12 + 1:02d}"
    if ptype == "week":
        y, w, _ = week_monday(index).isocalendar()
        return f"{y}W{w:02d}" if pad else f"{y}W{w}"
    if ptype == "quarter":
        return f"{index // 4}Q{index % 4 + 1}"
    if ptype == "year":
        return str(index)
    raise ValueError(ptype)


def week_monday(index: int) -> date:
    # ordinal 1 (0001-01-01) is a Monday, so index * 7 + 1 is always a Monday.
    return date.fromordinal(index * 7 + 1)


def index_of(ptype: str, d: date) -> int:
    """Index of the period of ``ptype`` that contains day ``d``."""
    if ptype == "month":
        return d.year * 12 + d.month - 1
    if ptype == "week":
        return (d.toordinal() - 1) // 7
    if ptype == "quarter":
        return d.year * 4 + (d.month - 1) // 3
    if ptype == "year":
        return d.year
    raise ValueError(ptype)


def start_date(ptype: str, index: int) -> date:
    if ptype == "month":
        return date(index // 12, index % 12 + 1, 1)
    if ptype == "week":
        return week_monday(index)
    if ptype == "quarter":
        return date(index // 4, (index % 4) * 3 + 1, 1)
    if ptype == "year":
        return date(index, 1, 1)
    raise ValueError(ptype)


def end_date(ptype: str, index: int) -> date:
    return start_date(ptype, index + 1) - timedelta(days=1)


def months_of(ptype: str, index: int) -> range:
    """Month indices covered by a month/quarter/year period."""
    if ptype == "month":
        return range(index, index + 1)
    if ptype == "quarter":
        return range(index * 3, index * 3 + 3)
    if ptype == "year":
        return range(index * 12, index * 12 + 12)
    raise ValueError(ptype)


def display_name(ptype: str, index: int) -> str:
    if ptype == "month":
        return f"{MONTH_NAMES[index % 12]} {index // 12}"
    if ptype == "week":
        y, w, _ = week_monday(index).isocalendar()
        return f"Week {w} {start_date(ptype, index).isoformat()} - {end_date(ptype, index).isoformat()}"
    if ptype == "quarter":
        q = index % 4
        return f"{MONTH_NAMES[q * 3]} - {MONTH_NAMES[q * 3 + 2]} {index // 4}"
    return str(index)


# Relative period keywords: keyword -> (period_type, count, include_current)
_RELATIVE = {
    "THIS_WEEK": ("week", 1, True),
    "LAST_WEEK": ("week", 1, False),
    "LAST_4_WEEKS": ("week", 4, False),
    "LAST_12_WEEKS": ("week", 12, False),
    "LAST_52_WEEKS": ("week", 52, False),
    "THIS_MONTH": ("month", 1, True),
    "LAST_MONTH": ("month", 1, False),
    "LAST_3_MONTHS": ("month", 3, False),
    "LAST_6_MONTHS": ("month", 6, False),
    "LAST_12_MONTHS": ("month", 12, False),
    "THIS_QUARTER": ("quarter", 1, True),
    "LAST_QUARTER": ("quarter", 1, False),
    "LAST_4_QUARTERS": ("quarter", 4, False),
    "THIS_YEAR": ("year", 1, True),
    "LAST_YEAR": ("year", 1, False),
    "LAST_5_YEARS": ("year", 5, False),
    "LAST_10_YEARS": ("year", 10, False),
}

RELATIVE_NAMES = {k: k.replace("_", " ").capitalize() for k in _RELATIVE}


def expand_relative(keyword: str, today: date) -> list[tuple[str, int]] | None:
    """Expand a relative keyword; ``LAST_n`` excludes the current period."""
    spec = _RELATIVE.get(keyword)
    if spec is None:
        return None
    ptype, n, include_current = spec
    cur = index_of(ptype, today)
    if include_current:
        return [(ptype, cur)]
    return [(ptype, i) for i in range(cur - n, cur)]
