"""Retry policy for idempotent reads: exponential backoff with jitter, bounded attempts.

Only GETs go through here. A POST is sent exactly once: a retried prediction request
could create a duplicate prediction in chap.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from ..settings import get_settings

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_DELAY_SECONDS = 8.0


def backoff_delay(attempt: int) -> float:
    """Delay before retry number ``attempt`` (1-based): 0.5 s, 1 s, 2 s … capped at 8 s, ±25 % jitter.

    The first delay is CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS (0.5 s by default).
    """
    base = min(MAX_DELAY_SECONDS, get_settings().retry_backoff_seconds * 2 ** (attempt - 1))
    return base * random.uniform(0.75, 1.25)


def with_retries(
    call: Callable[[], T],
    *,
    attempts: int,
    retryable: Callable[[BaseException], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call`` up to ``attempts`` times while it raises a retryable error."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - re-raised unless retryable
            if attempt >= attempts or not retryable(exc):
                raise
            sleep(backoff_delay(attempt))
    raise AssertionError("unreachable")


def is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError)
