"""Reading DHIS2 through ``dhis2-client``: system info, analytics and org units.

The adapter works around the library's known defects (reference/dhis2.md §1.10):
- it cannot be given an httpx client, only build its own (``_build_client``); it is made to use the
  run step's connection (``core.dhis2_http``) instead, so it opens no second pool;
- every DHIS2Client registers ``atexit(close)``, pinning it for the life of the process,
  so we unregister it and leave closing to the connection;
- its retries are immediate and cover 5xx only, so we switch them off; the connection's policy
  retries GETs with backoff (and Retry-After) on 429, 5xx, transport errors and cut-off answers;
- its error payload collapses a non-JSON body into a message: a login page (302, or 200 with HTML)
  and a 401 become a clear authentication error, HTML error pages are named, never quoted.
"""

from __future__ import annotations

import atexit
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from dhis2_client import DHIS2Client, DHIS2HTTPError
from pydantic import BaseModel, ConfigDict, Field

from .dhis2_http import Dhis2Connection, OnConnection
from .errors import Dhis2RequestFailed, Dhis2Unreachable, redact_url
from .http_faults import (
    REACH_HINT,
    cut_off_on_the_wire,
    dhis2_call,
    dhis2_cut_off,
    explain,
    login_page,
    login_refused,
    looks_cut_off,
    looks_like_html,
    timed_out,
    unreachable_text,
)
from .retry import RetryableAnswer

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


class _SharedClient(DHIS2Client):
    """dhis2-client on the connection's httpx client: its only way in is the client it builds."""

    def __init__(self, http: httpx.Client, base_url: str, **auth: Any) -> None:
        self._shared = http
        super().__init__(base_url, retries=0, **auth)
        atexit.unregister(self.close)

    def _build_client(self) -> httpx.Client:
        return self._shared

    def close(self) -> None:  # the connection closes the httpx client
        self._client = None


class Dhis2Reader(OnConnection):
    """DHIS2's Web API over a connection (see :class:`~.dhis2_http.OnConnection`)."""

    def __init__(self, dhis2: Dhis2Connection | str, **connect: Any) -> None:
        super().__init__(dhis2, **connect)
        conn = self.conn
        # Its per-request auth must be the connection's: an explicit None would switch auth off.
        auth = {"token": conn.token} if conn.token else {"username": conn.username or None,
                                                          "password": conn.password or None}
        self._client = _SharedClient(conn.http, conn.base_url, **auth)

    # ---- requests ----
    def _retried_get(self, path: str, params: Params | dict[str, Any] | None) -> Any:
        try:
            return self.conn.retried(lambda: self._client.get(path, params=params))  # type: ignore[arg-type]
        except RetryableAnswer as exc:  # a 429/5xx that outlasted the attempts: as dhis2-client reports the others
            raise DHIS2HTTPError(exc.response.status_code, path, _payload(exc.response)) from None

    def get(self, path: str, params: Params | dict[str, Any] | None = None) -> Any:
        try:
            return self._retried_get(path, params)
        except DHIS2HTTPError as exc:  # the translated error keeps it as its __context__ (preflight reads it)
            raise self._http_error(path, exc) from None
        except json.JSONDecodeError as exc:
            if looks_cut_off(exc.doc):
                raise dhis2_cut_off(path, f"{len(exc.doc):,} characters arrived, not complete JSON") from None
            # A 200 with a non-JSON body: DHIS2 served its login page (or a proxy served HTML).
            raise login_page(self.conn) from None
        except httpx.TimeoutException as exc:
            raise timed_out(
                self.conn, exc, path, hint="DHIS2 may be overloaded (analytics tables running?). Try again later, "
                "or raise CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS.",
            ) from None
        except httpx.TransportError as exc:
            if cut_off_on_the_wire(exc):
                raise dhis2_cut_off(path, str(exc)) from None
            raise Dhis2Unreachable(unreachable_text(self.conn, exc), hint=REACH_HINT) from None

    def _http_error(self, path: str, exc: DHIS2HTTPError) -> Exception:
        status = exc.status_code
        payload = exc.payload if isinstance(exc.payload, dict) else {}
        message = str(payload.get("message", "")).strip()
        refused = login_refused(self.conn, status, message=message)
        if refused is not None:
            return refused
        if looks_like_html(message):
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


def _payload(response: httpx.Response) -> Any:
    """The error body as dhis2-client would give it: the JSON, or the text as its message."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {"message": response.text}
