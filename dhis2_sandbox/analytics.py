"""``GET /api/analytics`` for the sandbox: dimension parsing, relative periods, fast row building."""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from datetime import date

from . import periods as P
from .world import ROOT_OU, World

DIM_NAMES = {"dx": "Data", "pe": "Period", "ou": "Organisation unit"}


class AnalyticsError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _header(name: str) -> dict:
    return {
        "name": name,
        "column": DIM_NAMES[name],
        "valueType": "TEXT",
        "type": "java.lang.String",
        "hidden": False,
        "meta": True,
    }


VALUE_HEADER = {
    "name": "value",
    "column": "Value",
    "valueType": "NUMBER",
    "type": "java.lang.Double",
    "hidden": False,
    "meta": False,
}


def parse_dimensions(params: list[tuple[str, str]]) -> list[tuple[str, list[str], bool]]:
    """``dimension=`` and ``filter=`` params -> [(dim, items, is_filter)] in request order."""
    dims: list[tuple[str, list[str], bool]] = []
    seen: dict[str, bool] = {}
    for key, value in params:
        if key not in ("dimension", "filter"):
            continue
        is_filter = key == "filter"
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            dim, _, items = part.partition(":")
            if dim not in DIM_NAMES:
                raise AnalyticsError("E7125", f"Dimension identifier does not reference any dimension: `{dim}`")
            if dim in seen:
                if seen[dim] != is_filter:
                    raise AnalyticsError(
                        "E7103", f"Dimensions cannot be specified as dimension and filter simultaneously: `{dim}`")
                raise AnalyticsError("E7111", f"Dimensions cannot be specified more than once: `{dim}`")
            seen[dim] = is_filter
            dims.append((dim, [i for i in items.split(";") if i], is_filter))
    return dims


def _no_items(dim: str) -> AnalyticsError:
    return AnalyticsError("E7124", f"Dimension `{dim}` is present in query without any valid dimension options")


_gc_lock = threading.Lock()
_gc_depth = 0


@contextmanager
def gc_paused():
    """Pause the cyclic GC while building millions of row tuples (it would rescan them repeatedly)."""
    global _gc_depth
    with _gc_lock:
        _gc_depth += 1
        if _gc_depth == 1:
            was_enabled = gc.isenabled()
            gc.disable()
            gc_paused.was_enabled = was_enabled  # type: ignore[attr-defined]
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and getattr(gc_paused, "was_enabled", True):
                gc.enable()


def build(world: World, params: list[tuple[str, str]], today: date) -> dict:
    """Build the analytics response object (raises :class:`AnalyticsError` for 409s).

    Rows are tuples of strings (orjson writes them as JSON arrays).
    """
    with gc_paused():
        return _build(world, params, today)


def _build(world: World, params: list[tuple[str, str]], today: date) -> dict:
    q = {}
    for k, v in params:
        q.setdefault(k, v)
    dims = parse_dimensions(params)
    all_names = [d for d, _, _ in dims]
    names = [d for d, _, f in dims if not f]  # row dimensions, in request order
    filters = {d for d, _, f in dims if f}
    if "dx" not in all_names:
        raise AnalyticsError(
            "E7102", "At least one data dimension item or data element group set dimension item must be specified"
        )
    if "pe" not in all_names:
        raise AnalyticsError("E7104", "At least one period as dimension or filter, or start and dates, must be specified")
    rel = q.get("relativePeriodDate")
    if rel:
        try:
            today = date.fromisoformat(rel[:10])
        except ValueError:
            raise AnalyticsError("E7100", f"Query parameters contains invalid relativePeriodDate: `{rel}`") from None
    skip_meta = q.get("skipMeta", "false").lower() == "true"

    des = []
    pes: list[tuple[str, int]] = []
    keywords: list[str] = []
    root = False
    districts: list[int] = []
    for dim, items, _ in dims:
        if dim == "dx":
            seen = set()
            for it in items:
                de = world.data_elements.get(it)
                if de is not None and it not in seen:
                    seen.add(it)
                    des.append(de)
            if not des:
                raise _no_items("dx")
        elif dim == "pe":
            seen_p = set()
            for it in items:
                exp = P.expand_relative(it, today)
                if exp is not None:
                    keywords.append(it)
                else:
                    one = P.parse(it)
                    exp = [one] if one is not None else []
                for pp in exp:
                    if pp not in seen_p:
                        seen_p.add(pp)
                        pes.append(pp)
            if not pes:
                raise _no_items("pe")
        else:
            seen_o: set[int] = set()
            for it in items:
                if it in (ROOT_OU, "LEVEL-1", "USER_ORGUNIT"):
                    root = True
                elif it in ("LEVEL-2", "USER_ORGUNIT_CHILDREN"):
                    for i in range(world.n):
                        if i not in seen_o:
                            seen_o.add(i)
                            districts.append(i)
                else:
                    i = world.ou_index.get(it)
                    if i is not None and i not in seen_o:
                        seen_o.add(i)
                        districts.append(i)
            if not root and not districts:
                raise _no_items("ou")
    if "ou" not in all_names:  # no ou at all: DHIS2 aggregates over the user's org unit (the root)
        root = True
        filters.add("ou")

    pe_ids = [P.format_id(t, i) for t, i in pes]
    uids = [world.ou_ids[i] for i in districts]
    order = tuple(names)
    rows: list[tuple] = []
    if not filters and order == ("dx", "pe", "ou") and not root:
        for de in des:  # the hot path: plain dx/pe/ou over districts
            dxid = de.id
            for (ptype, p), pid in zip(pes, pe_ids):
                vals = world.values(de, ptype, p, districts)
                rows.extend([(dxid, pid, u, str(v)) for u, v in zip(uids, vals) if v is not None])
    else:
        rows = _generic_rows(world, des, pes, pe_ids, root, districts, uids, order, filters)

    headers = [_header(n) for n in names] + [VALUE_HEADER]
    resp: dict = {"headers": headers}
    if not skip_meta:
        items: dict = {}
        for de in des:
            items[de.id] = {"name": de.name}
        for (ptype, p), pid in zip(pes, pe_ids):
            items[pid] = {"name": P.display_name(ptype, p)}
        for kw in keywords:
            items[kw] = {"name": P.RELATIVE_NAMES[kw]}
        ou_list = ([ROOT_OU] if root else []) + uids
        for u in ou_list:
            items[u] = {"name": world.ou_name(u)}
        for n in all_names:
            items[n] = {"name": DIM_NAMES[n]}
        dimensions = {"dx": [d.id for d in des], "pe": pe_ids}
        if "ou" in all_names:
            dimensions["ou"] = ou_list
        dimensions["co"] = []
        resp["metaData"] = {"items": items, "dimensions": dimensions}
    resp["rowContext"] = {}
    resp["rows"] = rows
    resp["height"] = len(rows)
    resp["width"] = len(headers)
    resp["headerWidth"] = len(headers)
    return resp


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else str(round(v, 2))


def _time_agg(de, vals: list):
    got = [v for v in vals if v is not None]
    if not got:
        return None
    if de.kind in ("temp", "pop"):  # averaged over time (population: AVERAGE_SUM_ORG_UNIT)
        return sum(got) / len(got) if not de.integer else round(sum(got) / len(got))
    return sum(got)


def _generic_rows(world, des, pes, pe_ids, root, districts, uids, order, filters) -> list[tuple]:
    """Any dimension order, the root org unit, and filter dimensions (aggregated away)."""
    ou_ids = ([ROOT_OU] if root else []) + uids
    de_groups = [[d] for d in des] if "dx" not in filters else [des]
    pe_groups = [[(pp, pid)] for pp, pid in zip(pes, pe_ids)] if "pe" not in filters else [list(zip(pes, pe_ids))]
    rows: list[tuple] = []
    for dg in de_groups:
        for pg in pe_groups:
            per_de = []
            for de in dg:
                cols = []
                for (ptype, p), _ in pg:
                    col = [world.root_value(de, ptype, p)] if root else []
                    if districts:
                        col.extend(world.values(de, ptype, p, districts))
                    cols.append(col)
                if len(cols) == 1:
                    per_de.append(cols[0])
                else:
                    per_de.append([_time_agg(de, list(cells)) for cells in zip(*cols)])
            if len(per_de) == 1:
                combined = per_de[0]
            else:
                combined = []
                for cells in zip(*per_de):
                    got = [c for c in cells if c is not None]
                    combined.append(sum(got) if got else None)
            cell = {"dx": dg[0].id, "pe": pg[0][1]}
            if "ou" in filters:
                got = [v for v in combined if v is not None]
                if not got:
                    continue
                value = sum(got) / len(got) if dg[0].kind == "temp" else sum(got)
                rows.append((*[cell[n] for n in order], _fmt(value)))
            else:
                for u, v in zip(ou_ids, combined):
                    if v is not None:
                        cell["ou"] = u
                        rows.append((*[cell[n] for n in order], _fmt(v)))
    return rows
