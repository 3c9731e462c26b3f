"""Dhis2Reader (dhis2-client adapter) against respx: auth, errors, retries, no leaks."""

from __future__ import annotations

import atexit
import gc
import weakref

import httpx
import pytest
import respx
from dhis2_client import DHIS2Client

from chap_scheduler_dagster.core.dhis2_reader import (
    ANALYTICS_PATH,
    ORG_UNIT_FIELDS,
    ORG_UNITS_PATH,
    Dhis2Reader,
    org_unit_params,
)
from chap_scheduler_dagster.core.errors import (
    Dhis2AuthFailed,
    Dhis2Error,
    Dhis2RequestFailed,
    Dhis2Unreachable,
    redact_url,
)

from .core_fixtures import DHIS2, PASSWORD, USER, basic, web_message

SYSTEM_INFO = {"version": "2.41.3", "revision": "abc", "serverDate": "2026-11-22T10:00:00.000",
               "serverTimeZoneId": "Etc/UTC", "systemName": "Sierra Leone", "calendar": "iso8601", "extra": 1}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def dhis2_mock():
    with respx.mock(base_url=DHIS2, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def reader(sleeps: Sleeps):
    with Dhis2Reader(DHIS2, username=USER, password=PASSWORD, get_attempts=3, sleep=sleeps) as r:
        yield r


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), getattr(exc, "hint", "")):
        assert PASSWORD not in text
    assert exc.__cause__ is None or PASSWORD not in str(exc.__cause__)


def test_basic_auth_on_the_wire_and_system_info(dhis2_mock, reader):
    route = dhis2_mock.get("/api/system/info").respond(json=SYSTEM_INFO)
    info = reader.system_info()
    assert (info.version, info.server_date, info.system_name, info.calendar) == (
        "2.41.3", "2026-11-22T10:00:00.000", "Sierra Leone", "iso8601")
    request = route.calls.last.request
    assert request.headers["authorization"] == basic()
    assert request.url.path == "/dhis/api/system/info"


def test_token_auth_on_the_wire(dhis2_mock, sleeps):
    route = dhis2_mock.get("/api/system/info").respond(json=SYSTEM_INFO)
    with Dhis2Reader(DHIS2, username=USER, password=PASSWORD, token="d2pat_xyz", sleep=sleeps) as r:
        r.system_info()
    assert route.calls.last.request.headers["authorization"] == "ApiToken d2pat_xyz"


@pytest.mark.parametrize(
    ("response", "detail"),
    [
        (httpx.Response(401, json=web_message(401, "Unauthorized")), "HTTP 401 Unauthorized"),
        (httpx.Response(401, json=web_message(401, "Account locked")), "HTTP 401 Account locked"),
        (httpx.Response(302, headers={"location": DHIS2 + "/dhis-web-login/"}), "HTTP 302 redirect"),
        (httpx.Response(200, text="<!DOCTYPE html><html><body>Login</body></html>",
                        headers={"content-type": "text/html"}), "HTML page"),
    ],
    ids=["401", "401-locked", "302", "html-200"],
)
def test_auth_failures(dhis2_mock, reader, sleeps, response, detail):
    route = dhis2_mock.get("/api/system/info").mock(return_value=response)
    with pytest.raises(Dhis2AuthFailed) as info:
        reader.system_info()
    message = str(info.value)
    assert message.startswith(f"DHIS2 authentication failed for user {USER!r} at {DHIS2}")
    assert detail in message
    assert "DHIS2_PASSWORD" in info.value.hint
    assert route.call_count == 1
    assert sleeps == []
    assert_no_secret(info.value)


def test_connect_error_names_redacted_url(dhis2_mock, sleeps):
    route = dhis2_mock.get("/api/system/info").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with Dhis2Reader(f"http://{USER}:{PASSWORD}@dhis2.test/dhis", username=USER, password=PASSWORD,
                     get_attempts=3, sleep=sleeps) as r:
        with pytest.raises(Dhis2Unreachable) as info:
            r.system_info()
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert "could not reach DHIS2 at http://dhis2.test/dhis" in str(info.value)
    assert "ConnectError" in str(info.value)
    assert "DHIS2_BASE_URL" in info.value.hint
    assert_no_secret(info.value)


def test_read_timeout_mentions_time(dhis2_mock, reader, sleeps):
    route = dhis2_mock.get(ANALYTICS_PATH).mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(Dhis2Unreachable) as info:
        reader.analytics([("dimension", "dx:A")])
    assert route.call_count == 3
    assert "did not answer /api/analytics in time" in str(info.value)
    assert "ReadTimeout" in str(info.value)
    assert "CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS" in info.value.hint
    assert_no_secret(info.value)


def test_503_retried_with_backoff_then_success(dhis2_mock, reader, sleeps):
    route = dhis2_mock.get("/api/system/info").mock(
        side_effect=[
            httpx.Response(503, text="<html>busy</html>"),
            httpx.Response(429, json={"message": "slow down"}),
            httpx.Response(200, json=SYSTEM_INFO),
        ]
    )
    assert reader.system_info().version == "2.41.3"
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.625 and 0.75 <= sleeps[1] <= 1.25


def test_5xx_exhausted_is_request_failed_with_html_hidden(dhis2_mock, reader):
    route = dhis2_mock.get("/api/system/info").respond(502, text="<html><body>Bad Gateway</body></html>")
    with pytest.raises(Dhis2RequestFailed) as info:
        reader.system_info()
    assert route.call_count == 3
    assert info.value.status_code == 502
    assert "an HTML error page" in str(info.value)
    assert "<html" not in str(info.value)
    assert_no_secret(info.value)


def test_409_e7124_is_request_failed_with_code(dhis2_mock, reader, sleeps):
    body = web_message(409, "Dimension `pe` is present in query without any valid dimension options", "E7124")
    route = dhis2_mock.get(ANALYTICS_PATH).respond(409, json=body)
    with pytest.raises(Dhis2RequestFailed) as info:
        reader.analytics([("dimension", "pe:LAST_104_WEEKS")])
    assert route.call_count == 1
    assert sleeps == []
    assert info.value.status_code == 409
    assert "E7124" in str(info.value)
    assert "HTTP 409" in str(info.value)
    assert "without any valid dimension options" in str(info.value)
    assert_no_secret(info.value)


def test_403_names_user_and_path(dhis2_mock, reader):
    dhis2_mock.get(ORG_UNITS_PATH).respond(403, json=web_message(403, "You don't have the proper permissions"))
    with pytest.raises(Dhis2RequestFailed) as info:
        reader.org_units(["OU_A"])
    assert info.value.status_code == 403
    assert USER in str(info.value) and ORG_UNITS_PATH in str(info.value)
    assert_no_secret(info.value)


def test_every_error_is_a_dhis2_error_without_password(dhis2_mock, sleeps):
    cases = [
        httpx.Response(401, json=web_message(401, "Unauthorized")),
        httpx.Response(302),
        httpx.Response(200, text="<html>login</html>"),
        httpx.Response(409, json=web_message(409, "bad", "E7124")),
        httpx.Response(404, json=web_message(404, "nope", "E1005")),
        httpx.Response(500, text=""),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed"),
    ]
    for base in (DHIS2, f"http://{USER}:{PASSWORD}@dhis2.test/dhis"):
        for case in cases:
            route = dhis2_mock.get("/api/system/info")
            if isinstance(case, Exception):
                route.mock(side_effect=case)
            else:
                route.mock(return_value=case)
            with Dhis2Reader(base, username=USER, password=PASSWORD, get_attempts=2, sleep=sleeps) as r:
                with pytest.raises(Dhis2Error) as info:
                    r.system_info()
            assert_no_secret(info.value)


def test_analytics_and_org_units_send_exact_params(dhis2_mock, reader):
    params = [("dimension", "dx:DE_A;DE_B"), ("dimension", "pe:202401;202402"), ("dimension", "ou:OU_A"),
              ("skipMeta", "true")]
    analytics = dhis2_mock.get(ANALYTICS_PATH).respond(json={"headers": [], "rows": []})
    units = dhis2_mock.get(ORG_UNITS_PATH).respond(json={"organisationUnits": [{"id": "OU_A"}, {"id": "OU_B"}]})
    assert reader.analytics(params) == {"headers": [], "rows": []}
    sent = analytics.calls.last.request.url
    assert sent.params.multi_items() == params
    assert str(sent) == reader.url_for(ANALYTICS_PATH, params)
    assert reader.org_units(["OU_A", "OU_B"]) == [{"id": "OU_A"}, {"id": "OU_B"}]
    sent = units.calls.last.request.url
    assert sent.params.multi_items() == [("filter", "id:in:[OU_A,OU_B]"), ("fields", ORG_UNIT_FIELDS),
                                         ("paging", "false")]
    assert str(sent) == reader.url_for(ORG_UNITS_PATH, org_unit_params(["OU_A", "OU_B"]))


def test_redact_url():
    assert redact_url("https://u:p@x.org:8443/dhis?a=1") == "https://x.org:8443/dhis?a=1"
    assert redact_url("https://x.org/dhis") == "https://x.org/dhis"
    assert redact_url("http://only-user@x.org") == "http://x.org"
    assert redact_url("http://u:p@[::1]:8080/dhis") == "http://[::1]:8080/dhis"
    assert redact_url("http://u:p@Host.Example:8080") == "http://Host.Example:8080"


def test_closed_readers_are_garbage_collected():
    # atexit._ncallbacks() cannot show this on CPython 3.11: unregister() only blanks the slot.
    # What matters is that nothing pins the reader or its DHIS2Client once closed.
    refs = []
    for _ in range(20):
        r = Dhis2Reader(DHIS2, username=USER, password=PASSWORD)
        refs.append((weakref.ref(r), weakref.ref(r._client)))
        r.close()
        del r
    gc.collect()
    assert all(reader_ref() is None and client_ref() is None for reader_ref, client_ref in refs)


def test_leak_check_detects_a_pinned_client():
    """Control for the test above: a bare DHIS2Client is pinned by its atexit registration."""
    raw = DHIS2Client(DHIS2, username=USER, password=PASSWORD)
    ref = weakref.ref(raw)
    raw.close()
    close = raw.close
    del raw
    gc.collect()
    try:
        assert ref() is not None
    finally:
        atexit.unregister(close)
        del close
    gc.collect()
    assert ref() is None


def test_404_on_system_info_points_at_the_base_url(dhis2_mock, reader):
    dhis2_mock.get("/api/system/info").respond(404, text="<html>Not Found</html>")
    with pytest.raises(Dhis2RequestFailed) as info:
        reader.system_info()
    assert "does not look like a DHIS2 API root" in str(info.value)
    assert "DHIS2_BASE_URL" in info.value.hint and "context path" in info.value.hint
