"""A window chap will take after its 400 "All regions rejected due to missing values".

chap rejects an org unit when any covariate has a gap inside the input window, and answers 400
only when it rejected every org unit; with one complete org unit it accepts (and drops the rest).
The window's start is the configured model's; only its end can move. So the fix is the latest end
that leaves the most org units without a gap, while keeping the history the model needs: chap's
job fails with "Training data must cover at least two whole years" below that (seen on chap-core
2.5.1: 104 weeks fail, 105 work; the same for months). "End the window before the gap" alone can
land there when an early hole exists, which is why the end is computed, not guessed.

Pure: no I/O. Periods in chap's rows may be zero-padded (2024W03); they are parsed, not compared as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from .chap_models import Rejection
from .periods import Period, PeriodError, PeriodType, covering, parse_period

# The least input chap trains on: more than two whole years (chap-core 2.5.1's rule).
MIN_TRAINING_PERIODS: dict[PeriodType, int] = {
    PeriodType.DAY: 731,
    PeriodType.WEEK: 105,
    PeriodType.MONTH: 25,
    PeriodType.QUARTER: 9,
    PeriodType.YEAR: 3,
}


@dataclass(frozen=True)
class WindowFix:
    end: Period | None  # None: no end avoids the gaps with enough history
    org_units_kept: int
    org_units_rejected: int
    min_periods: int
    text: str  # the "What to do", with the launchpad YAML when there is an end


def launchpad_yaml(end: Period) -> str:
    """The run config that ends the window at ``end`` (its first day falls in it, so it is the period covering it)."""
    return (
        "ops:\n  probe_covariates:\n    config:\n      end_mode: fixed\n"
        f"      end_date: \"{end.start.isoformat()}\""
    )


def window_fix(
    rejection: Rejection,
    start: Period,
    end: Period,
    *,
    today: date,
    min_periods: int | None = None,
    names: Mapping[str, str] | None = None,
    model_id: str | None = None,
) -> WindowFix:
    """The latest end in ``start..end`` keeping the most org units free of gaps, with ``min_periods`` of history."""
    need = min_periods or MIN_TRAINING_PERIODS[start.type]
    how_need = "the model's minimum" if min_periods else "chap needs more than two whole years of training data"
    first_gap: dict[str, int] = {}  # org unit -> ordinal of its first gap inside the window
    for row in rejection.rejected:
        for pid in row.time_periods:
            try:
                p = parse_period(pid, start.type)
            except PeriodError:
                continue
            if start <= p <= end:
                first_gap[row.org_unit] = min(first_gap.get(row.org_unit, p.ordinal), p.ordinal)
    rejected = len({row.org_unit for row in rejection.rejected})
    lowest = start.ordinal + need - 1  # the earliest end with enough history
    best: tuple[int, int] | None = None  # (org units kept, end ordinal)
    for ordinal in sorted({g - 1 for g in first_gap.values()} | {end.ordinal}):
        if ordinal < lowest or ordinal > end.ordinal:
            continue
        kept = sum(1 for g in first_gap.values() if g > ordinal)
        if kept and (best is None or (kept, ordinal) > best):
            best = (kept, ordinal)
    if best is None:
        gaps = sorted(first_gap.values())
        where = f" (the first at {Period(start.type, gaps[0]).id})" if gaps else ""
        return WindowFix(
            None, 0, rejected, need,
            f"No end of the window avoids the gaps{where} and keeps {need} periods from the start {start.id} "
            f"({how_need}). Import the missing values into DHIS2 (and run analytics tables), or move the "
            "configured model's start period earlier in chap; then launch again.",
        )
    kept, ordinal = best
    fixed_end = Period(start.type, ordinal)
    back = covering(today, start.type).ordinal - ordinal
    dropped = sorted(ou for ou, g in first_gap.items() if g <= ordinal)
    shown = ", ".join(f"{names[o]} ({o})" if names and names.get(o) else o for o in dropped[:6])
    more = f" … ({len(dropped)} in all)" if len(dropped) > 6 else ""
    text = (
        f"End the window at {fixed_end.id}, the latest end before the gaps of {kept} of {rejected} org units that "
        f"still leaves {ordinal - start.ordinal + 1} periods from {start.id} ({how_need}: at least {need}). "
        f"Launch with this config (Launchpad, partition of this model):\n\n```yaml\n{launchpad_yaml(fixed_end)}\n```\n\n"
        + (f"From the command line: `chap-scheduler-run {model_id} --end-mode fixed --end-date "
           f"{fixed_end.start.isoformat()}`. " if model_id else "")
        + f"(`end_mode: offset`, `end_period_offset: {back}` ends there today, but moves with the calendar.) "
    )
    if dropped:
        text += f"chap will still drop the org units with earlier gaps: {shown}{more}. "
    text += (
        "chap names one covariate per org unit; if it rejects again, the next covariate has gaps too. "
        "For the latest data, import the missing values into DHIS2 and run analytics tables."
    )
    return WindowFix(fixed_end, kept, rejected, need, text)
