"""The one retry policy for GETs (core/retry.py): backoff, bounded attempts, Retry-After."""

from __future__ import annotations

from email.utils import format_datetime
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from chap_scheduler_dagster.core.chap_client import ChapClient
from chap_scheduler_dagster.core.dhis2_http import Dhis2Connection
from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
from chap_scheduler_dagster.core.errors import ChapSubmitUncertain, Dhis2RequestFailed
from chap_scheduler_dagster.core.retry import (
    MAX_DELAY_SECONDS,
    RETRY_AFTER_CAP_SECONDS,
    backoff_delay,
    get_policy,
    is_transient,
    retry_after_seconds,
)
from chap_scheduler_dagster.settings import get_settings

from .core_fixtures import CHAP, DHIS2, PASSWORD, USER

INFO = {"version": "2.41.3"}


def test_backoff_doubles_with_jitter_and_is_capped(monkeypatch):
    monkeypatch.delenv("CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS")  # the default policy (conftest sets 0)
    get_settings.cache_clear()
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0), (30, 8.0)]:
        delays = [backoff_delay(attempt) for _ in range(200)]
        assert all(0.75 * base <= d <= 1.25 * base for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert max(backoff_delay(40) for _ in range(200)) <= MAX_DELAY_SECONDS * 1.25


def test_backoff_follows_the_setting(monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS", "2")
    get_settings.cache_clear()
    assert all(1.5 <= backoff_delay(1) <= 2.5 for _ in range(50))
    assert all(6.0 <= backoff_delay(3) <= MAX_DELAY_SECONDS * 1.25 for _ in range(50))
    monkeypatch.setenv("CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS", "0")
    get_settings.cache_clear()
    assert {backoff_delay(n) for n in range(1, 10)} == {0.0}


def test_the_policy_stops_at_success():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return "ok"

    assert get_policy(5, retryable=is_transient, sleep=sleeps.append)(flaky) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2


def test_the_policy_gives_up_after_attempts_and_reraises_last():
    calls, sleeps = [], []

    def down():
        calls.append(1)
        raise httpx.ReadTimeout(f"timeout {len(calls)}")

    with pytest.raises(httpx.ReadTimeout, match="timeout 4"):
        get_policy(4, retryable=is_transient, sleep=sleeps.append)(down)
    assert len(calls) == 4 and len(sleeps) == 3


def test_the_policy_does_not_retry_other_errors():
    calls, sleeps = [], []

    def broken():
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        get_policy(4, retryable=is_transient, sleep=sleeps.append)(broken)
    assert calls == [1] and sleeps == []


# ---- Retry-After: observed even with CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS=0 (conftest), capped ----------


def test_retry_after_header_forms():
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert retry_after_seconds(answer("7")) == 7.0
    in_20_s = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 <= retry_after_seconds(answer(in_20_s)) <= 20
    assert retry_after_seconds(answer(format_datetime(datetime(2001, 1, 1, tzinfo=UTC), usegmt=True))) == 0.0
    assert retry_after_seconds(answer("soon")) is None
    assert retry_after_seconds(httpx.Response(503)) is None


@pytest.mark.parametrize("status", [429, 503])
def test_chap_get_waits_what_retry_after_asks(status):
    waits: list[float] = []
    with respx.mock(base_url=CHAP) as mock, ChapClient(DHIS2, username=USER, password=PASSWORD, sleep=waits.append) as c:
        route = mock.get("/system/info").mock(side_effect=[
            httpx.Response(status, headers={"Retry-After": "3"}, text="<html>busy</html>"),
            httpx.Response(200, json={"chap_core_version": "2.5.1"}),
        ])
        assert c.system_info().chap_core_version == "2.5.1"
    assert route.call_count == 2 and waits == [3.0]


def test_dhis2_client_reads_wait_what_retry_after_asks():
    """dhis2-client's own GETs go through the connection, so its answers' Retry-After counts too."""
    waits: list[float] = []
    with respx.mock(base_url=DHIS2) as mock, Dhis2Reader(DHIS2, username=USER, password=PASSWORD,
                                                         sleep=waits.append) as r:
        route = mock.get("/api/system/info").mock(side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "slow down"}),
            httpx.Response(503, text="<html>busy</html>"),  # no Retry-After: the backoff (0 here)
            httpx.Response(200, json=INFO),
        ])
        assert r.system_info().version == "2.41.3"
    assert route.call_count == 3 and waits == [2.0, 0.0]


def test_retry_after_is_capped_and_attempts_stay_bounded():
    waits: list[float] = []
    with respx.mock(base_url=DHIS2) as mock, Dhis2Reader(DHIS2, username=USER, password=PASSWORD, get_attempts=3,
                                                         sleep=waits.append) as r:
        route = mock.get("/api/system/info").respond(503, headers={"Retry-After": "3600"}, text="down")
        with pytest.raises(Dhis2RequestFailed) as err:
            r.system_info()
    assert err.value.status_code == 503
    assert route.call_count == 3 and waits == [RETRY_AFTER_CAP_SECONDS] * 2
    # A connection with short requests (a sensor's) never waits longer than one request may take.
    waits.clear()
    with respx.mock(base_url=DHIS2) as mock, Dhis2Reader(DHIS2, username=USER, password=PASSWORD, get_attempts=2,
                                                         timeout_seconds=10, sleep=waits.append) as r:
        mock.get("/api/system/info").respond(503, headers={"Retry-After": "3600"}, text="down")
        with pytest.raises(Dhis2RequestFailed):
            r.system_info()
    assert waits == [10.0]


def test_posts_are_sent_once_whatever_retry_after_says():
    waits: list[float] = []
    with respx.mock(base_url=CHAP) as mock, ChapClient(DHIS2, username=USER, password=PASSWORD, sleep=waits.append) as c:
        route = mock.post("/v1/crud/prediction-setups/3/run").respond(503, headers={"Retry-After": "1"})
        with pytest.raises(ChapSubmitUncertain):
            c.submit_prediction(3, b"{}", 2)
    assert route.call_count == 1 and waits == []
    with respx.mock(base_url=DHIS2) as mock, Dhis2Connection(DHIS2, username=USER, password=PASSWORD,
                                                             sleep=waits.append) as conn:
        route = mock.post("/api/dataValueSets").respond(503, headers={"Retry-After": "1"})
        with pytest.raises(Dhis2RequestFailed):
            conn.writer().post_data_values(b'{"dataValues": []}', dry_run=True)
    assert route.call_count == 1 and waits == []
