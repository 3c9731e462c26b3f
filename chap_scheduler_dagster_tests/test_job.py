"""The prediction job in process against the sandbox over real loopback HTTP: each period type, the
legacy chap API, national size, and a failure at each step, each checking the report."""

from datetime import date

import orjson
import pytest

from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.settings import get_settings
from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox import periods as P
from dhis2_sandbox.world import DE_CASES, DE_PRED_LOW

PASSWORD = "district"
MAX_URL = 8000
RUN_PATH = "/api/routes/chap/run"


class Chap:
    """What the sandbox's chap stand-in was sent: every request body it handled, in order."""

    def __init__(self, sb: Sandbox):
        self.calls: list[tuple[str, str, bytes]] = []
        handle = sb.chap.handle

        def spy(method, path, query, body):
            self.calls.append((method, path, bytes(body)))
            return handle(method, path, query, body)

        sb.chap.handle = spy

    @property
    def posted_bodies(self) -> list[bytes]:
        return [body for method, _, body in self.calls if method == "POST"]


@pytest.fixture
def sb():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sandbox:
        sandbox.chap_calls = Chap(sandbox)
        yield sandbox


def run_job(instance, sb: Sandbox, key: str = "1", window: dict | None = None, *, password: str = PASSWORD,
            base_url: str | None = None):
    instance.add_dynamic_partitions(configured_models_partitions.name, [key])
    result = dhis2_chap_prediction.execute_in_process(
        partition_key=key,
        instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=base_url or sb.base_url, username="admin", password=password)},
        run_config={"ops": {"probe_covariates": {"config": window or {}}}},
        raise_on_error=False,
    )
    records = instance.fetch_materializations(report_asset_key, limit=10).records
    assert [r.run_id for r in records] == [result.run_id], "exactly one report per run"
    m = records[0].asset_materialization
    assert m.asset_key == report_asset_key and m.partition == key
    text = m.metadata["report"].value
    assert password not in text
    return result, text, {k: v.value for k, v in m.metadata.items()}


def month(today: date, shift: int) -> str:
    """The id of the month ``shift`` months from the one ``today`` is in, by the sandbox's own period
    arithmetic (not the package's: an expectation computed with the code under test shares its bugs)."""
    return P.format_id("month", P.index_of("month", today) + shift)


def failed_step(result) -> str:
    failures = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    return failures[0]


def test_monthly_happy_path(instance, sb):
    setup = sb.chap.setups[1]
    result, text, meta = run_job(instance, sb, "1")
    assert result.success, text
    end = month(sb.world.today, -3)  # last complete month, less mean_temperature's lag of two: the minimum
    assert f"**Window:** {setup['startPeriod']} .. {end}" in text
    # A forecast, but not for every org unit and partly for months already over: not a plain success.
    assert "- **Status:** SUCCEEDED WITH WARNINGS" in text
    [prediction] = sb.chap.predictions.values()
    assert meta["status"] == "succeeded with warnings" and meta["prediction_id"] == prediction["id"]
    assert meta["failed_step"] == "" and meta["warnings"] == 3
    dropped = sorted(set(setup["orgUnits"]) - set(prediction["orgUnits"]) - {sb.world.no_geometry_ou})
    assert len(dropped) == 2
    for ou in [sb.world.no_geometry_ou, *dropped]:  # named, with the id
        assert f"{sb.world.ou_name(ou)} ({ou})" in meta["warnings_text"]
    past = [month(sb.world.today, -2), month(sb.world.today, -1)]  # the lag leaves two of the three forecast months in the past
    assert f"2 of 3 predicted periods are already over on {sb.world.today.isoformat()} ({', '.join(past)})" in text
    [posted] = sb.chap_calls.posted_bodies
    body = orjson.loads(posted)
    assert set(body) == {"name", "nPeriods", "type", "geojson", "providedData"}
    assert body["nPeriods"] == get_settings().horizon_month == 3
    with_geometry = set(setup["orgUnits"]) - {sb.world.no_geometry_ou}
    assert {f["id"] for f in body["geojson"]["features"]} == with_geometry
    assert sb.world.no_geometry_ou in text  # reported as an org unit chap cannot use
    assert {o["featureName"] for o in body["providedData"]} == {c["covariate"] for c in setup["covariateSources"]}
    assert max(o["period"] for o in body["providedData"]) == end  # YYYYMM ids sort as months
    assert f"Prediction id:** {prediction['id']}" in text


def test_weekly_ids_unpadded_across_year_boundary(instance):
    # Weeks 1-9 and two year boundaries: a weekly start in 2023 (chap wants 105 weeks at least)
    # and a fixed end in February 2025.
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1, today=date(2025, 2, 20))) as sb:
        chap = Chap(sb)
        sb.chap.add_setup(sb.chap.setups[2] | {"startPeriod": "2023W01"})
        # 2025-02-06 is in 2025W6, the last week the lagging mean temperature has data for.
        result, text, meta = run_job(instance, sb, "2", {"end_mode": "fixed", "end_date": "2025-02-06"})
    assert result.success, text
    body = orjson.loads(chap.posted_bodies[0])
    periods = {o["period"] for o in body["providedData"]}
    assert {"2023W1", "2024W1", "2024W9", "2024W52", "2025W1", "2025W6"} <= periods
    assert not any("W0" in p for p in periods)  # never zero-padded towards DHIS2
    assert "2023W1 .. 2025W6" in text
    assert meta["input_periods"] == 110
    # chap answers with padded ids (2025W07); the report speaks DHIS2 (unpadded)
    assert "2025W7" in text and "2025W07" not in text


def test_yearly_offset(instance, sb):
    start = sb.chap.setups[4]["startPeriod"]
    result, text, meta = run_job(instance, sb, "4", {"end_mode": "offset", "end_period_offset": 1})
    assert result.success, text
    last_year = str(sb.world.today.year - 1)
    assert f"{start} .. {last_year}" in text
    assert orjson.loads(sb.chap_calls.posted_bodies[0])["nPeriods"] == 1


def test_national_model_every_url_under_8kb(instance):
    # 1,000 districts, 5 covariates, 60 months: ~300k analytics rows. The sandbox answers 414 to any
    # request line over 8,000 bytes, as a stock nginx or Tomcat in front of DHIS2 would.
    with Sandbox(SandboxConfig(port=0, org_units=1000, months=74, max_url_length=MAX_URL, job_seconds=0.2)) as sb:
        result, text, meta = run_job(instance, sb, "5", {"end_mode": "offset", "end_period_offset": 3})
        urls = [len(sb.base_url) + len(path) for method, path, _ in sb.requests if method == "GET"]
        analytics = [path for method, path, _ in sb.requests if path.startswith("/api/analytics")]
    assert result.success, text
    assert max(urls) <= MAX_URL
    assert len(analytics) >= 15  # split by URL length and by rows per request
    assert meta["input_periods"] == 60
    assert meta["row_estimate"] == 5 * 60 * 1000
    assert 290_000 < meta["analytics_rows"] <= 300_000
    assert "Analytics requests:" in text


def test_legacy_chap_api_is_detected_and_used(instance):
    with Sandbox(SandboxConfig(port=0, chap_api="legacy", job_seconds=0.1)) as sb:
        result, text, meta = run_job(instance, sb, "1", {"end_mode": "offset", "end_period_offset": 3})
        posts = [path for method, path, _ in sb.requests if method == "POST"]
    assert result.success, text
    assert "(API: configured-models-with-data-source)" in text
    assert posts == [f"{RUN_PATH}/v1/analytics/make-prediction-with-data-source"]


def test_invalid_window_config_fails_before_any_http_with_a_report(instance, sb):
    # One invalid config shows the run's side; every way a config is invalid, and the field each names,
    # is test_core_run_window.py's test_parse_window_request_errors_name_the_field_without_io.
    result, text, meta = run_job(instance, sb, "1", {"end_mode": "fixed"})
    assert sb.requests == []
    assert not result.success
    assert failed_step(result) == "probe_covariates" and meta["failed_step"] == "probe_covariates"
    assert "Invalid run config: end_date: end_mode 'fixed' needs end_date" in text
    assert "FAILED at `probe_covariates`" in text


def test_dhis2_down(instance, sb):
    base_url = sb.base_url
    sb.stop()  # nothing listens on its port any more
    result, text, meta = run_job(instance, sb, "1", base_url=base_url)
    assert failed_step(result) == "probe_covariates"
    assert f"could not reach DHIS2 at {base_url}" in text and "NOT REACHABLE" in text
    assert meta["status"] == "failed"


def test_dhis2_unavailable_every_attempt(instance, sb):
    sb.faults.fail_next = 50  # every /api request answers 503 with an HTML page, retries included
    result, text, meta = run_job(instance, sb, "1")
    assert failed_step(result) == "probe_covariates" and meta["failed_step"] == "probe_covariates"
    assert "DHIS2 is unavailable (maintenance or overload)" in text and "HTTP 503" in text


def test_transient_5xx_from_a_proxy_is_retried(instance, sb):
    sb.faults.fail_next = 2  # the next two /api requests get 503 with an HTML body
    result, text, meta = run_job(instance, sb, "1", {"end_mode": "offset", "end_period_offset": 3})
    assert result.success, text


@pytest.mark.parametrize("fault", ["login_page", "wrong_password"])
def test_dhis2_auth_failure_names_user_not_password(instance, sb, fault):
    if fault == "login_page":
        sb.faults.html_next = 100  # every request gets DHIS2's login page
    password = "not-the-password" if fault == "wrong_password" else PASSWORD
    result, text, meta = run_job(instance, sb, "1", password=password)
    assert failed_step(result) == "probe_covariates"
    assert f"DHIS2 authentication failed for user 'admin' at {sb.base_url}" in text
    assert "DHIS2_PASSWORD" in text  # the fix names the variable, never its value


def test_chap_down(instance, sb):
    sb.faults.route_down = True  # the route answers 502, as DHIS2 does when chap is down
    result, text, _ = run_job(instance, sb, "1")
    assert failed_step(result) == "probe_covariates"
    assert "chap-core did not answer" in text
    assert "## chap-core\n\n- **NOT REACHABLE:**" in text


def test_covariate_without_data_names_it(instance, sb):
    sb.chap.add_setup(id=7, covariateSources=[{"covariate": "disease_cases", "dataElementId": DE_CASES},
                                              {"covariate": "rainfall", "dataElementId": DE_PRED_LOW}])
    result, text, _ = run_job(instance, sb, "7")
    assert failed_step(result) == "probe_covariates"
    assert "no data within LAST_12_MONTHS for covariate(s): rainfall" in text


def test_row_budget_refusal(instance, sb, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_ROW_BUDGET", "100")
    get_settings.cache_clear()
    result, text, meta = run_job(instance, sb, "1")
    assert failed_step(result) == "fetch_analytics"
    assert "CHAP_SCHEDULER_ROW_BUDGET" in text and "over the budget of 100" in text
    assert sb.chap_calls.posted_bodies == []


def test_chap_rejection_grouped_by_covariate(instance, sb):
    # Setup 3's rainfall has a hole in every district at one recent month: chap rejects all regions.
    gap = month(sb.world.today, -5)
    result, text, meta = run_job(instance, sb, "3")
    assert failed_step(result) == "submit_prediction"
    assert meta["failed_step"] == "submit_prediction"
    assert "All regions rejected due to missing values" in text
    assert "Rejected cells (grouped by covariate)" in text
    with_geometry = len(sb.chap.setups[3]["orgUnits"]) - 1
    assert f"`rainfall`: {with_geometry} org units; periods affected: " in text and gap in text
    assert len(sb.chap_calls.posted_bodies) == 1  # a POST is never retried


def test_job_failure_reports_chap_error_and_never_reads_results(instance, sb):
    sb.faults.chap_job = "fail"
    result, text, meta = run_job(instance, sb, "1")
    assert failed_step(result) == "await_prediction"
    assert "ended FAILURE: Sandbox fault: model run failed" in text
    [job_id] = sb.chap.jobs
    assert meta["job_id"] == job_id and meta["prediction_id"] == ""
    assert not [path for _, path, _ in sb.chap_calls.calls if "result" in path]


def test_job_timeout(instance, sb, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS", "0.2")
    get_settings.cache_clear()
    sb.faults.chap_job = "hang"
    result, text, _ = run_job(instance, sb, "1")
    assert failed_step(result) == "await_prediction"
    assert "did not finish within 0.2 s (last status: STARTED)" in text
    assert "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS" in text


def test_partial_rejection_reports_dropped_org_units(instance, sb):
    # chap answers 200 but leaves out an org unit it found values missing for.
    victim = sb.chap.setups[1]["orgUnits"][1]
    finalize = sb.chap._finalize

    def drop(job):
        job.org_units = [ou for ou in job.org_units if ou != victim]
        finalize(job)

    sb.chap._finalize = drop
    result, text, _ = run_job(instance, sb, "1")
    assert result.success, text
    sent = {f["id"] for f in orjson.loads(sb.chap_calls.posted_bodies[0])["geojson"]["features"]}
    [prediction] = sb.chap.predictions.values()
    dropped = sorted(sent - set(prediction["orgUnits"]))  # the victim, and any the sandbox's holes cost
    assert victim in dropped and len(dropped) <= 8
    shown = ", ".join(f"{sb.world.ou_name(ou)} ({ou})" for ou in dropped)  # by name and id
    assert f"Org units chap silently dropped:** {len(dropped)} — {shown}" in text


def test_unknown_configured_model(instance, sb):
    result, text, _ = run_job(instance, sb, "77")
    assert failed_step(result) == "probe_covariates"
    assert f"chap has no configured model with id 77; it has {sorted(sb.chap.setups)}" in text
    assert "## chap-core\n\n- **Version:** 2.5.1 (API: prediction-setups)" in text  # reachable, not "NOT REACHABLE"


def test_request_body_is_spooled_where_configured_and_removed(instance, sb, monkeypatch, tmp_path):
    monkeypatch.setenv("CHAP_SCHEDULER_SPOOL_DIR", str(tmp_path))
    get_settings.cache_clear()
    seen: list[list[str]] = []
    handle = sb.chap.handle

    def spy(method, path, query, body):
        if method == "POST":
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return handle(method, path, query, body)

    sb.chap.handle = spy
    result, text, _ = run_job(instance, sb, "1")
    assert result.success, text
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith("chap-body-1-")
    assert list(tmp_path.iterdir()) == []  # removed after the POST
