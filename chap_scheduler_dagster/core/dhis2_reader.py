"""Reading DHIS2 through ``dhis2-client``: system info, analytics and org units.

The adapter works around the library's known defects (reference/dhis2.md §1.10):
- every DHIS2Client registers ``atexit(close)``, pinning it for the life of the process,
  so we unregister it and close the client ourselves (one reader per run);
- its retries are immediate and cover 5xx only, so we switch them off and retry GETs
  with backoff on 5xx, 429 and transport errors;
- a login page (302, or 200 with HTML) and a 401 become a clear authentication error
  instead of a JSON crash; transport errors and timeouts get a message that names DHIS2.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from dhis2_client import DHIS2Client, DHIS2HTTPError
from pydantic import BaseModel, ConfigDict, Field

from .errors import Dhis2AuthFailed, Dhis2RequestFailed, Dhis2Unreachable, redact_url
from .http_faults import dhis2_call, explain, looks_cut_off
from .retry import RETRYABLE_STATUS, with_retries

# dhis2-client logs every non-2xx at ERROR through Python's last-resort handler;
# the scheduler reports errors itself, with context.
logging.getLogger("dhis2_client").addHandler(logging.NullHandler())

ANALYTICS_PATH = "/api/analytics"
ORG_UNITS_PATH = "/api/organisationUnits"
ORG_UNIT_FIELDS = "id,displayName,code,level,parent[id],geometry"

Params = Sequence[tuple[str, str]]


def org_unit_params(ids: Sequence[str], fields: str = ORG_UNIT_FIELDS) -> list[tuple[str, str]]:
    return [("filter", f"id:in:[{','.join(ids)}]"), ("fields", fields), ("paging", "false")]


class Dhis2SystemInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: str = "unknown"
    revision: str | None = None
    server_date: str | None = Field(default=None, alias="serverDate")
    server_time_zone: str | None = Field(default=None, alias="serverTimeZoneId")
    system_name: str | None = Field(default=None, alias="systemName")
    calendar: str | None = None


class Dhis2Reader:
    """One DHIS2 connection for the length of one run (or one sensor tick). Close it."""

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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._client = DHIS2Client(
            self.base_url,
            username=username or None,
            password=password or None if not token else None,
            token=token or None,
            timeout=timeout_seconds,
            connect_timeout=min(timeout_seconds, 15.0),
            retries=0,
        )
        atexit.unregister(self._client.close)
        self._get_attempts = get_attempts
        self._sleep = sleep

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Dhis2Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----
    def get(self, path: str, params: Params | dict[str, Any] | None = None) -> Any:
        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, DHIS2HTTPError):
                return exc.status_code in RETRYABLE_STATUS
            if isinstance(exc, json.JSONDecodeError):
                return looks_cut_off(exc.doc)  # cut short on the way: worth another try
            return isinstance(exc, httpx.TransportError)

        try:
            return with_retries(
                lambda: self._client.get(path, params=params),  # type: ignore[arg-type]
                attempts=self._get_attempts,
                retryable=retryable,
                sleep=self._sleep,
            )
        except DHIS2HTTPError as exc:
            raise self._http_error(path, exc) from None
        except json.JSONDecodeError as exc:
            if looks_cut_off(exc.doc):
                raise self._cut_off(path, f"{len(exc.doc):,} characters arrived, not complete JSON") from None
            # A 200 with a non-JSON body: DHIS2 served its login page (or a proxy served HTML).
            raise Dhis2AuthFailed(
                self.username or "<token>", self.base_url, "DHIS2 answered with an HTML page, not JSON (login page?)"
            ) from None
        except httpx.TimeoutException as exc:
            raise Dhis2Unreachable(
                f"DHIS2 at {redact_url(self.base_url)} did not answer {path} in time ({type(exc).__name__})",
                hint="DHIS2 may be overloaded (analytics tables running?). Try again later, or raise "
                "CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS.",
            ) from None
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.RemoteProtocolError) and "complete message body" in str(exc):
                raise self._cut_off(path, str(exc)) from None
            raise Dhis2Unreachable(
                f"could not reach DHIS2 at {redact_url(self.base_url)}: {type(exc).__name__}: {exc}",
                hint="Check DHIS2_BASE_URL and that DHIS2 is up and reachable from the Dagster run worker.",
            ) from None

    def _cut_off(self, path: str, detail: str) -> Dhis2RequestFailed:
        return Dhis2RequestFailed(
            f"DHIS2's answer to {path} was cut off before its end ({detail}); DHIS2 was reached, but the answer "
            "did not arrive whole",
            hint="The connection broke while DHIS2 (or a proxy in front of it) was sending. Try again; if it repeats "
            "for large answers, lower CHAP_SCHEDULER_MAX_ROWS_PER_REQUEST and check the proxy's timeouts and "
            "buffering limits.",
        )

    def _http_error(self, path: str, exc: DHIS2HTTPError) -> Exception:
        status = exc.status_code
        payload = exc.payload if isinstance(exc.payload, dict) else {}
        message = str(payload.get("message", "")).strip()
        if status in (301, 302, 303, 307, 308):
            return Dhis2AuthFailed(self.username or "<token>", self.base_url, f"HTTP {status} redirect to the login page")
        if status == 401:
            return Dhis2AuthFailed(self.username or "<token>", self.base_url, f"HTTP 401 {message or 'Unauthorized'}")
        if message.lower().startswith("<!doctype") or message.lower().startswith("<html"):
            message = "an HTML error page"
        why = explain("dhis2", status, dhis2_call(path))
        if status == 403:
            return Dhis2RequestFailed(
                f"DHIS2 user {self.username!r} may not read {path}: {message}", status, hint=why.fix
            )
        if status == 404 and path == "/api/system/info":
            return Dhis2RequestFailed(
                f"{redact_url(self.base_url)} does not look like a DHIS2 API root (HTTP 404 on {path})",
                status,
                hint=why.fix,
            )
        code = payload.get("errorCode")
        detail = f"{message} ({code})" if code else message
        return Dhis2RequestFailed(
            f"{why.cause} (DHIS2 {path} -> HTTP {status}): {detail or 'no message'}", status, hint=why.fix
        )

    # ---- endpoints ----
    def system_info(self) -> Dhis2SystemInfo:
        return Dhis2SystemInfo.model_validate(self.get("/api/system/info"))

    def analytics(self, params: Params) -> dict[str, Any]:
        return self.get(ANALYTICS_PATH, params=params)

    def org_units(self, ids: Sequence[str], fields: str = ORG_UNIT_FIELDS) -> list[dict[str, Any]]:
        answer = self.get(ORG_UNITS_PATH, params=org_unit_params(ids, fields))
        return list(answer.get("organisationUnits", []))

    def url_for(self, path: str, params: Params) -> str:
        """The exact URL httpx will send (for keeping request lines short)."""
        return str(httpx.URL(self.base_url + path, params=list(params)))
