"""Splitting DHIS2 requests so that every request line stays under a byte limit.

Stock Tomcat and nginx in front of DHIS2 refuse request lines over 8 KB. A national
configured model (1,000 org units) overflows that in one GET, so the org units (and, if
one org unit still does not fit, the data elements) are cut into blocks. Sizes are
computed on the URL-encoded form httpx sends (``;`` -> ``%3B``, ``:`` -> ``%3A``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from .errors import SchedulerError

# What one dimension item costs in the URL besides its own characters: the encoded ";".
_SEPARATOR = len(quote(";", safe=""))


def encoded_len(text: str) -> int:
    return len(quote(text, safe=""))


@dataclass(frozen=True)
class AnalyticsBlock:
    data_elements: tuple[str, ...]
    org_units: tuple[str, ...]

    def params(self, period_item: str, *, org_units_as_filter: bool = False) -> list[tuple[str, str]]:
        """Query parameters, dimensions in dx, pe, ou order (rows are read by header name anyway)."""
        ou = ("filter" if org_units_as_filter else "dimension", "ou:" + ";".join(self.org_units))
        return [
            ("dimension", "dx:" + ";".join(self.data_elements)),
            ("dimension", "pe:" + period_item),
            ou,
            ("skipMeta", "true"),
        ]


def _chunks(items: Sequence[str], budget: int, separator: int = _SEPARATOR) -> list[tuple[str, ...]]:
    """Greedy chunks whose joined, encoded length fits ``budget``."""
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    used = 0
    for item in items:
        cost = encoded_len(item) + (separator if current else 0)
        if current and used + cost > budget:
            chunks.append(tuple(current))
            current, used = [], 0
            cost = encoded_len(item)
        if cost > budget:
            raise SchedulerError(
                f"the DHIS2 id {item!r} alone is longer than the URL budget",
                hint="Raise CHAP_SCHEDULER_MAX_URL_BYTES.",
            )
        current.append(item)
        used += cost
    if current:
        chunks.append(tuple(current))
    return chunks


def plan_blocks(
    empty_url_len: int,
    data_elements: Sequence[str],
    org_units: Sequence[str],
    *,
    max_url_bytes: int,
    rows_per_org_unit: int = 1,
    max_rows: int | None = None,
) -> list[AnalyticsBlock]:
    """Blocks of (data elements × org units) whose request URL is at most ``max_url_bytes``.

    ``empty_url_len`` is the length of the same request with no dx and no ou items. With
    ``max_rows``, a block also holds at most that many rows (``rows_per_org_unit`` per
    org unit and data element), which bounds the memory one answer takes.
    """
    budget = max_url_bytes - empty_url_len
    if budget < 64:
        raise SchedulerError(
            f"the period list alone makes a {empty_url_len}-byte request, over the {max_url_bytes}-byte URL limit",
            hint="Raise CHAP_SCHEDULER_MAX_URL_BYTES or shorten the window (fewer periods).",
        )
    dx_cost = sum(encoded_len(d) for d in data_elements) + _SEPARATOR * (len(data_elements) - 1)
    dx_blocks = [tuple(data_elements)] if dx_cost <= budget // 2 else _chunks(data_elements, budget // 2)
    blocks: list[AnalyticsBlock] = []
    for dx in dx_blocks:
        dx_len = sum(encoded_len(d) for d in dx) + _SEPARATOR * (len(dx) - 1)
        per_block = len(org_units) or 1
        if max_rows is not None:
            per_block = max(1, max_rows // max(1, rows_per_org_unit * len(dx)))
        for ou in _chunks(org_units, budget - dx_len):
            blocks += [AnalyticsBlock(dx, ou[i : i + per_block]) for i in range(0, len(ou), per_block)]
    return blocks


def plan_id_filter_blocks(empty_url_len: int, ids: Sequence[str], *, max_url_bytes: int) -> list[tuple[str, ...]]:
    """Blocks of ids for ``filter=id:in:[a,b,c]`` requests under the URL limit.

    ``empty_url_len`` is the length of the same request with an empty id list.
    """
    return _chunks(ids, max_url_bytes - empty_url_len, separator=encoded_len(","))
