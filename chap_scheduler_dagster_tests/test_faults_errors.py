"""Points 2, 3, 4 and 6: every error names its cause and a fix, never a raw body.

Table-driven over respx: every status of http_faults.STATUSES on every chap call (through DHIS2's
route) and every DHIS2 call, plus chap's validation errors, 500 bodies, wrong shapes, cut-off
bodies and the job-status 404.
"""

from __future__ import annotations

import httpx
import pytest
import respx

from chap_scheduler_dagster.core.chap_client import ChapClient
from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
from chap_scheduler_dagster.core.errors import (
    ChapHttpError,
    ChapJobUnknown,
    ChapSubmitUncertain,
    ChapUnexpectedAnswer,
    Dhis2AuthFailed,
    Dhis2RequestFailed,
    SchedulerError,
)
from chap_scheduler_dagster.core.http_faults import CHAP_CALLS, DHIS2_CALLS, STATUSES, TABLE, explain

from .core_fixtures import DHIS2, PASSWORD, USER, setup_json, web_message

ROUTE = f"{DHIS2}/api/routes/chap/run"
JOB = "0b6c7e1e-job"

# The path each chap call uses, and how to make the call.
CHAP_PATHS = {
    "system_info": ("GET", "/system/info", lambda c: c.system_info()),
    "list_setups": ("GET", "/v1/crud/prediction-setups", lambda c: c.list_prediction_setups()),
    "submit": ("POST", "/v1/crud/prediction-setups/3/run", lambda c: c.submit_prediction(3, b"{}", 2)),
    "job_status": ("GET", f"/v1/jobs/{JOB}", lambda c: c.job_status(JOB)),
    "job_list": ("GET", "/v1/jobs", lambda c: c.job_description(JOB)),
    "prediction_result": ("GET", f"/v1/jobs/{JOB}/prediction_result", lambda c: c.prediction_result(JOB)),
    "prediction_values": ("GET", "/v1/analytics/prediction-entry/5", lambda c: c.summarize_prediction(5, [0.5])),
}
DHIS2_PATHS = {
    "system_info": ("/api/system/info", lambda r: r.system_info()),
    "analytics": ("/api/analytics", lambda r: r.analytics([("dimension", "dx:DE_1")])),
    "org_units": ("/api/organisationUnits", lambda r: r.org_units(["OU_A"])),
}
VALIDATION = {"detail": [
    {"type": "extra_forbidden", "loc": ["body", "dataSources"], "msg": "Extra inputs are not permitted", "input": []},
    {"type": "missing", "loc": ["body", "geojson", "features"], "msg": "Field required", "input": {}},
]}
INTERNAL = {"detail": "Internal server error", "error": "Index contains duplicate entries, cannot reshape",
            "type": "ValueError"}


def chap_body(status: int) -> dict:
    if status == 422:
        return VALIDATION
    if status == 500:
        return INTERNAL
    return {"detail": f"chap says {status}"}


def test_the_table_has_every_status_for_both_services():
    for service in ("chap", "dhis2"):
        for status in STATUSES:
            row = TABLE[(service, status)]
            assert row.cause and row.fix and row.cause != row.fix


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("call", CHAP_CALLS)
def test_every_chap_status_on_every_call_has_cause_and_fix(call, status):
    method, path, make_call = CHAP_PATHS[call]
    with respx.mock(assert_all_called=False) as router, ChapClient(DHIS2, username=USER, password=PASSWORD,
                                                                     get_attempts=1) as chap:
        router.route(method=method, url__regex=rf"^{ROUTE}{path}(\?.*)?$").respond(status, json=chap_body(status))
        # Everything else a call may fall back to answers "nothing".
        router.get(url__startswith=f"{ROUTE}/v1/crud/configured-models-with-data-source").respond(
            status, json=chap_body(status))
        if call != "job_list":
            router.get(url__regex=rf"^{ROUTE}/v1/jobs(\?.*)?$").respond(200, json=[])
        with pytest.raises(SchedulerError) as err:
            make_call(chap)
    exc, text = err.value, str(err.value)
    assert exc.hint, f"no fix for chap {status} on {call}: {text}"
    assert '{"' not in text and PASSWORD not in text, text
    if call == "submit" and status in (502, 503, 504):
        assert isinstance(exc, ChapSubmitUncertain) and "duplicate" in exc.hint  # reconciled by name by the step
        return
    if call == "prediction_result" and status == 404:
        return  # older chap builds: the step falls back to the job list (tested in test_core_chap_client)
    why = explain("chap", status, call)
    assert exc.hint == why.fix, (call, status, text)
    assert why.cause in text or status in (502, 503, 504), text
    if status == 422:
        assert "dataSources: Extra inputs are not permitted (extra_forbidden)" in text
        assert "geojson.features: Field required (missing)" in text
    if status == 500:
        assert "ValueError: Index contains duplicate entries" in text


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("call", DHIS2_CALLS)
def test_every_dhis2_status_on_every_call_has_cause_and_fix(call, status):
    path, make_call = DHIS2_PATHS[call]
    body = web_message(status, f"DHIS2 says {status}", "E7124" if status == 409 else None)
    reader = Dhis2Reader(DHIS2, username=USER, password=PASSWORD, get_attempts=1)
    with respx.mock(assert_all_called=False) as router:
        router.get(url__startswith=f"{DHIS2}{path}").respond(status, json=body)
        with pytest.raises(SchedulerError) as err:
            make_call(reader)
    reader.close()
    exc, text = err.value, str(err.value)
    assert exc.hint and '{"' not in text and PASSWORD not in text, text
    if status == 401:
        assert isinstance(exc, Dhis2AuthFailed) and "DHIS2_PASSWORD" in exc.hint
        return
    assert isinstance(exc, Dhis2RequestFailed) and exc.status_code == status
    assert exc.hint == explain("dhis2", status, call).fix, (call, status, text)
    if (call, status) != ("system_info", 404):
        assert f"DHIS2 says {status}" in text


@pytest.mark.parametrize("status", [400, 409, 422, 429, 500])
def test_a_dhis2_error_on_the_chap_route_is_explained(status):
    """DHIS2 itself answering the route (a WebMessage), e.g. its 409 on the POST."""
    with respx.mock() as router, ChapClient(DHIS2, username=USER, password=PASSWORD) as chap:
        router.post(f"{ROUTE}/v1/crud/prediction-setups/3/run").respond(
            status, json=web_message(status, "Route is disabled", "E4050"))
        with pytest.raises(ChapHttpError) as err:
            chap.submit_prediction(3, b"{}", 2)
    text = str(err.value)
    assert "DHIS2 answered for its route 'chap'" in text and "Route is disabled (E4050)" in text
    assert err.value.hint == explain("dhis2", status).fix and '{"' not in text


# ---- shapes, malformed and cut-off bodies --------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"items": []}', "not a list of prediction setups"),
        (b'[{"id": "x"}]', "not a list of prediction setups"),
        (b'[{"id": 1, "name": "a", "configuredMo', "the answer was cut off"),
        (b"[", "the answer was cut off"),
    ],
)
def test_malformed_or_wrong_shaped_setup_list_is_named(content, expected):
    with respx.mock() as router, ChapClient(DHIS2, username=USER, password=PASSWORD) as chap:
        router.get(f"{ROUTE}/v1/crud/prediction-setups").respond(
            200, content=content, headers={"content-type": "application/json"})
        with pytest.raises(ChapUnexpectedAnswer) as err:
            chap.list_prediction_setups()
    text = str(err.value)
    assert expected in text and "ValidationError" not in text and "input_value" not in text
    assert "chap-core" in err.value.hint


def test_wrong_shapes_on_the_other_chap_calls():
    with respx.mock() as router, ChapClient(DHIS2, username=USER, password=PASSWORD) as chap:
        router.get(f"{ROUTE}/system/info").respond(200, json=["not", "info"])
        router.get(f"{ROUTE}/v1/jobs/{JOB}").respond(200, json={"status": "SUCCESS"})
        router.get(f"{ROUTE}/v1/jobs").respond(200, json={"items": []})
        router.get(f"{ROUTE}/v1/jobs/{JOB}/prediction_result").respond(200, json={"id": "seven"})
        router.get(f"{ROUTE}/v1/analytics/prediction-entry/5").respond(200, json={"rows": []})
        for call, expected in [
            (chap.system_info, "not chap's system info"),
            (lambda: chap.job_status(JOB), "not a job status"),
            (lambda: chap.job_description(JOB), "not a list of jobs"),
            (lambda: chap.prediction_result(JOB), "not a prediction"),
            (lambda: chap.summarize_prediction(5, [0.5]), "not a list of prediction values"),
        ]:
            with pytest.raises(ChapUnexpectedAnswer, match=expected):
                call()


def test_chap_get_cut_short_on_the_wire_is_not_unreachable():
    with respx.mock() as router, ChapClient(DHIS2, username=USER, password=PASSWORD, get_attempts=1) as chap:
        router.get(f"{ROUTE}/v1/crud/prediction-setups").mock(side_effect=httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body: received 100 bytes, expected 5000"))
        with pytest.raises(ChapUnexpectedAnswer, match="the answer was cut off"):
            chap.list_prediction_setups()


def test_analytics_cut_short_is_cut_off_not_unreachable():
    reader = Dhis2Reader(DHIS2, username=USER, password=PASSWORD, get_attempts=2, sleep=lambda s: None)
    with respx.mock() as router:
        route = router.get(url__startswith=f"{DHIS2}/api/analytics").respond(
            200, content=b'{"headers": [{"name": "dx"}], "rows": [["DE_1", "202401", "OU_A", "1', 
            headers={"content-type": "application/json"})
        with pytest.raises(Dhis2RequestFailed) as err:
            reader.analytics([("dimension", "dx:DE_1")])
        assert route.call_count == 2  # a cut-off GET is worth a second try
        route.mock(side_effect=httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body: received 10 bytes, expected 99"))
        with pytest.raises(Dhis2RequestFailed) as wire:
            reader.analytics([("dimension", "dx:DE_1")])
    reader.close()
    for exc in (err.value, wire.value):
        assert "was cut off" in str(exc) and "could not reach DHIS2" not in str(exc)
        assert "DHIS2_BASE_URL" not in exc.hint and "CHAP_SCHEDULER_MAX_ROWS_PER_REQUEST" in exc.hint


def test_job_status_404_has_a_fix():
    with respx.mock() as router, ChapClient(DHIS2, username=USER, password=PASSWORD) as chap:
        router.get(f"{ROUTE}/v1/jobs/{JOB}").respond(404, json={"detail": f"Job '{JOB}' not found"})
        with pytest.raises(ChapJobUnknown) as err:
            chap.job_status(JOB)
    assert f"chap does not know job {JOB}" in str(err.value)
    assert "[dagster run" in err.value.hint and "launching again is safe" in err.value.hint


def test_setup_json_still_parses():
    """The shape checks accept what chap really sends."""
    with respx.mock() as router, ChapClient(DHIS2, username=USER, password=PASSWORD) as chap:
        router.get(f"{ROUTE}/v1/crud/prediction-setups").respond(200, json=[setup_json()])
        assert len(chap.list_prediction_setups()) == 1


# ---- point 2: errors on the POST reach the run report in plain words, with what to do ----------


@pytest.mark.parametrize(
    "answer, words",
    [
        ((500, INTERNAL), "chap-core failed with an internal error (chap POST"),
        ((422, VALIDATION), "dataSources: Extra inputs are not permitted (extra_forbidden)"),
        ((409, web_message(409, "Route is disabled", "E4050")), "DHIS2 answered for its route 'chap'"),
        ((409, {"detail": "Configured model is archived"}), "chap refused to run the configured model"),
    ],
)
def test_post_errors_reach_the_report_with_what_to_do(instance, answer, words):
    import json

    import dagster as dg

    from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
    from chap_scheduler_dagster.defs.resources import Dhis2Resource

    from dhis2_sandbox import Sandbox, SandboxConfig

    # The sandbox answers everything; its chap stand-in answers the POST with the error under test
    # (one DHIS2 fake for the run, not respx in front of the sandbox).
    with Sandbox(SandboxConfig(port=0)) as sb:
        handle, posted = sb.chap.handle, []

        def refuse_the_post(method, path, query, body):
            if method == "POST" and path == "/v1/crud/prediction-setups/1/run":
                posted.append(path)
                return answer[0], json.dumps(answer[1]).encode(), "application/json"
            return handle(method, path, query, body)

        sb.chap.handle = refuse_the_post
        instance.add_dynamic_partitions("chap_configured_models", ["1"])
        result = dhis2_chap_prediction.execute_in_process(
            partition_key="1", instance=instance, raise_on_error=False,
            resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
            run_config={"ops": {"probe_covariates": {"config": {"end_mode": "offset", "end_period_offset": 3}}}},
        )
        meta = instance.fetch_materializations(
            dg.AssetKey("dhis2_chap_prediction_report"), limit=1).records[0].asset_materialization.metadata
    text = meta["report"].value
    assert not result.success and len(posted) == 1 and not sb.chap.jobs
    assert meta["failed_step"].value == "submit_prediction"
    assert words in text and "- **What to do:** " in text
    assert '{"' not in meta["error"].value, meta["error"].value


def test_cut_off_over_a_real_socket():
    """The words httpx uses for a body cut short on a real connection are the ones matched."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                             b'{"rows": [["DE_1"')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        reader = Dhis2Reader(base, username=USER, password=PASSWORD, get_attempts=1)
        with pytest.raises(Dhis2RequestFailed, match="was cut off"):
            reader.analytics([("dimension", "dx:DE_1")])
        reader.close()
        with ChapClient(base, username=USER, password=PASSWORD, get_attempts=1) as chap:
            with pytest.raises(ChapUnexpectedAnswer, match="the answer was cut off"):
                chap.list_prediction_setups()
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
