"""One connection to one DHIS2 as its configured user: base URL, auth, timeouts, one httpx client and
the GET retry policy. The chap route (``core.chap_client``), the Web API reads (``core.dhis2_reader``,
through dhis2-client) and the data-value writes (``core.dhis2_import``) all go through it, so a run
step opens one connection whatever it talks to. What a failure means is decided in ``core.http_faults``.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from .retry import RETRY_AFTER_CAP_SECONDS, RETRYABLE_STATUS, RetryableAnswer, get_policy

if TYPE_CHECKING:
    from .chap_client import ChapClient
    from .dhis2_import import Dhis2Writer
    from .dhis2_reader import Dhis2Reader

T = TypeVar("T")


class Dhis2Connection:
    """Basic auth, or DHIS2's ``ApiToken`` header when a token is set. Close it (use ``with``).

    Redirects are not followed: DHIS2 answers a failed login with a 302 to its login page, which must be
    seen as an authentication failure, not followed to an HTML page.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str = "",
        password: str = "",
        token: str = "",
        timeout_seconds: float = 60.0,
        get_attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password if not token else ""
        self.token = token
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = token if token.startswith(("ApiToken ", "Bearer ")) else f"ApiToken {token}"
        self.http = httpx.Client(
            base_url=self.base_url,
            auth=(username, password) if username and not token else None,
            headers=headers,
            timeout=self.timeout(timeout_seconds),
            follow_redirects=False,
            transport=transport,
            verify=tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
            event_hooks={"response": [_raise_retryable]},
        )
        self._policy = get_policy(get_attempts, sleep=sleep, retry_after_cap=min(RETRY_AFTER_CAP_SECONDS, timeout_seconds))

    @staticmethod
    def timeout(seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(seconds, 15.0))

    @property
    def user(self) -> str:
        """Who the errors name: the DHIS2 user, or ``<token>``."""
        return self.username or "<token>"

    # ---- lifecycle ----
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Dhis2Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- GETs under the one retry policy; POSTs go out once through ``http`` ----
    def retried(self, call: Callable[[], T]) -> T:
        """``call`` (one GET and the reading of its answer) under the retry policy; the last error is raised."""
        return self._policy(call)

    def get(self, path: str, params: Any = None) -> httpx.Response:
        """A GET, retried; a 429/5xx that outlasts the attempts comes back as the answer, for the caller to explain."""
        try:
            return self.retried(lambda: self.http.get(path, params=params))
        except RetryableAnswer as exc:
            return exc.response

    # ---- what talks over it (built once per connection) ----
    @cached_property
    def chap(self) -> "ChapClient":
        from .chap_client import ChapClient  # the clients import this module

        return ChapClient(self)

    @cached_property
    def reader(self) -> "Dhis2Reader":
        from .dhis2_reader import Dhis2Reader

        return Dhis2Reader(self)

    def writer(self, timeout_seconds: float | None = None) -> "Dhis2Writer":
        from .dhis2_import import Dhis2Writer

        return Dhis2Writer(self, timeout_seconds=timeout_seconds)


@cache
def tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default verification context, built once per process and CA location.

    Building it loads the whole CA bundle (about 25 ms of CPU); every connection did that, once per run step.
    The CA location is part of the key, so SSL_CERT_FILE/SSL_CERT_DIR keep their meaning.
    """
    return httpx.create_ssl_context()


def _raise_retryable(response: httpx.Response) -> None:
    # A response hook, so the GETs dhis2-client makes are retried (with their Retry-After) like our own.
    if response.request.method == "GET" and response.status_code in RETRYABLE_STATUS:
        response.read()
        raise RetryableAnswer(response)


class OnConnection:
    """A client over a :class:`Dhis2Connection`: given one, it shares it (closing it too when ``owns``);
    given a URL and the connection's keyword arguments, it opens its own and closes it with itself."""

    def __init__(self, dhis2: "Dhis2Connection | str", *, owns: bool = False, **connect: Any) -> None:
        self._owns = owns or not isinstance(dhis2, Dhis2Connection)
        self.conn = dhis2 if isinstance(dhis2, Dhis2Connection) else Dhis2Connection(dhis2, **connect)

    @property
    def base_url(self) -> str:
        return self.conn.base_url

    @property
    def username(self) -> str:
        return self.conn.username

    def close(self) -> None:
        if self._owns:
            self.conn.close()

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
