"""Run window: config checks (no I/O), the freshness probe against respx, and resolution."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
import respx

from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
from chap_scheduler_dagster.core.errors import CovariateDataMissing, InvalidRunConfig, SchedulerError
from chap_scheduler_dagster.core.periods import PeriodType, parse_period
from chap_scheduler_dagster.core.run_window import (
    END_MODES,
    ProbeResult,
    WindowRequest,
    parse_window_request,
    probe_latest_common_period,
    resolve_window,
    row_estimate,
    setup_period_type,
)

from .core_fixtures import DHIS2, make_setup

TODAY = date(2026, 3, 18)  # ISO week 2026W12


def no_probe(period_type):  # noqa: ANN001, ANN201
    raise AssertionError("the probe must not run for this end mode")


# ---- parse_window_request ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (("fixed", None, None), "end_date", "needs end_date"),
        (("fixed", "", None), "end_date", "needs end_date"),
        (("offset", None, None), "end_period_offset", "needs end_period_offset"),
        (("offset", None, -1), "end_period_offset", "0 or more"),
        (("calculated", None, -3), "end_period_offset", "0 or more"),
        (("fixed", "2024-13-01", None), "end_date", "YYYY-MM-DD"),
        (("fixed", "15/01/2024", None), "end_date", "YYYY-MM-DD"),
        (("fixed", "yesterday", None), "end_date", "YYYY-MM-DD"),
        (("calculated", "2024-02-30", None), "end_date", "YYYY-MM-DD"),
        (("latest", None, None), "end_mode", "not one of calculated, fixed, offset"),
        (("", None, None), "end_mode", "not one of"),
    ],
)
def test_parse_window_request_errors_name_the_field_without_io(args, field, words):
    with respx.mock(assert_all_called=False) as mock:  # no routes: any HTTP would raise
        with pytest.raises(InvalidRunConfig) as info:
            parse_window_request(*args)
        assert mock.calls.call_count == 0
    assert info.value.field_name == field
    assert str(info.value).startswith(f"Invalid run config: {field}: ")
    assert words in str(info.value)
    assert "ops.probe_covariates.config" in info.value.hint


def test_parse_window_request_accepts_valid_config():
    assert END_MODES == ("calculated", "fixed", "offset")
    assert parse_window_request("calculated", None, None) == WindowRequest("calculated")
    assert parse_window_request("calculated", "", None) == WindowRequest("calculated")
    assert parse_window_request("fixed", "2024-06-15", None) == WindowRequest("fixed", date(2024, 6, 15))
    assert parse_window_request("offset", None, 0) == WindowRequest("offset", None, 0)


# ---- resolve_window: fixed and offset --------------------------------------------------------


def test_fixed_window():
    setup = make_setup(period_type="month", start_period="202101")
    window, probed = resolve_window(WindowRequest("fixed", date(2024, 6, 15)), setup, today=TODAY, period_cap=120,
                                    probe=no_probe)
    assert probed is None
    assert (window.start.id, window.end.id, len(window.periods)) == ("202101", "202406", 42)
    assert window.period_ids[:2] == ["202101", "202102"] and window.period_ids[-1] == "202406"
    assert "2024-06-15" in window.end_how and window.end_how.startswith("fixed")


@pytest.mark.parametrize(("offset", "end"), [(0, "2026W12"), (1, "2026W11"), (12, "2025W52")])
def test_offset_window_weekly(offset, end):
    setup = make_setup(period_type="week", start_period="2024W03")
    window, _ = resolve_window(WindowRequest("offset", None, offset), setup, today=TODAY, period_cap=200,
                               probe=no_probe)
    assert window.start.id == "2024W3"  # chap's padded startPeriod is accepted
    assert window.end.id == end
    assert window.periods[0] == parse_period("2024W03")
    assert len(window.periods) == len(set(window.period_ids))
    assert str(offset) in window.end_how and TODAY.isoformat() in window.end_how


def test_start_after_end_is_refused():
    setup = make_setup(period_type="month", start_period="202501")
    with pytest.raises(SchedulerError) as info:
        resolve_window(WindowRequest("fixed", date(2024, 6, 1)), setup, today=TODAY, period_cap=120, probe=no_probe)
    assert "202501..202406" in str(info.value)
    assert "after" in str(info.value)


def test_period_cap_exceeded_is_refused_not_truncated():
    setup = make_setup(period_type="month", start_period="201001")
    with pytest.raises(SchedulerError) as info:
        resolve_window(WindowRequest("fixed", date(2024, 6, 1)), setup, today=TODAY, period_cap=120, probe=no_probe)
    text = str(info.value) + " " + info.value.hint
    assert "CHAP_SCHEDULER_PERIOD_CAP" in text
    assert "174" in str(info.value) and "120" in str(info.value)
    window, _ = resolve_window(WindowRequest("fixed", date(2024, 6, 1)), setup, today=TODAY, period_cap=174,
                               probe=no_probe)
    assert len(window.periods) == 174


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"period_type": "any"}, "period type 'any'"),
        ({"period_type": None}, "period type None"),
        ({"start_period": None}, "no start period"),
        ({"start_period": "2024W03", "period_type": "month"}, "2024W03"),
    ],
)
def test_unusable_setup_is_explained(kwargs, words):
    setup = make_setup(**kwargs)
    with pytest.raises(SchedulerError) as info:
        resolve_window(WindowRequest("offset", None, 0), setup, today=TODAY, period_cap=120, probe=no_probe)
    assert words in str(info.value)
    assert info.value.hint


def test_setup_period_type_accepts_dhis2_names():
    assert setup_period_type(make_setup(period_type="Weekly")) is PeriodType.WEEK
    assert setup_period_type(make_setup(period_type="month")) is PeriodType.MONTH


def test_row_estimate():
    assert row_estimate(3, 60, 250) == 45_000


# ---- the probe ---------------------------------------------------------------------------------


def probe_answer(rows: list[list[str]]) -> dict:
    return {"headers": [{"name": "dx"}, {"name": "pe"}, {"name": "value"}], "rows": rows, "height": len(rows)}


@pytest.fixture
def reader():
    with Dhis2Reader(DHIS2, username="admin", password="district", sleep=lambda s: None) as r:
        yield r


WEEKLY = {"DE_RAIN": "rainfall", "DE_TEMP": "mean_temperature", "DE_CASES": "disease_cases"}


def test_probe_takes_min_over_covariates_weekly_unpadded(reader):
    setup = make_setup(period_type="week", start_period="2024W03", covariates=WEEKLY, org_units=["OU_A", "OU_B"])
    rows = [
        ["DE_RAIN", "2026W9", "3"], ["DE_RAIN", "2026W10", "4"], ["DE_RAIN", "2026W5", "1"],
        ["DE_TEMP", "2026W5", "20.5"], ["DE_TEMP", "2026W4", "21"],
        ["DE_CASES", "2026W11", "8"], ["DE_CASES", "garbage", "1"], ["DE_OTHER", "2025W1", "1"],
    ]
    with respx.mock(base_url=DHIS2) as mock:
        route = mock.get("/api/analytics").respond(json=probe_answer(rows))
        result = probe_latest_common_period(reader, setup, PeriodType.WEEK, max_url_bytes=8000, concurrency=4)
    assert route.call_count == 1
    params = route.calls.last.request.url.params
    assert params.get_list("dimension") == ["dx:DE_RAIN;DE_TEMP;DE_CASES", "pe:LAST_52_WEEKS"]
    assert params.get_list("filter") == ["ou:OU_A;OU_B"]
    assert result.keyword == "LAST_52_WEEKS"
    assert result.end.id == "2026W5"
    assert result.latest_by_covariate == {"rainfall": "2026W10", "mean_temperature": "2026W5",
                                          "disease_cases": "2026W11"}


@pytest.mark.parametrize(
    ("period_type", "start", "keyword", "rows", "end"),
    [
        ("month", "202101", "LAST_12_MONTHS", [["DE_RAIN", "202602", "1"], ["DE_TEMP", "202512", "1"]], "202512"),
        ("quarter", "2020Q1", "LAST_4_QUARTERS", [["DE_RAIN", "2025Q4", "1"], ["DE_TEMP", "2025Q3", "1"]], "2025Q3"),
        ("year", "2010", "LAST_10_YEARS", [["DE_RAIN", "2025", "1"], ["DE_TEMP", "2024", "1"]], "2024"),
        ("day", "20260101", "LAST_180_DAYS", [["DE_RAIN", "20260310", "1"], ["DE_TEMP", "20260301", "1"]],
         "20260301"),
    ],
)
def test_probe_keyword_per_period_type(reader, period_type, start, keyword, rows, end):
    setup = make_setup(period_type=period_type, start_period=start,
                       covariates={"DE_RAIN": "rainfall", "DE_TEMP": "mean_temperature"})
    with respx.mock(base_url=DHIS2) as mock:
        route = mock.get("/api/analytics").respond(json=probe_answer(rows))
        result = probe_latest_common_period(reader, setup, setup_period_type(setup), max_url_bytes=8000,
                                            concurrency=1)
    assert f"pe:{keyword}" in route.calls.last.request.url.params.get_list("dimension")
    assert result.end.id == end


def test_probe_missing_covariate_names_it_and_the_keyword(reader):
    setup = make_setup(period_type="week", start_period="2024W03", covariates=WEEKLY)
    with respx.mock(base_url=DHIS2) as mock:
        mock.get("/api/analytics").respond(json=probe_answer([["DE_RAIN", "2026W10", "1"],
                                                              ["DE_CASES", "2026W10", "1"]]))
        with pytest.raises(CovariateDataMissing) as info:
            probe_latest_common_period(reader, setup, PeriodType.WEEK, max_url_bytes=8000, concurrency=1)
    assert "mean_temperature" in str(info.value)
    assert "rainfall" not in str(info.value)
    assert "LAST_52_WEEKS" in str(info.value)
    assert "end_mode 'fixed' or 'offset'" in info.value.hint


def test_probe_with_no_rows_at_all(reader):
    setup = make_setup(period_type="month", start_period="202101")
    with respx.mock(base_url=DHIS2) as mock:
        mock.get("/api/analytics").respond(json={"headers": [{"name": "dx"}, {"name": "pe"}, {"name": "value"}]})
        with pytest.raises(CovariateDataMissing) as info:
            probe_latest_common_period(reader, setup, PeriodType.MONTH, max_url_bytes=8000, concurrency=1)
    assert "disease_cases, rainfall" in str(info.value)


def test_probe_split_over_blocks_merges_answers(reader):
    org_units = [f"OU{i:09d}" for i in range(300)]
    setup = make_setup(period_type="month", start_period="202101", org_units=org_units)
    latest = {"DE_RAIN": "202511", "DE_CASES": "202601"}

    def answer(request: httpx.Request) -> httpx.Response:
        ou = request.url.params["filter"].removeprefix("ou:").split(";")
        # each block sees data up to a different month; the first block has the latest rain
        first = ou[0] == org_units[0]
        rows = [["DE_RAIN", latest["DE_RAIN"] if first else "202509", "5"], ["DE_CASES", "202512", "2"]]
        if ou[-1] == org_units[-1]:
            rows.append(["DE_CASES", latest["DE_CASES"], "1"])
        return httpx.Response(200, json=probe_answer(rows))

    with respx.mock(base_url=DHIS2) as mock:
        route = mock.get("/api/analytics").mock(side_effect=answer)
        result = probe_latest_common_period(reader, setup, PeriodType.MONTH, max_url_bytes=1100, concurrency=3)
    assert route.call_count > 2
    assert max(len(str(c.request.url)) for c in route.calls) <= 1100
    sent = [o for c in route.calls for o in c.request.url.params["filter"].removeprefix("ou:").split(";")]
    assert sorted(sent) == sorted(org_units)
    assert result.latest_by_covariate == {"rainfall": "202511", "disease_cases": "202601"}
    assert result.end.id == "202511"


def test_calculated_window_uses_the_probe(reader):
    setup = make_setup(period_type="week", start_period="2024W03", covariates=WEEKLY)
    rows = [["DE_RAIN", "2026W5", "1"], ["DE_TEMP", "2026W7", "1"], ["DE_CASES", "2026W6", "1"]]
    seen: list[PeriodType] = []

    def probe(period_type: PeriodType) -> ProbeResult:
        seen.append(period_type)
        return probe_latest_common_period(reader, setup, period_type, max_url_bytes=8000, concurrency=2)

    with respx.mock(base_url=DHIS2) as mock:
        mock.get("/api/analytics").respond(json=probe_answer(rows))
        window, probed = resolve_window(WindowRequest("calculated"), setup, today=TODAY, period_cap=200, probe=probe)
    assert seen == [PeriodType.WEEK]
    assert probed is not None and probed.end.id == "2026W5"
    assert (window.start.id, window.end.id) == ("2024W3", "2026W5")
    assert window.period_ids[:3] == ["2024W3", "2024W4", "2024W5"]
    assert "2025W53" not in window.period_ids and "2026W1" in window.period_ids  # 2025 has 52 ISO weeks
    assert len(window.periods) == 50 + 52 + 5
    assert "LAST_52_WEEKS" in window.end_how and window.end_how.startswith("calculated")


@pytest.mark.parametrize("value", ["20240615", "2024-W24-6", "2024-6-15", " 2024-06-15"])
def test_end_date_must_be_yyyy_mm_dd(value):
    with pytest.raises(InvalidRunConfig) as info:
        parse_window_request("fixed", value, None)
    assert info.value.field_name == "end_date"
