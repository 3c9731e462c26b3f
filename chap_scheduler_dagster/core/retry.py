"""The one retry policy for idempotent reads (tenacity): bounded attempts, exponential backoff with
jitter, and a server's ``Retry-After`` honoured (capped).

Only GETs go through here. A POST is sent exactly once: a retried prediction request
could create a duplicate prediction in chap.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import tenacity

from ..settings import get_settings
from .http_faults import looks_cut_off

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_DELAY_SECONDS = 8.0
# The longest wait a server's Retry-After gets (also bounded by the request timeout: a sensor's
# 10 s requests must fit Dagster's 60 s evaluation limit).
RETRY_AFTER_CAP_SECONDS = 30.0


class RetryableAnswer(Exception):
    """A GET answered with a status worth another try (429, 5xx); the response is kept for the error mapping."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def backoff_delay(attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): 0.5 s, 1 s, 2 s … capped at 8 s, ±25 % jitter.

    The first delay is CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS (0.5 s by default).
    """
    base = min(MAX_DELAY_SECONDS, get_settings().retry_backoff_seconds * 2 ** (attempt - 1))
    return base * random.uniform(0.75, 1.25)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The wait a ``Retry-After`` header asks for (seconds or an HTTP date), or None without a usable one."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_transient(exc: BaseException) -> bool:
    """Worth another GET: no answer (transport error), a 429/5xx, or JSON cut off on the way."""
    if isinstance(exc, json.JSONDecodeError):
        return looks_cut_off(exc.doc)
    return isinstance(exc, (httpx.TransportError, RetryableAnswer))


def get_policy(
    attempts: int,
    *,
    retryable: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    retry_after_cap: float = RETRY_AFTER_CAP_SECONDS,
) -> tenacity.Retrying:
    """Up to ``attempts`` tries while ``retryable``; the last error is raised as it is.

    The wait is the answer's Retry-After (at most ``retry_after_cap``, observed even when the backoff
    setting is 0), else :func:`backoff_delay`.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_seconds(exc.response) if isinstance(exc, RetryableAnswer) else None
        return min(after, retry_after_cap) if after is not None else backoff_delay(state.attempt_number)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(retryable),
        sleep=sleep,
        reraise=True,
    )
