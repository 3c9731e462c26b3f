"""RunReport: markdown for every outcome, and plain metadata."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from chap_scheduler_dagster.core.chap_models import ChapApi, ChapSystemInfo, PredictionSetup
from chap_scheduler_dagster.core.dhis2_fetch import FetchResult
from chap_scheduler_dagster.core.dhis2_reader import Dhis2SystemInfo

from chap_scheduler_dagster.core.errors import (
    ChapRejected,
    Dhis2Unreachable,
    InvalidRunConfig,
    Rejection,
    SchedulerError,
)
from chap_scheduler_dagster.core.periods import parse_period, period_range
from chap_scheduler_dagster.core.report import ChapSystem, PredictionOutcome, RunReport, Unreachable
from chap_scheduler_dagster.core.run_window import InputWindow

STEPS = ("probe_covariates", "fetch_analytics", "submit_prediction", "await_prediction")
T0 = datetime(2026, 11, 22, 6, 0, 0, tzinfo=UTC)


SETUP = PredictionSetup(
    id=3, name="Monthly dengue", periodType="month", orgUnits=[f"OU_{i}" for i in range(142)],
    configuredModel={"name": "naive_model", "modelTemplate": {"displayName": "Naive"}},
    covariateSources=[{"covariate": "rainfall", "dataElementId": "DE_RAIN"},
                      {"covariate": "disease_cases", "dataElementId": "DE_CASES"}],
)


def fetched(**kw) -> FetchResult:
    """What fetch_analytics learned; every figure zero unless given."""
    figures = dict(body_path=Path("body.json"), body_bytes=0, row_estimate=0, analytics_rows=0, observations=0,
                   features=0, dropped={}, org_units_without_geometry=[], analytics_requests=0, org_unit_requests=0,
                   longest_url=0)
    return FetchResult(**(figures | kw))


def base_report(**kw) -> RunReport:
    r = RunReport(setup_id="3", dhis2_url="https://dhis2.example.org", location="sierra_leone", run_id="abc-123",
                  started_at=T0, setup=SETUP, **kw)
    # As the probe reads them: DHIS2's /api/system/info, chap's system info and the API its listing found.
    r.dhis2_system = Dhis2SystemInfo.model_validate(
        {"version": "2.41.3", "serverDate": "2026-11-22T06:00:00", "systemName": "SL HMIS"})
    r.chap_system = ChapSystem(ChapSystemInfo(chap_core_version="2.5.1"), ChapApi.PREDICTION_SETUPS)
    return r


def succeeded() -> RunReport:
    r = base_report()
    start, end = parse_period("202101"), parse_period("202412")
    r.end_mode = "calculated"
    r.window = InputWindow(start, end, tuple(period_range(start, end, 100)),
                           "calculated: latest period with data for every covariate (probed LAST_12_MONTHS)")
    r.latest_by_covariate = {"rainfall": "202412", "disease_cases": "202501"}
    r.fetch = fetched(row_estimate=13_632, analytics_rows=12_345, observations=12_001,
                      dropped={"empty or non-numeric value": 344}, analytics_requests=3, longest_url=7_912,
                      body_bytes=2_345_678)
    r.n_periods, r.n_periods_how = 3, "CHAP_SCHEDULER_HORIZON_MONTH=3"
    r.job_id, r.prediction_id = "5f0c-job", 17
    r.prediction = PredictionOutcome(values=2_130, periods=["202501", "202502", "202503"],
                                     median_by_period={"202501": 1234.5, "202502": 20_000.04, "202503": 0.0})
    r.succeed(today=date(2025, 1, 15))  # every predicted period still ahead: a plain success
    r.finished_at = T0 + timedelta(minutes=2, seconds=5.5)
    return r


def test_success_markdown():
    md = succeeded().markdown()
    assert md.startswith("# Run report: Monthly dengue\n")
    assert "- **Status:** SUCCEEDED" in md
    assert "FAILED" not in md and "**Error:**" not in md
    assert "- **Duration:** 2m 05.5s" in md
    assert "- **Dagster run:** `abc-123`" in md
    assert "- **Instance:** `https://dhis2.example.org` (sierra_leone)" in md
    assert "- **Version:** 2.41.3 (SL HMIS)" in md
    assert "- **Version:** 2.5.1 (API: prediction-setups)" in md
    assert "- **Window:** 202101 .. 202412 (48 periods)" in md
    assert "- **Latest period with data:** disease_cases 202501, rainfall 202412" in md
    assert "- **Analytics rows fetched:** 12,345" in md
    assert "- **Observations sent to chap:** 12,001" in md
    assert "- **Rows dropped — empty or non-numeric value:** 344" in md
    assert "- **Analytics requests:** 3 (longest URL 7,912 bytes)" in md
    assert "- **Request body:** 2.3 MB" in md
    assert "- **Periods predicted (nPeriods):** 3 — CHAP_SCHEDULER_HORIZON_MONTH=3" in md
    assert "- **Job:** `5f0c-job`" in md
    assert "- **Prediction id:** 17" in md
    assert "- **Prediction values:** 2,130" in md
    assert "- **Predicted periods:** 202501, 202502, 202503" in md
    assert "| period | median forecast, summed over org units |" in md
    table = md[md.index("| period |"):].splitlines()
    assert table[2:5] == ["| 202501 | 1,234.5 |", "| 202502 | 20,000.0 |", "| 202503 | 0.0 |"]


def test_many_predicted_periods_are_abbreviated():
    r = succeeded()
    assert r.prediction is not None
    r.prediction.periods = [f"2027W{i}" for i in range(1, 13)]
    assert "- **Predicted periods:** 2027W1..2027W12 (12 periods)" in r.markdown()


@pytest.mark.parametrize("step", STEPS)
def test_failure_markdown_at_each_step(step):
    r = base_report()
    r.fail(step, SchedulerError("chap-core is down", hint="Start chap-core."))
    md = r.markdown()
    assert f"- **Status:** FAILED at `{step}`" in md
    assert "- **Error:** `chap-core is down`" in md
    assert "- **What to do:** Start chap-core." in md
    assert r.status == "failed" and r.failed_step == step and r.finished_at is not None


def test_failure_with_a_plain_exception_names_its_type():
    r = base_report()
    r.fail("fetch_analytics", ValueError("boom"))
    assert r.error == "ValueError: boom"
    assert r.hint is None
    md = r.markdown()
    assert "`ValueError: boom`" in md
    assert "What to do" not in md
    r2 = base_report()
    r2.fail("submit_prediction", KeyError())
    assert r2.error == "KeyError: KeyError"


def test_invalid_config_before_anything_was_contacted():
    r = RunReport(setup_id="9", dhis2_url="https://dhis2.example.org")
    r.fail("probe_covariates", InvalidRunConfig("end_date", "end_mode 'fixed' needs end_date (YYYY-MM-DD)"))
    md = r.markdown()
    assert "# Run report: configured model 9" in md
    assert "FAILED at `probe_covariates`" in md
    assert "Invalid run config: end_date" in md
    assert md.count("- not contacted") == 2
    assert "## Input window" not in md and "## Prediction" not in md


def test_long_or_multiline_error_goes_in_a_code_block():
    r = base_report()
    r.fail("await_prediction", SchedulerError("chap job j1 ended FAILURE: Traceback\n  line 1\nValueError: x"))
    md = r.markdown()
    assert "```\nchap job j1 ended FAILURE: Traceback\n  line 1\nValueError: x\n```" in md


def test_dhis2_not_reachable():
    r = RunReport(setup_id="3", dhis2_url="https://dhis2.example.org")
    exc = Dhis2Unreachable("could not reach DHIS2 at https://dhis2.example.org: ConnectError: refused",
                           hint="Check DHIS2_BASE_URL.")
    r.dhis2_system = Unreachable(str(exc))
    r.fail("probe_covariates", exc)
    md = r.markdown()
    assert "- **NOT REACHABLE:** `could not reach DHIS2 at https://dhis2.example.org: ConnectError: refused`" in md
    assert "- **What to do:** Check DHIS2_BASE_URL." in md
    chap_section = md[md.index("## chap-core"):]
    assert "- not contacted" in chap_section.split("##")[1]


def test_the_systems_render_from_what_the_probe_read():
    r = RunReport(setup_id="3", dhis2_url="https://dhis2.example.org")
    assert r.markdown().count("- not contacted") == 2
    r.dhis2_system = Dhis2SystemInfo.model_validate({"version": "2.40.1"})  # no name, no server time
    r.chap_system = ChapSystem(ChapSystemInfo(chap_core_version="2.5.1"))  # its listing failed: no API known
    assert ("- **Instance:** `https://dhis2.example.org`\n- **Version:** 2.40.1\n\n"
            "## chap-core\n\n- **Version:** 2.5.1 (API: unknown)\n") in r.markdown()
    assert "- **Server time:** 2026-11-22T06:00:00\n" in base_report().markdown()


def test_chap_not_reachable():
    r = base_report()
    r.chap_system = Unreachable("DHIS2 has no usable route 'chap' (Route chap not found)")
    r.fail("probe_covariates", SchedulerError(r.chap_system.error))
    md = r.markdown()
    section = md[md.index("## chap-core"):md.index("## Configured model")]
    assert "NOT REACHABLE:** `DHIS2 has no usable route 'chap'" in section


def rejection_exc(rows: list[dict]) -> ChapRejected:
    detail = {"message": "All regions rejected due to missing values", "imported_count": 0, "rejected": rows}
    rejection = Rejection.from_detail(detail)
    assert rejection is not None
    return ChapRejected("POST", "/v1/crud/prediction-setups/3/run", 400, detail, rejection)


def test_rejection_grouped_by_covariate():
    reason = "Missing value for some/all time periods"
    rows = [{"reason": reason, "orgUnit": f"OU_{i}", "featureName": "rainfall",
             "timePeriods": [f"2024{m:02d}" for m in range(i + 1, 8)]} for i in range(3)]
    rows += [{"reason": reason, "orgUnit": "OU_9", "featureName": "mean_temperature", "timePeriods": ["202406"]},
             {"reason": reason, "orgUnit": "OU_8", "featureName": "mean_temperature",
              "timePeriods": ["202406", "202405"]}]
    r = base_report()
    r.fail("submit_prediction", rejection_exc(rows))
    md = r.markdown()
    assert "- **Status:** FAILED at `submit_prediction`" in md
    assert "- **Error:** chap rejected the prediction: All regions rejected due to missing values (imported 0)" in md
    assert "- **Rejected cells (grouped by covariate):**" in md
    assert f"  - `rainfall`: 3 org units; periods affected: 202401..202407 (7 periods) — {reason}" in md
    assert f"  - `mean_temperature`: 2 org units; periods affected: 202405, 202406 — {reason}" in md
    assert md.index("`mean_temperature`") < md.index("`rainfall`")  # sorted by covariate
    assert "Import the missing values" in md
    assert r.rejection is not None and len(r.rejection.rejected) == 5


def test_rejection_weekly_periods_in_calendar_order():
    rows = [{"reason": "r", "orgUnit": "OU_A", "featureName": "rainfall",
             "timePeriods": [f"2024W{w}" for w in range(1, 13)]}]
    r = base_report()
    r.fail("submit_prediction", rejection_exc(rows))
    assert "periods affected: 2024W1..2024W12 (12 periods)" in r.markdown()


def test_rejection_periods_padded_by_chap_are_shown_as_dhis2_ids():
    rows = [{"reason": "r", "orgUnit": "OU_A", "featureName": "rainfall", "timePeriods": ["2024W03", "2024W10"]},
            {"reason": "r", "orgUnit": "OU_B", "featureName": "rainfall", "timePeriods": ["2024W3"]}]
    r = base_report()
    r.fail("submit_prediction", rejection_exc(rows))
    assert "`rainfall`: 2 org units; periods affected: 2024W3, 2024W10 —" in r.markdown()


def test_metadata_is_plain_and_complete():
    for report in (succeeded(), RunReport(setup_id="3", dhis2_url="u")):
        meta = report.metadata()
        assert all(v is not None for v in meta.values())
        assert all(isinstance(v, (str, int, float)) for v in meta.values())
        assert {"status", "failed_step", "prediction_id", "error", "configured_model_id",
                "duration_seconds"} <= set(meta)
    meta = succeeded().metadata()
    assert (meta["status"], meta["failed_step"], meta["prediction_id"]) == ("succeeded", "", 17)
    assert meta["window"] == "202101..202412"
    assert meta["analytics_rows"] == 12_345
    assert meta["duration_seconds"] == 125.5
    failed = base_report()
    failed.fail("fetch_analytics", SchedulerError("x"))
    meta = failed.metadata()
    assert (meta["status"], meta["failed_step"], meta["prediction_id"], meta["error"]) == (
        "failed", "fetch_analytics", "", "x")
    assert "input_periods" not in meta


def test_markdown_survives_partial_figures():
    r = base_report()
    r.fetch = fetched(analytics_rows=10, analytics_requests=2, org_units_without_geometry=[f"OU_{i}" for i in range(10)])
    r.prediction = PredictionOutcome(values=0, periods=[], median_by_period={}, org_units_dropped_by_chap=["OU_3"])
    r.job_id = "j"
    r.fail("fetch_analytics", SchedulerError("x"))
    md = r.markdown()
    assert "- **Analytics requests:** 2" in md
    assert "OU_0, OU_1, OU_2, OU_3, OU_4, OU_5, OU_6, OU_7 … (10 in all)" in md
    assert "- **Org units chap silently dropped:** 1 — OU_3" in md
