"""Backoff and the bounded retry loop used for GETs."""

from __future__ import annotations

import httpx
import pytest

from chap_scheduler_dagster.core.retry import MAX_DELAY_SECONDS, backoff_delay, is_transport_error, with_retries
from chap_scheduler_dagster.settings import get_settings


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


def test_with_retries_stops_at_success():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return "ok"

    assert with_retries(flaky, attempts=5, retryable=is_transport_error, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2


def test_with_retries_gives_up_after_attempts_and_reraises_last():
    calls, sleeps = [], []

    def down():
        calls.append(1)
        raise httpx.ReadTimeout(f"timeout {len(calls)}")

    with pytest.raises(httpx.ReadTimeout, match="timeout 4"):
        with_retries(down, attempts=4, retryable=is_transport_error, sleep=sleeps.append)
    assert len(calls) == 4 and len(sleeps) == 3


def test_with_retries_does_not_retry_other_errors():
    calls, sleeps = [], []

    def broken():
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        with_retries(broken, attempts=4, retryable=is_transport_error, sleep=sleeps.append)
    assert calls == [1] and sleeps == []
