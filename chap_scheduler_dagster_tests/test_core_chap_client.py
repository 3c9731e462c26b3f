"""ChapClient over DHIS2's route proxy, against respx (no network)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from chap_scheduler_dagster.core.chap_client import ROUTE_PREFIX, ChapClient
from chap_scheduler_dagster.core.chap_models import ChapApi, JobDescription
from chap_scheduler_dagster.core.errors import (
    ChapError,
    ChapHttpError,
    ChapJobFailed,
    ChapJobTimeout,
    ChapJobUnknown,
    ChapRejected,
    ChapRouteMissing,
    ChapSubmitUncertain,
    ChapUnreachable,
    Dhis2AuthFailed,
    PredictionSetupNotFound,
    Rejection,
)
from chap_scheduler_dagster.core.periods import PeriodType, parse_period
from chap_scheduler_dagster.core.run_window import setup_start

from .core_fixtures import CHAP, DHIS2, PASSWORD, USER, basic, setup_json, web_message

REJECTION_BODY = {
    "detail": {
        "message": "All regions rejected due to missing values",
        "imported_count": 0,
        "rejected": [
            {"reason": "Missing value for some/all time periods", "orgUnit": "OU_A", "featureName": "rainfall",
             "timePeriods": ["202406", "202407"]},
            {"reason": "Missing value for some/all time periods", "orgUnit": "OU_B", "featureName": "mean_temperature",
             "timePeriods": ["202406"]},
        ],
    }
}
EXTRA_FORBIDDEN_BODY = {
    "detail": [
        {"type": "greater_than", "loc": ["body", "nPeriods"], "msg": "Input should be greater than 0", "input": 0,
         "ctx": {"gt": 0}},
        {"type": "extra_forbidden", "loc": ["body", "dataSources"], "msg": "Extra inputs are not permitted",
         "input": []},
    ]
}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def chap_mock():
    with respx.mock(base_url=CHAP, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sleeps: Sleeps):
    with ChapClient(DHIS2, username=USER, password=PASSWORD, get_attempts=3, sleep=sleeps) as c:
        yield c


def _no_password(exc: BaseException) -> None:
    assert PASSWORD not in str(exc)
    assert PASSWORD not in getattr(exc, "hint", "")
    assert PASSWORD not in repr(exc.args)


# ---- wire: prefix and auth ----------------------------------------------------------------


def test_route_prefix_and_basic_auth_on_the_wire(chap_mock, client):
    route = chap_mock.get("/system/info").respond(json={"chap_core_version": "2.5.1", "python_version": "3.13"})
    info = client.system_info()
    assert info.chap_core_version == "2.5.1"
    request = route.calls.last.request
    assert ROUTE_PREFIX == "/api/routes/chap/run"
    assert request.url.path == "/dhis/api/routes/chap/run/system/info"
    assert request.headers["authorization"] == basic()
    assert request.headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("token", "header"),
    [("d2pat_abcdef", "ApiToken d2pat_abcdef"), ("ApiToken xyz", "ApiToken xyz"), ("Bearer t0k", "Bearer t0k")],
)
def test_token_sends_apitoken_header_and_no_basic(chap_mock, token, header):
    route = chap_mock.get("/system/info").respond(json={"chap_core_version": "2.5.1"})
    with ChapClient(DHIS2 + "/", username=USER, password=PASSWORD, token=token, sleep=lambda s: None) as c:
        c.system_info()
    request = route.calls.last.request
    assert request.headers["authorization"] == header
    assert request.url.path == "/dhis/api/routes/chap/run/system/info"


# ---- chap's own error bodies --------------------------------------------------------------


def test_plain_string_detail_kept_verbatim(chap_mock, client):
    chap_mock.post("/v1/crud/prediction-setups/3/run").respond(422, json={"detail": "provided_data cannot be empty"})
    with pytest.raises(ChapHttpError) as info:
        client.submit_prediction(3, b"{}", 2)
    assert info.value.status_code == 422
    assert info.value.detail == "provided_data cannot be empty"
    assert info.value.method == "POST"
    assert "provided_data cannot be empty" in str(info.value)


def test_422_extra_forbidden_detail_verbatim(chap_mock, client):
    chap_mock.post("/v1/crud/prediction-setups/3/run").respond(422, json=EXTRA_FORBIDDEN_BODY)
    with pytest.raises(ChapHttpError) as info:
        client.submit_prediction(3, b"{}", 2)
    assert not isinstance(info.value, ChapRejected)
    assert info.value.detail == EXTRA_FORBIDDEN_BODY["detail"]
    assert "extra_forbidden" in str(info.value)
    assert "dataSources" in str(info.value)


def test_500_leak_body_keeps_chaps_error_text(chap_mock, client):
    body = {"detail": "Internal server error", "error": "Index contains duplicate entries, cannot reshape",
            "type": "ValueError"}
    chap_mock.post("/v1/crud/prediction-setups/3/run").respond(500, json=body)
    with pytest.raises(ChapHttpError) as info:
        client.submit_prediction(3, b"{}", 2)
    assert info.value.status_code == 500
    # The useful part of chap's 500 is "error", not "detail": the body must survive whole.
    assert info.value.detail == body
    assert "Index contains duplicate entries" in str(info.value)


def test_400_structured_rejection_is_parsed(chap_mock, client):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").respond(400, json=REJECTION_BODY)
    with pytest.raises(ChapRejected) as info:
        client.submit_prediction(3, b'{"name":"x"}', 12)
    exc = info.value
    assert isinstance(exc, ChapHttpError)
    assert exc.status_code == 400
    assert exc.detail == REJECTION_BODY["detail"]
    assert exc.rejection == Rejection.from_detail(REJECTION_BODY["detail"])
    assert exc.rejection.message == "All regions rejected due to missing values"
    assert exc.rejection.imported_count == 0
    assert [(r.org_unit, r.feature_name, r.time_periods) for r in exc.rejection.rejected] == [
        ("OU_A", "rainfall", ("202406", "202407")),
        ("OU_B", "mean_temperature", ("202406",)),
    ]
    assert "All regions rejected due to missing values" in str(exc)
    assert "Import the missing values" in exc.hint
    assert route.call_count == 1


def test_400_without_rejection_shape_is_plain_http_error(chap_mock, client):
    chap_mock.post("/v1/crud/prediction-setups/3/run").respond(400, json={"detail": "leaky future weather provider"})
    with pytest.raises(ChapHttpError) as info:
        client.submit_prediction(3, b"{}", 2)
    assert not isinstance(info.value, ChapRejected)
    assert info.value.detail == "leaky future weather provider"


def test_rejection_from_detail_refuses_other_shapes():
    assert Rejection.from_detail("text") is None
    assert Rejection.from_detail({"message": "x"}) is None
    assert Rejection.from_detail({"rejected": ["not a dict"]}) is None
    parsed = Rejection.from_detail({"rejected": [{"orgUnit": "A"}]})
    assert parsed is not None and parsed.rejected[0].org_unit == "A" and parsed.rejected[0].time_periods == ()


# ---- DHIS2 answering instead of chap ------------------------------------------------------


def test_dhis2_webmessage_404_means_route_missing(chap_mock, client):
    route = chap_mock.get("/system/info").respond(404, json=web_message(404, "Route chap not found"))
    with pytest.raises(ChapRouteMissing) as info:
        client.system_info()
    assert "Route chap not found" in str(info.value)
    assert "'/**'" in info.value.hint
    assert route.call_count == 1  # 4xx is not retried


def test_find_prediction_is_none_only_when_chap_says_404(chap_mock, client, sleeps):
    chap_mock.get("/v1/crud/predictions/7").respond(200, json={"id": 7, "name": "x [dagster run r]", "nPeriods": 3})
    chap_mock.get("/v1/crud/predictions/8").respond(404, json={"detail": "Prediction not found"})
    broken = chap_mock.get("/v1/crud/predictions/9").respond(500, json={"detail": "database is locked"})
    assert client.find_prediction(7).name == "x [dagster run r]"
    assert client.find_prediction(8) is None
    with pytest.raises(ChapError):  # not an answer about the prediction: the caller decides
        client.find_prediction(9)
    assert broken.call_count == 3  # a GET: retried


def test_dhis2_webmessage_403_names_user(chap_mock, client):
    chap_mock.get("/system/info").respond(403, json=web_message(403, "User not authorized"))
    with pytest.raises(ChapRouteMissing) as info:
        client.system_info()
    assert USER in str(info.value)
    _no_password(info.value)


def test_502_webmessage_is_unreachable_after_retries(chap_mock, client, sleeps):
    route = chap_mock.get("/system/info").respond(502, json=web_message(502, "Bad Gateway"))
    with pytest.raises(ChapUnreachable) as info:
        client.system_info()
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert "chap-core did not answer" in str(info.value)
    assert "HTTP 502" in str(info.value)


def test_503_html_from_proxy_is_unreachable_without_the_html(chap_mock, client):
    html = "<!DOCTYPE html><html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    route = chap_mock.get("/system/info").respond(503, text=html, headers={"content-type": "text/html"})
    with pytest.raises(ChapUnreachable) as info:
        client.system_info()
    assert route.call_count == 3
    assert "an HTML error page" in str(info.value)
    assert "<html" not in str(info.value)


# ---- retries -------------------------------------------------------------------------------


def test_get_retried_on_connect_error_and_503_then_succeeds(chap_mock, client, sleeps):
    route = chap_mock.get("/system/info").mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.Response(503, json={"detail": "busy"}),
            httpx.Response(200, json={"chap_core_version": "2.5.1"}),
        ]
    )
    assert client.system_info().chap_core_version == "2.5.1"
    assert route.call_count == 3
    assert len(sleeps) == 2
    # exponential backoff with ±25 % jitter: 0.5 s then 1 s
    assert 0.375 <= sleeps[0] <= 0.625
    assert 0.75 <= sleeps[1] <= 1.25


def test_get_transport_errors_exhaust_to_unreachable_with_redacted_url(chap_mock, sleeps):
    route = chap_mock.get("/system/info").mock(side_effect=httpx.ConnectError("connection refused"))
    with ChapClient(
        "http://admin:" + PASSWORD + "@dhis2.test/dhis", username=USER, password=PASSWORD, get_attempts=4, sleep=sleeps
    ) as c:
        with pytest.raises(ChapUnreachable) as info:
            c.system_info()
    assert route.call_count == 4
    assert "http://dhis2.test/dhis" in str(info.value)
    assert "ConnectError" in str(info.value)
    _no_password(info.value)


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_get_4xx_not_retried(chap_mock, client, sleeps, status):
    route = chap_mock.get("/system/info").respond(status, json={"detail": f"nope {status}"})
    with pytest.raises(ChapHttpError) as info:
        client.system_info()
    assert route.call_count == 1
    assert sleeps == []
    assert info.value.status_code == status
    assert info.value.detail == f"nope {status}"


def test_post_503_sent_once(chap_mock, client, sleeps):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").respond(503, json={"detail": "busy"})
    with pytest.raises(ChapUnreachable):
        client.submit_prediction(3, b"{}", 2)
    assert route.call_count == 1
    assert sleeps == []


def test_post_504_from_route_is_uncertain_and_sent_once(chap_mock, client, sleeps):
    # DHIS2's route answers 504 when chap did not answer within responseTimeoutSeconds: chap
    # has the request and may still create the prediction, so relaunching could duplicate it.
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").respond(504, json=web_message(504, "Gateway Timeout"))
    with pytest.raises(ChapSubmitUncertain) as info:
        client.submit_prediction(3, b"{}", 2)
    assert route.call_count == 1
    assert sleeps == []
    assert "504" in str(info.value)
    assert "responseTimeoutSeconds" in info.value.hint


def test_post_502_webmessage_sent_once(chap_mock, client, sleeps):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").respond(502, json=web_message(502, "Bad Gateway"))
    with pytest.raises(ChapUnreachable):
        client.submit_prediction(3, b"{}", 2)
    assert route.call_count == 1
    assert sleeps == []


def test_post_connect_error_sent_once(chap_mock, client, sleeps):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ChapUnreachable) as info:
        client.submit_prediction(3, b"{}", 2)
    assert not isinstance(info.value, ChapSubmitUncertain)
    assert route.call_count == 1
    assert sleeps == []


def test_post_read_timeout_is_uncertain_and_sent_once(chap_mock, client, sleeps):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ChapSubmitUncertain) as info:
        client.submit_prediction(3, b"{}", 2)
    assert route.call_count == 1
    assert sleeps == []
    assert "may or may not" in str(info.value)
    assert "duplicate" in info.value.hint


def test_post_streams_body_with_content_length(chap_mock, client):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").respond(json={"id": "job-1"})
    chunks = [b'{"name":', b'"x"}']
    assert client.submit_prediction(3, iter(chunks), 12) == "job-1"
    request = route.calls.last.request
    assert request.headers["content-length"] == "12"
    assert "transfer-encoding" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == basic()
    assert request.read() == b'{"name":"x"}'


def test_post_without_job_id_is_an_error(chap_mock, client):
    chap_mock.post("/v1/crud/prediction-setups/3/run").respond(json={"status": "ok"})
    with pytest.raises(ChapHttpError) as info:
        client.submit_prediction(3, b"{}", 2)
    assert "no job id" in info.value.hint


# ---- DHIS2 authentication through the route -----------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(302, headers={"location": DHIS2 + "/dhis-web-login/"}),
        httpx.Response(401, json=web_message(401, "Unauthorized")),
        httpx.Response(200, text="<!DOCTYPE html>\n<html><head><title>DHIS2 login</title></head></html>",
                       headers={"content-type": "text/html"}),
    ],
    ids=["302", "401", "html-200"],
)
def test_login_answers_are_auth_failures(chap_mock, client, response):
    route = chap_mock.get("/system/info").mock(return_value=response)
    with pytest.raises(Dhis2AuthFailed) as info:
        client.system_info()
    assert route.call_count == 1
    assert f"user {USER!r}" in str(info.value)
    assert "http://dhis2.test/dhis" in str(info.value)
    _no_password(info.value)


def test_auth_failure_with_credentials_in_url_is_redacted(chap_mock):
    chap_mock.get("/system/info").respond(401, json=web_message(401, "Unauthorized"))
    with ChapClient(f"http://{USER}:{PASSWORD}@dhis2.test/dhis", sleep=lambda s: None) as c:
        with pytest.raises(Dhis2AuthFailed) as info:
            c.system_info()
    _no_password(info.value)


def test_chaps_own_401_is_not_blamed_on_the_dhis2_user(chap_mock, client):
    # chap with CHAP_API_TOKEN set answers FastAPI's 401 through the route: the route lacks the token.
    chap_mock.get("/system/info").respond(401, json={"detail": "Missing or invalid API token"},
                                          headers={"WWW-Authenticate": "Bearer"})
    with pytest.raises(ChapHttpError) as info:
        client.system_info()
    assert not isinstance(info.value, Dhis2AuthFailed)
    assert info.value.status_code == 401
    assert info.value.detail == "Missing or invalid API token"
    assert "CHAP_API_TOKEN" in info.value.hint and "api-token" in info.value.hint


def test_post_302_is_auth_failure(chap_mock, client):
    route = chap_mock.post("/v1/crud/prediction-setups/3/run").respond(302, headers={"location": "/login"})
    with pytest.raises(Dhis2AuthFailed) as info:
        client.submit_prediction(3, b"{}", 2)
    assert route.call_count == 1
    _no_password(info.value)


# ---- API generation detection -------------------------------------------------------------


def test_prediction_setups_api_detected(chap_mock, client):
    chap_mock.get("/v1/crud/prediction-setups").respond(json=[setup_json(3), setup_json(5)])
    legacy = chap_mock.get("/v1/crud/configured-models-with-data-source").respond(json=[])
    assert client.api is None
    setups = client.list_prediction_setups()
    assert client.api is ChapApi.PREDICTION_SETUPS
    assert [s.id for s in setups] == [3, 5]
    assert setups[0].data_element_covariates() == {"DE_RAIN": "rainfall", "DE_CASES": "disease_cases"}
    assert setups[0].model_name == "naive_model"
    assert setups[0].template is not None and setups[0].template.display_name == "Naive"
    assert legacy.call_count == 0
    run = chap_mock.post("/v1/crud/prediction-setups/5/run").respond(json={"id": "j5"})
    assert client.submit_prediction(5, b"{}", 2) == "j5"
    assert run.call_count == 1


def test_legacy_api_detected_on_fastapi_404(chap_mock, client):
    new = chap_mock.get("/v1/crud/prediction-setups").respond(404, json={"detail": "Not Found"})
    chap_mock.get("/v1/crud/configured-models-with-data-source").respond(json=[setup_json(4, legacy=True)])
    setups = client.list_prediction_setups()
    assert client.api is ChapApi.LEGACY
    assert setups[0].id == 4
    assert setups[0].data_element_covariates() == {"DE_RAIN": "rainfall", "DE_CASES": "disease_cases"}
    assert setups[0].schedule_enabled is False
    submit = chap_mock.post("/v1/analytics/make-prediction-with-data-source").respond(json={"id": "legacy-job"})
    wrong = chap_mock.post("/v1/crud/prediction-setups/4/run").respond(json={"id": "wrong"})
    assert client.submit_prediction(4, b"{}", 2) == "legacy-job"
    assert submit.call_count == 1 and wrong.call_count == 0
    # Once detected, later listings go straight to the legacy endpoint.
    client.list_prediction_setups()
    assert new.call_count == 1


def test_route_missing_is_not_mistaken_for_legacy(chap_mock, client):
    chap_mock.get("/v1/crud/prediction-setups").respond(404, json=web_message(404, "Route chap not found"))
    legacy = chap_mock.get("/v1/crud/configured-models-with-data-source").respond(json=[])
    with pytest.raises(ChapRouteMissing):
        client.list_prediction_setups()
    assert legacy.call_count == 0
    assert client.api is None


@pytest.mark.parametrize("status", [401, 500, 422])
def test_other_errors_on_prediction_setups_do_not_fall_back(chap_mock, client, status):
    body = {"detail": "Missing or invalid API token"} if status == 401 else {"detail": "x"}
    chap_mock.get("/v1/crud/prediction-setups").respond(status, json=body)
    legacy = chap_mock.get("/v1/crud/configured-models-with-data-source").respond(json=[])
    with pytest.raises((ChapHttpError, Dhis2AuthFailed)):
        client.list_prediction_setups()
    assert legacy.call_count == 0
    assert client.api is None


def test_get_prediction_setup_unknown_lists_known_ids(chap_mock, client):
    chap_mock.get("/v1/crud/prediction-setups").respond(json=[setup_json(9), setup_json(2), setup_json(5)])
    assert client.get_prediction_setup(5).id == 5
    with pytest.raises(PredictionSetupNotFound) as info:
        client.get_prediction_setup(42)
    assert "42" in str(info.value)
    assert "[2, 5, 9]" in str(info.value)
    assert isinstance(info.value, ChapError)


# ---- jobs -----------------------------------------------------------------------------------


def _job(job_id: str, status: str = "PENDING", **extra) -> dict:
    return {"id": job_id, "type": "create_prediction", "name": "p", "status": status,
            "start_time": "2026-01-01T00:00:00",
            "end_time": None, "result": None, "error": None, "prediction_setup_id": 3} | extra


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def test_wait_for_unknown_job_refused_before_polling(chap_mock, client):
    jobs = chap_mock.get("/v1/jobs").respond(json=[_job("other")])
    status = chap_mock.get("/v1/jobs/typo").respond(json="PENDING")
    with pytest.raises(ChapJobUnknown) as info:
        client.wait_for_job("typo", timeout_seconds=60, poll_interval_seconds=1, clock=FakeClock(30))
    assert "typo" in str(info.value)
    assert status.call_count == 0
    assert jobs.calls.last.request.url.params["ids"] == "typo"


def test_wait_for_job_reports_changes_only(chap_mock, client, sleeps):
    chap_mock.get("/v1/jobs").respond(json=[_job("j1")])
    route = chap_mock.get("/v1/jobs/j1").mock(
        side_effect=[httpx.Response(200, json=s) for s in ("PENDING", "PENDING", "STARTED", "STARTED", "SUCCESS")]
    )
    seen: list[str] = []
    status = client.wait_for_job("j1", timeout_seconds=3600, poll_interval_seconds=2.5, on_status=seen.append,
                                 clock=FakeClock(1))
    assert status == "SUCCESS"
    assert seen == ["PENDING", "STARTED", "SUCCESS"]
    assert route.call_count == 5
    assert sleeps == [2.5] * 4


def test_wait_for_job_lower_case_transient_and_failure(chap_mock, client):
    chap_mock.get("/v1/jobs").respond(json=[_job("j2")])
    chap_mock.get("/v1/jobs/j2").mock(
        side_effect=[httpx.Response(200, json=s) for s in ("pending", "started", "failure")]
    )
    seen: list[str] = []
    status = client.wait_for_job("j2", timeout_seconds=3600, poll_interval_seconds=1, on_status=seen.append,
                                 clock=FakeClock(1))
    assert status == "FAILURE"
    assert seen == ["PENDING", "STARTED", "FAILURE"]


def test_wait_for_job_deadline_times_out(chap_mock, client, sleeps):
    chap_mock.get("/v1/jobs").respond(json=[_job("j3")])
    route = chap_mock.get("/v1/jobs/j3").respond(json="STARTED")
    with pytest.raises(ChapJobTimeout) as info:
        client.wait_for_job("j3", timeout_seconds=100, poll_interval_seconds=5, clock=FakeClock(30))
    # deadline = 1000 + 100; polls at t=1030, 1060, 1090 continue, t=1120 >= deadline stops
    assert route.call_count == 4
    assert len(sleeps) == 3
    assert "100 s" in str(info.value)
    assert "STARTED" in str(info.value)
    assert "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS" in info.value.hint


def test_job_status_404_is_unknown_job(chap_mock, client):
    chap_mock.get("/v1/jobs/gone").respond(404, json={"detail": "Job 'gone' not found"})
    with pytest.raises(ChapJobUnknown):
        client.job_status("gone")


def test_job_failure_text_reads_error_from_jobs_list(chap_mock, client):
    chap_mock.get("/v1/jobs").respond(
        json=[_job("x"), _job("j4", "FAILURE", error="Training data must cover at least two whole years")]
    )
    failure = client.job_failure_text("j4", "FAILURE")
    assert isinstance(failure, ChapJobFailed)
    assert "Training data must cover at least two whole years" in str(failure)
    assert "FAILURE" in str(failure) and "j4" in str(failure)


def test_job_failure_text_without_error(chap_mock, client):
    chap_mock.get("/v1/jobs").respond(json=[])
    assert "chap gave no error text" in str(client.job_failure_text("j5", "REVOKED"))


def test_job_description_is_snake_case():
    desc = JobDescription.model_validate(_job("a", "SUCCESS", result="17", prediction_setup_id=3))
    assert desc.result == "17" and desc.prediction_setup_id == 3 and desc.start_time == "2026-01-01T00:00:00"


# ---- results --------------------------------------------------------------------------------


def test_prediction_result_direct(chap_mock, client):
    chap_mock.get("/v1/jobs/j6/prediction_result").respond(
        json={"id": 12, "name": "p", "nPeriods": 3, "orgUnits": ["OU_A"], "modelId": "naive_model", "datasetId": 1}
    )
    info = client.prediction_result("j6")
    assert (info.id, info.n_periods, info.org_units, info.model_id) == (12, 3, ["OU_A"], "naive_model")


def test_prediction_result_falls_back_to_jobs_list_on_404(chap_mock, client):
    direct = chap_mock.get("/v1/jobs/j7/prediction_result").respond(404, json={"detail": "Not Found"})
    chap_mock.get("/v1/jobs").respond(json=[_job("j7", "SUCCESS", result="31")])
    info = client.prediction_result("j7")
    assert info.id == 31
    assert direct.call_count == 1


def test_prediction_result_fallback_without_result_is_an_error(chap_mock, client):
    chap_mock.get("/v1/jobs/j8/prediction_result").respond(404, json={"detail": "Not Found"})
    chap_mock.get("/v1/jobs").respond(json=[_job("j8", "SUCCESS", result=None)])
    with pytest.raises(ChapHttpError) as info:
        client.prediction_result("j8")
    assert "no prediction id" in info.value.hint


def test_summarize_prediction_asks_one_quantile_at_a_time(chap_mock, client):
    def answer(request):
        q = request.url.params.get_list("quantiles")
        assert len(q) == 1, q  # one quantile per request keeps one fifth of the entries in memory
        value = {"0.1": 1.0, "0.5": 4.0, "0.9": 9.5}[q[0]]
        return httpx.Response(200, json=[
            {"orgUnit": ou, "period": p, "quantile": float(q[0]), "value": value}
            for ou in ("OU_A", "OU_B") for p in ("2027W01", "2027W02")
        ])

    route = chap_mock.get("/v1/analytics/prediction-entry/12").mock(side_effect=answer)
    summary = client.summarize_prediction(12, [0.1, 0.5, 0.9])
    assert [c.request.url.params["quantiles"] for c in route.calls] == ["0.1", "0.5", "0.9"]
    assert summary.values == 12
    assert summary.periods == {"2027W01", "2027W02"}
    assert summary.median_by_period == {"2027W01": 8.0, "2027W02": 8.0}  # medians summed over org units
    # chap pads weekly ids; they parse to DHIS2's unpadded ids
    assert sorted(parse_period(p, PeriodType.WEEK).id for p in summary.periods) == ["2027W1", "2027W2"]


def test_weekly_padded_start_period_from_chap_parses(chap_mock, client):
    chap_mock.get("/v1/crud/prediction-setups").respond(
        json=[setup_json(8, period_type="week", start_period="2024W03")]
    )
    setup = client.get_prediction_setup(8)
    start = setup_start(setup, PeriodType.WEEK)
    assert start.id == "2024W3"
    assert start.chap_id == "2024W03"


def test_unknown_fields_are_ignored_and_bad_json_text_is_kept(chap_mock, client):
    chap_mock.get("/system/info").respond(json={"chap_core_version": "9.9", "brand_new_field": {"x": 1}})
    assert client.system_info().chap_core_version == "9.9"
    chap_mock.get("/v1/jobs/j9").respond(500, text="plain text failure")
    with pytest.raises(ChapHttpError) as info:
        client.job_status("j9")
    assert info.value.detail == "plain text failure"
    assert json.dumps(info.value.detail)


def test_wait_for_job_rides_out_a_short_chap_outage(chap_mock, client, sleeps):
    chap_mock.get("/v1/jobs").respond(json=[_job("j4")])
    down = httpx.Response(502, json=web_message(502, "Bad Gateway"))
    # Each status GET is tried get_attempts (3) times; the first poll fails all three, then chap is back.
    chap_mock.get("/v1/jobs/j4").mock(side_effect=[down, down, down, httpx.Response(200, json="SUCCESS")])
    seen: list[str] = []
    status = client.wait_for_job("j4", timeout_seconds=3600, poll_interval_seconds=5, on_status=seen.append,
                                 clock=FakeClock(1))
    assert status == "SUCCESS"
    assert seen[0].startswith("not reachable, still waiting") and seen[-1] == "SUCCESS"


def test_wait_for_job_outage_past_the_deadline_fails_as_unreachable(chap_mock, client):
    chap_mock.get("/v1/jobs").respond(json=[_job("j5")])
    chap_mock.get("/v1/jobs/j5").respond(502, json=web_message(502, "Bad Gateway"))
    with pytest.raises(ChapUnreachable):
        client.wait_for_job("j5", timeout_seconds=60, poll_interval_seconds=5, clock=FakeClock(30))


def test_repeated_org_units_in_a_setup_are_kept_once():
    from chap_scheduler_dagster.core.chap_models import PredictionSetup

    setup = PredictionSetup.model_validate({"id": 1, "name": "x", "orgUnits": ["A", "B", "A", "C", "B"]})
    assert setup.org_units == ["A", "B", "C"]
