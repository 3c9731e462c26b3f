"""The input window of a run: from the configured model's start period to a resolved end.

``end_mode`` says how the end is chosen:
- ``calculated``: probe DHIS2 analytics for the freshest period in which every mapped
  data element has data (the minimum over covariates of each one's latest period);
- ``fixed``: the period covering ``end_date`` (even if still in progress);
- ``offset``: ``end_period_offset`` periods back from the one covering today (0 = current).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Literal, get_args

from .analytics_requests import AnalyticsBlock, plan_blocks
from .chap_models import PredictionSetup
from .dhis2_reader import ANALYTICS_PATH, Dhis2Reader
from .errors import CovariateDataMissing, InvalidRunConfig, SchedulerError
from .periods import (
    Period,
    PeriodError,
    PeriodType,
    covering,
    parse_period,
    period_range,
    period_type_of,
    periods_back,
    probe_keyword,
)

EndMode = Literal["calculated", "fixed", "offset"]
END_MODES: tuple[str, ...] = get_args(EndMode)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class WindowRequest:
    end_mode: EndMode
    end_date: date | None = None
    end_period_offset: int | None = None


def parse_window_request(end_mode: str, end_date: str | None, end_period_offset: int | None) -> WindowRequest:
    """Check the run-window config; every error names the field. No I/O."""
    if end_mode not in END_MODES:
        raise InvalidRunConfig("end_mode", f"{end_mode!r} is not one of {', '.join(END_MODES)}")
    parsed_date: date | None = None
    if end_date not in (None, ""):
        try:
            if not _ISO_DATE.fullmatch(str(end_date)):
                raise ValueError
            parsed_date = date.fromisoformat(str(end_date))
        except ValueError:
            raise InvalidRunConfig("end_date", f"{end_date!r} is not a date in YYYY-MM-DD form") from None
    if end_period_offset is not None and end_period_offset < 0:
        raise InvalidRunConfig("end_period_offset", f"must be 0 or more, got {end_period_offset}")
    if end_mode == "fixed" and parsed_date is None:
        raise InvalidRunConfig("end_date", "end_mode 'fixed' needs end_date (YYYY-MM-DD)")
    if end_mode == "offset" and end_period_offset is None:
        raise InvalidRunConfig("end_period_offset", "end_mode 'offset' needs end_period_offset (0 = current period)")
    return WindowRequest(end_mode, parsed_date, end_period_offset)  # type: ignore[arg-type]


@dataclass(frozen=True)
class InputWindow:
    start: Period
    end: Period
    periods: tuple[Period, ...]
    end_how: str

    @property
    def period_ids(self) -> list[str]:
        return [p.id for p in self.periods]


@dataclass(frozen=True)
class ProbeResult:
    end: Period
    keyword: str
    latest_by_covariate: dict[str, str]


def setup_period_type(setup: PredictionSetup) -> PeriodType:
    try:
        return period_type_of(setup.period_type or "")
    except PeriodError as exc:
        raise SchedulerError(
            f"configured model {setup.id} has period type {setup.period_type!r}: {exc}",
            hint="Only daily, weekly, monthly, quarterly and yearly configured models can be scheduled: "
            "recreate the configured model in chap with one of these period types.",
        ) from None


def setup_start(setup: PredictionSetup, period_type: PeriodType) -> Period:
    if not setup.start_period:
        raise SchedulerError(
            f"configured model {setup.id} has no start period in chap",
            hint="Recreate the configured model in chap from a dataset that has periods.",
        )
    try:
        return parse_period(setup.start_period, period_type)
    except PeriodError as exc:
        raise SchedulerError(
            f"configured model {setup.id} has start period {setup.start_period!r}, unusable: {exc}",
            hint="Fix the configured model in chap.",
        ) from None


def probe_latest_common_period(
    reader: Dhis2Reader,
    setup: PredictionSetup,
    period_type: PeriodType,
    *,
    max_url_bytes: int,
    concurrency: int,
) -> ProbeResult:
    """Ask DHIS2 for the latest period with data, per mapped data element, and take the minimum.

    Org units go in a ``filter`` so DHIS2 aggregates them away: the answer has one row
    per (data element, period), however many org units the model has.
    """
    keyword = probe_keyword(period_type)
    covariate_of = setup.data_element_covariates()
    empty = AnalyticsBlock((), ()).params(keyword, org_units_as_filter=True)
    blocks = plan_blocks(
        len(reader.url_for(ANALYTICS_PATH, empty)), list(covariate_of), setup.org_units, max_url_bytes=max_url_bytes
    )
    latest: dict[str, Period] = {}

    def merge(answer: dict) -> None:
        names = [h.get("name") for h in answer.get("headers", [])]
        if "dx" not in names or "pe" not in names:
            return
        dx, pe = names.index("dx"), names.index("pe")
        for row in answer.get("rows") or []:
            try:
                period = parse_period(row[pe], period_type)
            except (PeriodError, IndexError):
                continue
            element = row[dx]
            if element in covariate_of and (element not in latest or latest[element] < period):
                latest[element] = period

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(blocks)))) as pool:
        for answer in pool.map(lambda b: reader.analytics(b.params(keyword, org_units_as_filter=True)), blocks):
            merge(answer)

    missing = sorted({covariate_of[e] for e in covariate_of if e not in latest})
    if missing:
        elements = ", ".join(sorted(e for e in covariate_of if e not in latest))
        # An id DHIS2 does not have answers like a feed without data: both fixes are named.
        raise CovariateDataMissing(
            f"DHIS2 returned no data within {keyword} for covariate(s): {', '.join(missing)}",
            hint=f"If DHIS2 has no data element {elements} (`chap-scheduler-run check` tells), fix the covariate's "
            "data element in chap's configured model. Otherwise import the data into DHIS2 (and run analytics "
            "tables), or launch with end_mode 'fixed' or 'offset' ending at or before the last period that has "
            "data for it.",
        )
    end = min(latest.values())
    return ProbeResult(end=end, keyword=keyword, latest_by_covariate={covariate_of[e]: p.id for e, p in latest.items()})


def resolve_window(
    request: WindowRequest,
    setup: PredictionSetup,
    *,
    today: date,
    period_cap: int,
    probe: Callable[[PeriodType], ProbeResult],
) -> tuple[InputWindow, ProbeResult | None]:
    """Resolve the end, then check start <= end and the period cap (never truncating)."""
    period_type = setup_period_type(setup)
    start = setup_start(setup, period_type)
    probed: ProbeResult | None = None
    if request.end_mode == "fixed":
        assert request.end_date is not None
        end = covering(request.end_date, period_type)
        how = f"fixed: period covering {request.end_date.isoformat()}"
    elif request.end_mode == "offset":
        assert request.end_period_offset is not None
        end = periods_back(today, period_type, request.end_period_offset)
        how = f"offset: {request.end_period_offset} period(s) back from today ({today.isoformat()})"
    else:
        probed = probe(period_type)
        end = probed.end
        how = f"calculated: latest period with data for every covariate (probed {probed.keyword})"
    try:
        periods = period_range(start, end, period_cap)
    except PeriodError as exc:
        raise SchedulerError(
            f"input window {start.id}..{end.id} is not usable: {exc}",
            hint="Choose another end (end_mode fixed/offset), or change the configured model's start period in chap; "
            "over the cap, raise CHAP_SCHEDULER_PERIOD_CAP.",
        ) from None
    return InputWindow(start=start, end=end, periods=tuple(periods), end_how=how), probed


def row_estimate(data_elements: int, periods: int, org_units: int) -> int:
    return data_elements * periods * org_units

