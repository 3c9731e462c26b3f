"""What a failed request to DHIS2 or to chap (through DHIS2's route) means, and what to do.

The one error mapping of the HTTP layer (``core.dhis2_http``): a login refused (401, a redirect to
DHIS2's login page, its HTML page), no answer or no answer in time, an answer cut off on the way,
and per status one table for both services: the cause in plain words and a fix that works, with
refinements for the calls where a status means something specific (a 404 on the job status is
not a 404 on the prediction request). chap's own error bodies are summarised by
:func:`summarize_chap_detail` (field and message, never the raw JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx

from .errors import Dhis2AuthFailed, Dhis2RequestFailed, Dhis2Unreachable, redact_url

if TYPE_CHECKING:
    from .dhis2_http import Dhis2Connection

Service = Literal["chap", "dhis2"]

STATUSES = (400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504)

# The calls each service gets from the scheduler (names used in the table).
CHAP_CALLS = ("system_info", "list_setups", "submit", "job_status", "job_list", "prediction_result",
              "prediction_values")
DHIS2_CALLS = ("system_info", "analytics", "org_units")


@dataclass(frozen=True)
class Explanation:
    cause: str
    fix: str


_RATE = Explanation(
    "too many requests: DHIS2 or a proxy in front of it is limiting this user",
    "Try again later. If it keeps happening, lower CHAP_SCHEDULER_FETCH_CONCURRENCY and the per-DHIS2 run limit "
    "in dagster.yaml, or ask the DHIS2 administrator to raise the limit for this user.",
)
_ROOT_FIX = "Set DHIS2_BASE_URL to the DHIS2 root, including any context path (e.g. https://host/dhis)."
_CHAP_DOWN = "Check that chap-core is running (GET /health/ready on chap answers 'success') and that the DHIS2 route " \
    "'chap' points at it; then launch again."

TABLE: dict[tuple[Service, int], Explanation] = {
    # ---- chap, through DHIS2's route ----
    ("chap", 400): Explanation(
        "chap refused the request as invalid",
        "Read chap's message: it names what is wrong. Data problems are fixed in DHIS2, configured-model problems "
        "in chap; then launch again.",
    ),
    ("chap", 401): Explanation(
        "chap-core requires an API token the DHIS2 route does not send",
        "Give the DHIS2 route 'chap' auth of type api-token with chap's CHAP_API_TOKEN.",
    ),
    ("chap", 403): Explanation(
        "chap-core refused access",
        "Check the API token the DHIS2 route 'chap' sends (CHAP_API_TOKEN) and chap-core's access settings.",
    ),
    ("chap", 404): Explanation(
        "chap does not have what was asked for",
        "Check that the DHIS2 route 'chap' points at chap-core's root (ending in '/**') and that chap-core is "
        "version 2.x.",
    ),
    ("chap", 409): Explanation(
        "chap reports a conflict with its current state",
        "Read chap's message; an archived configured model must be un-archived in chap (or another one chosen).",
    ),
    ("chap", 422): Explanation(
        "chap refused the request's content",
        "The fields named are what chap refused. 'extra_forbidden' or 'missing' fields mean this scheduler and "
        "chap-core disagree on the API: use chap-core 2.x. Empty data or a missing target column means DHIS2 "
        "returned no values for the configured model's data elements.",
    ),
    ("chap", 429): _RATE,
    ("chap", 500): Explanation(
        "chap-core failed with an internal error",
        "This is an error inside chap-core, not a setting of the scheduler: see chap-core's log for the run's "
        "time. 'Index contains duplicate entries' means the same org unit and period were sent twice; report "
        "it with the run id.",
    ),
    ("chap", 502): Explanation("DHIS2's route 'chap' got no usable answer from chap-core (bad gateway)", _CHAP_DOWN),
    ("chap", 503): Explanation("chap-core or DHIS2's route 'chap' is unavailable", _CHAP_DOWN),
    ("chap", 504): Explanation(
        "chap-core did not answer DHIS2's route in time",
        "Check that chap-core is running and not overloaded; raise the route's responseTimeoutSeconds "
        "(default 5 s) if chap is slow to answer.",
    ),
    # ---- DHIS2 ----
    ("dhis2", 400): Explanation(
        "DHIS2 refused the request as invalid",
        "Check the configured model's data element ids, org units and period type in chap against DHIS2.",
    ),
    ("dhis2", 401): Explanation(
        "DHIS2 did not accept the credentials",
        "Check DHIS2_USERNAME and DHIS2_PASSWORD (or DHIS2_TOKEN) in the code location's environment and that the "
        "account is not locked; restart the code location after changing them.",
    ),
    ("dhis2", 403): Explanation(
        "the DHIS2 user may not do this",
        "Give the DHIS2 user read access to the configured model's data elements and org units, and the "
        "authority to run the route 'chap'.",
    ),
    ("dhis2", 404): Explanation("DHIS2 has nothing at this address", _ROOT_FIX),
    ("dhis2", 409): Explanation(
        "DHIS2 could not carry out the request (conflict)",
        "Read DHIS2's message and error code (e.g. E7124: none of the data elements, org units or periods is "
        "valid): fix the configured model's mappings in chap, or run the analytics tables in DHIS2.",
    ),
    ("dhis2", 422): Explanation(
        "DHIS2 could not process the request",
        "Read DHIS2's message; check the configured model's data element ids and org units in chap.",
    ),
    ("dhis2", 429): _RATE,
    ("dhis2", 500): Explanation(
        "DHIS2 failed with an internal error",
        "See the DHIS2 server log for the time of the run. Analytics errors often clear once DHIS2's analytics "
        "tables finish generating: try again later.",
    ),
    ("dhis2", 502): Explanation(
        "a proxy in front of DHIS2 got no usable answer from DHIS2 (bad gateway)",
        "DHIS2 is down or restarting; try again later, or ask its administrator.",
    ),
    ("dhis2", 503): Explanation(
        "DHIS2 is unavailable (maintenance or overload)",
        "Try again later; runs on a schedule will retry on their next tick.",
    ),
    ("dhis2", 504): Explanation(
        "DHIS2 (or a proxy in front of it) took too long to answer",
        "Try again later; for analytics, lower CHAP_SCHEDULER_MAX_ROWS_PER_REQUEST so each query is smaller.",
    ),
}

# Where a status means something specific on one call.
OVERRIDES: dict[tuple[Service, int, str], Explanation] = {
    ("chap", 404, "submit"): Explanation(
        "chap has no such configured model (deleted in chap?)",
        "The configured model was deleted in chap; the discovery sensor removes its partition. Pick another one.",
    ),
    ("chap", 404, "job_status"): Explanation(
        "chap no longer knows the job (it was deleted, or chap's Redis lost its job records)",
        "The prediction may or may not have been made: look in chap's predictions for one whose name ends with "
        "this run's '[dagster run …]' before launching again; if there is none, launching again is safe.",
    ),
    ("chap", 404, "list_setups"): Explanation(
        "this chap-core has no prediction setups (configured models) API",
        "Use chap-core 2.x, and check that the DHIS2 route 'chap' points at chap-core's root.",
    ),
    ("chap", 404, "prediction_values"): Explanation(
        "chap has no prediction with this id (deleted in chap?)",
        "The prediction was deleted in chap after it was made; launch the run again.",
    ),
    ("chap", 409, "submit"): Explanation(
        "chap refused to run the configured model (its model is archived)",
        "Un-archive the configured model's model in chap, or choose another configured model.",
    ),
    ("chap", 400, "prediction_result"): Explanation(
        "chap says the job is still running",
        "Launch again later; raise CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS if the model is slow.",
    ),
    ("dhis2", 404, "system_info"): Explanation("the address does not look like a DHIS2 API root", _ROOT_FIX),
    ("dhis2", 409, "analytics"): Explanation(
        "DHIS2 could not answer the analytics query",
        "E7124 means none of the data elements, org units or periods is valid: check the configured model's data "
        "element ids in chap against DHIS2. Otherwise run the analytics tables in DHIS2 (Data Administration -> "
        "Analytics tables) and launch again.",
    ),
}


def explain(service: Service, status: int, call: str = "") -> Explanation:
    """The cause and the fix for ``status`` on ``call``; a generic one for statuses outside the table."""
    found = OVERRIDES.get((service, status, call)) or TABLE.get((service, status))
    if found is not None:
        return found
    who = "chap" if service == "chap" else "DHIS2"
    if 500 <= status < 600:
        return Explanation(f"{who} answered with a server error", "Try again later; if it persists see its log.")
    return Explanation(f"{who} refused the request", f"Read {who}'s message; check the configured model in chap.")


def chap_call(method: str, path: str) -> str:
    """The table's name for a chap call."""
    if method == "POST":
        return "submit"
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:2] == ["system", "info"]:
        return "system_info"
    if parts[:3] in (["v1", "crud", "prediction-setups"], ["v1", "crud", "configured-models-with-data-source"]):
        return "list_setups"
    if parts[:2] == ["v1", "jobs"]:
        if len(parts) == 2:
            return "job_list"
        if len(parts) == 3:
            return "job_status"
        return "prediction_result"
    if parts[:3] == ["v1", "analytics", "prediction-entry"]:
        return "prediction_values"
    return ""


def dhis2_call(path: str) -> str:
    if path.startswith("/api/system/info"):
        return "system_info"
    if path.startswith("/api/analytics"):
        return "analytics"
    if path.startswith("/api/organisationUnits"):
        return "org_units"
    return ""


def summarize_chap_detail(body: object, limit: int = 400) -> str:
    """chap's error body in plain words: each validation error as 'field: message (type)', a 500's
    exception type and text, a plain detail string as it is."""
    detail = body.get("detail") if isinstance(body, dict) and "detail" in body else body
    if isinstance(body, dict) and body.get("detail") == "Internal server error" and ("error" in body or "type" in body):
        text = f"{body.get('type') or 'Exception'}: {body.get('error') or ''}".strip()
    elif isinstance(detail, list) and all(isinstance(e, dict) for e in detail):
        parts = []
        for e in detail:
            loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
            where = ".".join(loc) or "request"
            kind = f" ({e['type']})" if e.get("type") else ""
            parts.append(f"{where}: {e.get('msg', 'invalid')}{kind}")
        text = "; ".join(parts)
    elif isinstance(detail, str):
        text = detail
    elif isinstance(detail, dict) and isinstance(detail.get("message"), str):
        text = detail["message"]
    elif detail is None:
        text = "no message"
    else:
        text = json.dumps(detail, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def looks_cut_off(text: str) -> bool:
    """A body that starts like JSON but does not parse was cut short on the way."""
    return text.lstrip()[:1] in ("{", "[", '"')


# ---- no usable answer: the login refused, nothing or part of an answer ------------------------

REACH_HINT = "Check DHIS2_BASE_URL and that DHIS2 is up and reachable from the Dagster run worker."
LOGIN_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith("<!doctype html") or head.startswith("<html")


def login_refused(conn: Dhis2Connection, status: int, where: str = "", message: str = "") -> Dhis2AuthFailed | None:
    """DHIS2 did not let the user in: a 401, or a redirect to its login page (None for any other status)."""
    if status in LOGIN_REDIRECTS:
        return Dhis2AuthFailed(conn.user, conn.base_url, f"HTTP {status} redirect to the login page{where}")
    if status == 401:
        return Dhis2AuthFailed(conn.user, conn.base_url, f"HTTP 401 {message or 'Unauthorized'}{where}")
    return None


def login_page(conn: Dhis2Connection, where: str = "") -> Dhis2AuthFailed:
    """A 200 with HTML where JSON was asked for: DHIS2 (or a proxy) served its login page."""
    return Dhis2AuthFailed(conn.user, conn.base_url, f"DHIS2 answered with an HTML page, not JSON (login page?){where}")


def cut_off_on_the_wire(exc: BaseException) -> bool:
    # httpx/h11: "peer closed connection without sending complete message body: received N bytes, expected M"
    return isinstance(exc, httpx.RemoteProtocolError) and "complete message body" in str(exc)


def unreachable_text(conn: Dhis2Connection, exc: BaseException, doing: str = "") -> str:
    """No answer at all (refused, reset, DNS, …), in words naming DHIS2's redacted address and what was being done."""
    return f"could not reach DHIS2 at {redact_url(conn.base_url)}{doing}: {type(exc).__name__}: {exc}"


def timed_out(conn: Dhis2Connection, exc: BaseException, what: str, hint: str, then: str = "") -> Dhis2Unreachable:
    return Dhis2Unreachable(
        f"DHIS2 at {redact_url(conn.base_url)} did not answer {what} in time ({type(exc).__name__}){then}", hint=hint
    )


def dhis2_cut_off(path: str, detail: str) -> Dhis2RequestFailed:
    return Dhis2RequestFailed(
        f"DHIS2's answer to {path} was cut off before its end ({detail}); DHIS2 was reached, but the answer "
        "did not arrive whole",
        hint="The connection broke while DHIS2 (or a proxy in front of it) was sending. Try again; if it repeats "
        "for large answers, lower CHAP_SCHEDULER_MAX_ROWS_PER_REQUEST and check the proxy's timeouts and "
        "buffering limits.",
    )
