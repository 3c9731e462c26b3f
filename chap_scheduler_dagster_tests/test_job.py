"""The prediction job end to end in process, against a respx DHIS2 with chap behind its route."""

from datetime import date

import dagster as dg
import orjson
import pytest
import respx

from chap_scheduler_dagster.core.periods import PeriodType, covering
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.settings import get_settings

from .fake_dhis2 import BASE, NO_GEOMETRY, ORG_UNITS, PASSWORD, USER, FakeDhis2


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(configured_models_partitions.name, ["7"])
        yield inst


def run_job(instance, fake: FakeDhis2, window: dict | None = None, password: str = PASSWORD):
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        result = dhis2_chap_prediction.execute_in_process(
            partition_key="7",
            instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=BASE, username=USER, password=password)},
            run_config={"ops": {"probe_covariates": {"config": window or {}}}},
            raise_on_error=False,
        )
    records = instance.fetch_materializations(report_asset_key, limit=10).records
    assert [r.run_id for r in records] == [result.run_id], "exactly one report per run"
    m = records[0].asset_materialization
    assert m.asset_key == report_asset_key and m.partition == "7"
    text = m.metadata["report"].value
    assert PASSWORD not in text
    return result, text, {k: v.value for k, v in m.metadata.items()}


def failed_step(result) -> str:
    failures = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    return failures[0]


def test_monthly_happy_path(instance):
    fake = FakeDhis2(period_type=PeriodType.MONTH, start_period="202201")
    result, text, meta = run_job(instance, fake)
    assert result.success
    last_complete = covering(date.today(), PeriodType.MONTH).shift(-1)
    end = last_complete.shift(-1)  # mean_temperature lags one month: the probe takes the minimum
    assert f"**Window:** 202201 .. {end.id}" in text
    assert "- **Status:** SUCCEEDED" in text
    assert meta["status"] == "succeeded" and meta["prediction_id"] == 42 and meta["failed_step"] == ""
    body = orjson.loads(fake.posted_bodies[0])
    assert set(body) == {"name", "nPeriods", "type", "geojson", "providedData"}
    assert body["nPeriods"] == get_settings().horizon_month == 3
    assert {f["id"] for f in body["geojson"]["features"]} == set(ORG_UNITS)
    assert NO_GEOMETRY in text  # reported as an org unit chap cannot use
    assert {o["featureName"] for o in body["providedData"]} == {"disease_cases", "rainfall", "mean_temperature"}
    assert max(o["period"] for o in body["providedData"]) <= end.id
    assert "Prediction id:** 42" in text
    assert fake.post_calls == 1


def test_weekly_ids_unpadded_across_year_boundary(instance):
    # Weeks 1-9 and the year boundary: a fixed end in early January, weekly start in the previous year.
    fake = FakeDhis2(period_type=PeriodType.WEEK, start_period="2023W40", today=date(2025, 2, 20), lag={})
    result, text, meta = run_job(instance, fake, {"end_mode": "fixed", "end_date": "2025-02-20"})
    assert result.success, text
    body = orjson.loads(fake.posted_bodies[0])
    periods = {o["period"] for o in body["providedData"]}
    assert {"2024W1", "2024W9", "2024W52", "2025W1", "2025W7"} <= periods
    assert not any("W0" in p for p in periods)  # never zero-padded towards DHIS2
    assert "2023W40 .. 2025W8" in text
    assert meta["input_periods"] == 73
    # chap answers with padded ids; the report speaks DHIS2 (unpadded)
    assert "2025W9" in text and "2025W09" not in text


def test_yearly_offset(instance):
    fake = FakeDhis2(period_type=PeriodType.YEAR, start_period="2015", lag={})
    result, text, meta = run_job(instance, fake, {"end_mode": "offset", "end_period_offset": 1})
    assert result.success, text
    last_year = str(date.today().year - 1)
    assert f"2015 .. {last_year}" in text
    assert orjson.loads(fake.posted_bodies[0])["nPeriods"] == 1


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"end_mode": "fixed"}, "end_date"),
        ({"end_mode": "offset", "end_period_offset": -1}, "end_period_offset"),
        ({"end_mode": "fixed", "end_date": "2024-13-45"}, "end_date"),
        ({"end_mode": "offset"}, "end_period_offset"),
    ],
)
def test_invalid_window_config_fails_before_any_http_with_a_report(instance, window, field):
    fake = FakeDhis2()
    with respx.mock(assert_all_called=False) as router:
        route = fake.install(router)
        result = dhis2_chap_prediction.execute_in_process(
            partition_key="7", instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=BASE, username=USER, password=PASSWORD)},
            run_config={"ops": {"probe_covariates": {"config": window}}}, raise_on_error=False,
        )
        assert route.calls.call_count == 0
    assert not result.success
    assert failed_step(result) == "probe_covariates"
    report = instance.get_latest_materialization_event(report_asset_key).asset_materialization
    text = report.metadata["report"].value
    assert f"Invalid run config: {field}" in text and "FAILED at `probe_covariates`" in text


def test_dhis2_down(instance):
    result, text, meta = run_job(instance, FakeDhis2(dhis2_down=True))
    assert failed_step(result) == "probe_covariates"
    assert "could not reach DHIS2 at http://dhis2.test" in text and "NOT REACHABLE" in text
    assert meta["status"] == "failed"


@pytest.mark.parametrize("switch", ["wrong_password", "login_page"])
def test_dhis2_auth_failure_names_user_not_password(instance, switch):
    result, text, meta = run_job(instance, FakeDhis2(**{switch: True}))
    assert failed_step(result) == "probe_covariates"
    assert "DHIS2 authentication failed for user 'admin' at http://dhis2.test" in text
    assert "DHIS2_PASSWORD" in text  # the fix names the variable, never its value


def test_chap_down(instance):
    result, text, _ = run_job(instance, FakeDhis2(chap_down=True))
    assert failed_step(result) == "probe_covariates"
    assert "chap-core did not answer" in text
    assert "## chap-core\n\n- **NOT REACHABLE:**" in text


def test_covariate_without_data_names_it(instance):
    fake = FakeDhis2(lag={"rainfall": 40})
    result, text, _ = run_job(instance, fake)
    assert failed_step(result) == "probe_covariates"
    assert "no data within LAST_12_MONTHS for covariate(s): rainfall" in text


def test_row_budget_refusal(instance, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_ROW_BUDGET", "100")
    get_settings.cache_clear()
    result, text, meta = run_job(instance, FakeDhis2())
    assert failed_step(result) == "fetch_analytics"
    assert "CHAP_SCHEDULER_ROW_BUDGET" in text and "over the budget of 100" in text


def test_chap_rejection_grouped_by_covariate(instance):
    fake = FakeDhis2(reject_all=True)
    result, text, meta = run_job(instance, fake)
    assert failed_step(result) == "submit_prediction"
    assert "All regions rejected due to missing values" in text
    assert "`rainfall`: 3 org units; periods affected: 202406, 202407" in text
    assert fake.post_calls == 1


def test_job_failure_reports_chap_error_and_never_reads_results(instance):
    fake = FakeDhis2(job_outcome="FAILURE")
    result, text, meta = run_job(instance, fake)
    assert failed_step(result) == "await_prediction"
    assert "ended FAILURE: Training data must cover at least two whole years" in text
    assert meta["job_id"] == "job-1" and meta["prediction_id"] == ""


def test_job_timeout(instance, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS", "0.2")
    get_settings.cache_clear()
    result, text, _ = run_job(instance, FakeDhis2(job_outcome="HANG"))
    assert failed_step(result) == "await_prediction"
    assert "did not finish within 0.2 s (last status: STARTED)" in text
    assert "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS" in text


def test_partial_rejection_reports_dropped_org_units(instance):
    fake = FakeDhis2(drop_org_unit=ORG_UNITS[1])
    result, text, _ = run_job(instance, fake)
    assert result.success
    assert f"Org units chap silently dropped:** 1 — {ORG_UNITS[1]}" in text


def test_unknown_configured_model(instance):
    fake = FakeDhis2(setup_id=8)
    result, text, _ = run_job(instance, fake)
    assert failed_step(result) == "probe_covariates"
    assert "chap has no configured model with id 7; it has [8]" in text
    assert "## chap-core\n\n- **Version:** 2.5.1 (API: prediction-setups)" in text  # reachable, not "NOT REACHABLE"


def test_request_body_is_spooled_where_configured_and_removed(instance, monkeypatch, tmp_path):
    monkeypatch.setenv("CHAP_SCHEDULER_SPOOL_DIR", str(tmp_path))
    get_settings.cache_clear()
    seen: list[list[str]] = []
    fake = FakeDhis2()
    original = fake._chap

    def spy(request, path):
        if request.method == "POST":
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return original(request, path)

    fake._chap = spy
    result, text, _ = run_job(instance, fake)
    assert result.success, text
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith("chap-body-7-")
    assert list(tmp_path.iterdir()) == []  # removed after the POST
