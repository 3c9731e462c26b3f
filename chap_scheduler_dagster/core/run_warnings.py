"""``succeeded with warnings``: a run that produced a forecast the operator should not take at face value.

A prediction that covers fewer org units than configured, forecasts periods that are already over,
comes back with fewer periods than asked, or whose publishing warned, is not a plain success.
Every view (report, overview, CLI line, run tag) reads the status this module decides, so they agree.
Pure: no Dagster, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING

from .periods import PeriodError, covering, parse_period

if TYPE_CHECKING:
    from .report import RunReport

SUCCEEDED = "succeeded"
SUCCEEDED_WITH_WARNINGS = "succeeded with warnings"
# Both are successes: the forecast exists (notifications, last success, unchanged-input skips).
SUCCESS_STATUSES = frozenset({SUCCEEDED, SUCCEEDED_WITH_WARNINGS})


def is_success(status: object) -> bool:
    return str(status or "") in SUCCESS_STATUSES


def named(ids: list[str], names: Mapping[str, str], limit: int = 8) -> str:
    """``Name (id)`` for each org unit whose name is known, cut after ``limit``."""
    shown = [f"{names[i]} ({i})" if names.get(i) else i for i in ids[:limit]]
    text = ", ".join(shown)
    return text if len(ids) <= limit else f"{text} … ({len(ids)} in all)"


def run_warnings(report: RunReport, today: date) -> list[str]:
    """What the operator should know about a successful run, one plain sentence each ([] = plain success)."""
    out: list[str] = []
    names = report.org_unit_names
    total = report.org_unit_count
    of = f" of {total}" if total else ""
    if report.org_units_without_geometry:
        n = len(report.org_units_without_geometry)
        out.append(
            f"{n}{of} org units have no geometry in DHIS2 and were not sent to chap (no forecast for them): "
            f"{named(report.org_units_without_geometry, names)} — add their boundaries in DHIS2 (Maintenance → "
            "Organisation units) and run again"
        )
    if report.org_units_dropped_by_chap:
        n = len(report.org_units_dropped_by_chap)
        out.append(
            f"chap dropped {n}{of} org units for missing covariate values (no forecast for them): "
            f"{named(report.org_units_dropped_by_chap, names)} — import the missing values into DHIS2 "
            "(and run analytics tables), then run again"
        )
    past = _past_periods(report.predicted_periods, report.period_type, today)
    if past:
        out.append(
            f"{len(past)} of {len(report.predicted_periods)} predicted periods are already over on {today.isoformat()} "
            f"({', '.join(past)}): the input window ends too early — DHIS2's latest data is old, or end_mode "
            "fixed/offset ends it before the latest period with data"
        )
    if report.n_periods is not None and report.predicted_periods and len(report.predicted_periods) < report.n_periods:
        out.append(
            f"chap returned {len(report.predicted_periods)} periods, fewer than the {report.n_periods} asked (nPeriods)"
        )
    publish = report.publish
    if publish is not None:
        out += [f"publishing: {w}" for w in publish.warnings]
        out += [f"publishing preflight: {f.message}" for f in publish.findings if f.level == "warning"]
    return out


def warning_summary(report: RunReport, today: date) -> str:
    """The same facts in a few words, for one table cell ("1 org unit without geometry, 2 dropped by chap")."""
    parts: list[str] = []
    if n := len(report.org_units_without_geometry):
        parts.append(f"{n} org unit{'s' if n > 1 else ''} without geometry")
    if n := len(report.org_units_dropped_by_chap):
        parts.append(f"{n} org unit{'s' if n > 1 else ''} dropped by chap")
    if past := _past_periods(report.predicted_periods, report.period_type, today):
        parts.append(f"{len(past)} predicted period{'s' if len(past) > 1 else ''} already over")
    if report.n_periods is not None and report.predicted_periods and len(report.predicted_periods) < report.n_periods:
        parts.append(f"{len(report.predicted_periods)} of {report.n_periods} periods")
    publish = report.publish
    if publish is not None and (n := len(publish.warnings) + sum(1 for f in publish.findings if f.level == "warning")):
        parts.append(f"{n} publishing warning{'s' if n > 1 else ''}")
    return ", ".join(parts)


def _past_periods(periods: list[str], period_type: str | None, today: date) -> list[str]:
    if not periods or not period_type:
        return []
    try:
        current = covering(today, period_type)
        return [p for p in periods if parse_period(p, current.type) < current]
    except PeriodError:
        return []
