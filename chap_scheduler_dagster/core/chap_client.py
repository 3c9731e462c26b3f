"""chap-core client over DHIS2's route proxy (``<dhis2>/api/routes/chap/run/<chap path>``).

Plain httpx on the run step's DHIS2 connection (``core.dhis2_http``) rather than dhis2-client, because
chap's error bodies must survive verbatim (dhis2-client collapses them). Every request has a timeout;
GETs follow the connection's retry policy; POSTs are sent once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from .chap_models import (
    ChapApi,
    ChapSystemInfo,
    JobDescription,
    PredictionInfo,
    PredictionSetup,
    PredictionSummary,
)
from .dhis2_http import Dhis2Connection, OnConnection
from .errors import (
    ChapHttpError,
    ChapJobFailed,
    ChapJobTimeout,
    ChapJobUnknown,
    ChapRejected,
    ChapError,
    ChapRouteMissing,
    ChapSubmitUncertain,
    ChapUnexpectedAnswer,
    ChapUnreachable,
    PredictionSetupNotFound,
    Rejection,
)
from .http_faults import (
    REACH_HINT,
    chap_call,
    cut_off_on_the_wire,
    explain,
    login_page,
    login_refused,
    looks_cut_off,
    looks_like_html,
    summarize_chap_detail,
    unreachable_text,
)
from .retry import RetryableAnswer

ROUTE_PREFIX = "/api/routes/chap/run"
# Statuses chap reports while a job is not finished yet (compared upper-case).
TRANSIENT_JOB_STATUSES = frozenset({"PENDING", "RECEIVED", "STARTED", "RUNNING", "QUEUED", "PROCESSING", "RETRY"})


class ChapClient(OnConnection):
    """Talks to one chap-core through one DHIS2, authenticating as the DHIS2 user, over a connection
    (see :class:`~.dhis2_http.OnConnection`)."""

    def __init__(self, dhis2: Dhis2Connection | str, **connect: Any) -> None:
        super().__init__(dhis2, **connect)
        self._api: ChapApi | None = None

    # ---- transport ----
    def _get(self, path: str, params: Any = None) -> Any:
        try:
            response = self.conn.get(ROUTE_PREFIX + path, params=params)
        except httpx.TransportError as exc:
            raise self._transport_error("GET", path, exc) from exc
        return self._decode("GET", path, response)

    def _post(self, path: str, *, content: bytes | Iterable[bytes], content_length: int | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if content_length is not None:
            headers["Content-Length"] = str(content_length)
        try:
            response = self.conn.http.post(ROUTE_PREFIX + path, content=content, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection was made, so nothing was sent: not uncertain.
            raise self._transport_error("POST", path, exc) from exc
        except httpx.TimeoutException as exc:
            raise ChapSubmitUncertain(
                path, f"no answer in time after sending the request ({type(exc).__name__})"
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise ChapSubmitUncertain(path, f"the connection was dropped ({type(exc).__name__}: {exc})") from exc
        except httpx.TransportError as exc:
            raise self._transport_error("POST", path, exc) from exc
        if response.status_code in (502, 503, 504):
            # The route may have forwarded the request before chap (or the proxy) failed to answer:
            # chap may have created the prediction. Never retried; the caller looks it up by name.
            raise ChapSubmitUncertain(path, f"HTTP {response.status_code} from DHIS2's route")
        return self._decode("POST", path, response)

    def get_array_text(self, path: str, params: Any = None) -> str:
        """A GET whose answer is a (large) JSON array, as text; retried and explained like any GET.

        Streamed, so the response does not keep its body: httpx responses sit in reference cycles
        and would hold several MB each until the next full garbage collection.
        """

        def once() -> tuple[httpx.Response, bytearray | None]:
            with self.conn.http.stream("GET", ROUTE_PREFIX + path, params=params) as response:
                if not 200 <= response.status_code < 300:
                    response.read()
                    return response, None
                body = bytearray()
                for piece in response.iter_bytes():
                    body += piece
                return response, body

        try:
            response, body = self.conn.retried(once)
        except RetryableAnswer as exc:
            response, body = exc.response, None
        except httpx.TransportError as exc:
            raise self._transport_error("GET", path, exc) from None
        if body is None or not body.lstrip().startswith(b"["):
            if body is not None:
                response._content = bytes(body)  # for the error mapping (an HTML login page, …)
            self._decode("GET", path, response)  # raises the error this answer means, if it has one
            raise ChapHttpError("GET", path, response.status_code, bytes(body or b"")[:300].decode(errors="replace"),
                                hint="Expected chap's list of forecast rows.")
        return body.decode("utf-8")

    def _transport_error(self, method: str, path: str, exc: Exception) -> ChapError:
        if cut_off_on_the_wire(exc):
            return ChapUnexpectedAnswer(
                method, path, "a complete answer", f"{type(exc).__name__}: {exc}",
                problem="the answer was cut off before its end",
            )
        return ChapUnreachable(unreachable_text(self.conn, exc, f" for chap {method} {path}"), hint=REACH_HINT)

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        call = chap_call(method, path)
        if status == 401:
            chap_body = _json_or_text(response)
            if isinstance(chap_body, dict) and "detail" in chap_body and "httpStatusCode" not in chap_body:
                # chap's own 401 relayed by the route (CHAP_API_TOKEN set): the route's credentials, not the user's.
                why = explain("chap", 401, call)
                raise ChapHttpError(method, path, status, chap_body["detail"], hint=why.fix, cause=why.cause)
        refused = login_refused(self.conn, status, " on the chap route")
        if refused is not None:
            raise refused
        body = _json_or_text(response)
        if 200 <= status < 300:
            if isinstance(body, _CutOff):
                raise ChapUnexpectedAnswer(
                    method, path, "complete JSON", body.text, problem=f"the answer was cut off after {body.size} bytes"
                )
            if isinstance(body, str) and looks_like_html(body):
                raise login_page(self.conn, " on the chap route")
            return body
        if isinstance(body, _CutOff):
            body = body.text
        web = isinstance(body, dict) and "httpStatusCode" in body  # a DHIS2 WebMessage: DHIS2 answered, not chap
        message = str(body.get("message", "")) if web else ""
        if status in (502, 503, 504):
            why = explain("chap", status, call)
            if web:
                said = (f"DHIS2's route 'chap' is configured but chap-core did not answer (HTTP {status}: {message}): "
                        f"{why.cause}")
            else:
                shown = _text_snippet(body) if isinstance(body, str) or body is None else summarize_chap_detail(body)
                said = f"chap {method} {path} -> HTTP {status} from DHIS2 or its proxy: {why.cause} ({shown})"
            raise ChapUnreachable(said, hint=why.fix)
        if web:
            if status == 404:
                raise ChapRouteMissing(
                    f"DHIS2 has no usable route 'chap' ({message})",
                    hint="Create a DHIS2 route with code 'chap' whose URL points at chap-core and ends in '/**', "
                    "and give this DHIS2 user access to it.",
                )
            if status == 403:
                raise ChapRouteMissing(
                    f"DHIS2 user {self.username!r} may not run the route 'chap' ({message})",
                    hint="Add one of the route's authorities to the DHIS2 user, or run as a user who has them.",
                )
            why = explain("dhis2", status, call)
            code = f" ({body['errorCode']})" if body.get("errorCode") else ""
            raise ChapHttpError(
                method, path, status, message, hint=why.fix,
                cause=f"DHIS2 answered for its route 'chap': {why.cause}", summary=f"{message or 'no message'}{code}",
            )
        if status == 400:
            detail = body.get("detail") if isinstance(body, dict) else None
            rejection = Rejection.from_detail(detail)
            if rejection is not None:
                raise ChapRejected(method, path, status, detail, rejection)
        if status == 404 and call == "job_status":
            why = explain("chap", 404, call)
            raise ChapJobUnknown(f"chap does not know job {path.rsplit('/', 1)[-1]}: {why.cause}", hint=why.fix)
        # FastAPI's {"detail": ...} is unwrapped; chap's 500 handler adds "error"/"type" beside
        # "detail": "Internal server error", and those carry the cause, so keep such bodies whole.
        detail = body["detail"] if isinstance(body, dict) and set(body) == {"detail"} else body
        why = explain("chap", status, call)
        summary = _text_snippet(body) if isinstance(body, str) else summarize_chap_detail(body)
        raise ChapHttpError(method, path, status, detail, hint=why.fix, cause=why.cause, summary=summary)

    # ---- system ----
    def system_info(self) -> ChapSystemInfo:
        return _validated(ChapSystemInfo, self._get("/system/info"), "GET", "/system/info", "chap's system info")

    # ---- configured models (prediction setups) ----
    def list_prediction_setups(self) -> list[PredictionSetup]:
        """All configured models, from whichever chap API generation the server offers."""
        if self._api in (None, ChapApi.PREDICTION_SETUPS):
            try:
                rows = self._get("/v1/crud/prediction-setups")
                self._api = ChapApi.PREDICTION_SETUPS
                return _setups(rows, "/v1/crud/prediction-setups")
            except ChapHttpError as exc:
                if exc.status_code != 404 or self._api is not None:
                    raise
        rows = self._get("/v1/crud/configured-models-with-data-source")
        self._api = ChapApi.LEGACY
        return _setups(rows, "/v1/crud/configured-models-with-data-source")

    @property
    def api(self) -> ChapApi | None:
        """The API generation detected by the last listing (None before any)."""
        return self._api

    def get_prediction_setup(self, setup_id: int) -> PredictionSetup:
        setups = self.list_prediction_setups()
        for setup in setups:
            if setup.id == setup_id:
                return setup
        known = sorted(s.id for s in setups)
        raise PredictionSetupNotFound(
            f"chap has no configured model with id {setup_id}; it has {known}",
            hint="The configured model was deleted in chap or the partition key is wrong: launch a partition chap has "
            "(listed above). The discovery sensor removes deleted ones from the partition list.",
        )

    # ---- submission (never retried) ----
    def submit_prediction(
        self,
        setup_id: int,
        body: bytes | Iterable[bytes],
        content_length: int | None,
        api: ChapApi | None = None,
    ) -> str:
        """POST the prediction request once. ``api`` is the generation detected when the setup was
        loaded (possibly by another client instance); without it, this client's own detection is used."""
        if (api or self._api) is ChapApi.LEGACY:
            path = "/v1/analytics/make-prediction-with-data-source"
        else:
            path = f"/v1/crud/prediction-setups/{setup_id}/run"
        answer = self._post(path, content=body, content_length=content_length)
        job_id = answer.get("id") if isinstance(answer, dict) else None
        if not job_id:
            raise ChapHttpError("POST", path, 200, answer, hint="chap accepted the request but returned no job id.")
        return str(job_id)

    # ---- jobs ----
    def job_status(self, job_id: str) -> str:
        try:
            status = self._get(f"/v1/jobs/{job_id}")
        except ChapHttpError as exc:
            if exc.status_code == 404:
                raise ChapJobUnknown(f"chap does not know job {job_id}") from exc
            raise
        if not isinstance(status, str):
            raise ChapUnexpectedAnswer("GET", f"/v1/jobs/{job_id}", "a job status (a bare string)", status)
        return status.strip().strip('"')

    def find_jobs_by_name(self, marker: str, setup_id: int | None = None, api: ChapApi | None = None) -> list[JobDescription]:
        """chap's jobs whose name contains ``marker``, newest first (``GET /v1/jobs?predictionSetupId=``).

        Checked against chap-core 2.5.1: a job's ``name`` is the ``name`` of the /run request, and
        the setup filter lists it from the moment it is queued.
        """
        legacy = (api or self._api) is ChapApi.LEGACY
        params = {"predictionSetupId": str(setup_id)} if setup_id is not None and not legacy else None
        rows = self._get("/v1/jobs", params=params)
        if not isinstance(rows, list):
            raise ChapUnexpectedAnswer("GET", "/v1/jobs", "a list of jobs", rows)
        found = []
        for row in rows:
            if isinstance(row, dict) and marker in str(row.get("name") or ""):
                found.append(_validated(JobDescription, row, "GET", "/v1/jobs", "a list of jobs"))
        return found

    def job_description(self, job_id: str) -> JobDescription | None:
        rows = self._get("/v1/jobs", params={"ids": job_id})
        if rows is not None and not isinstance(rows, list):
            raise ChapUnexpectedAnswer("GET", "/v1/jobs", "a list of jobs", rows)
        for row in rows or []:
            if isinstance(row, dict) and row.get("id") == job_id:
                return _validated(JobDescription, row, "GET", "/v1/jobs", "a list of jobs")
        return None

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout_seconds: float,
        poll_interval_seconds: float,
        on_status: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_poll: Callable[[str], None] | None = None,
    ) -> str:
        """Poll until the job leaves the transient states; returns the terminal status (upper-case).

        The job must be known to chap first: old chap builds answered "PENDING" for any id,
        which would make a typo poll until the deadline.
        """
        if self.job_description(job_id) is None:
            raise ChapJobUnknown(
                f"chap's job list has no job {job_id}",
                hint="The job was forgotten by chap (DELETE /v1/jobs) or never created; launch the run again.",
            )
        deadline = clock() + timeout_seconds
        last = ""
        while True:
            try:
                status = self.job_status(job_id).upper()
            except ChapUnreachable as exc:
                # chap or the route blinked while the job runs on: keep waiting until the deadline.
                if clock() >= deadline:
                    raise
                if on_status is not None:
                    on_status(f"not reachable, still waiting ({exc})")
                self.conn.sleep(poll_interval_seconds)
                continue
            if status != last and on_status is not None:
                on_status(status)
            last = status
            if on_poll is not None:  # progress lines while waiting (core/wait_progress.py)
                on_poll(status)
            if status not in TRANSIENT_JOB_STATUSES:
                return status
            if clock() >= deadline:
                raise ChapJobTimeout(
                    f"chap job {job_id} did not finish within {timeout_seconds:g} s (last status: {status})",
                    hint="chap keeps running it. Raise CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS if the model is "
                    "slow, or check chap-core's worker.",
                )
            self.conn.sleep(poll_interval_seconds)

    def job_failure_text(self, job_id: str, status: str) -> ChapJobFailed:
        description = self.job_description(job_id)
        error = (description.error if description else None) or "chap gave no error text"
        return ChapJobFailed(
            f"chap job {job_id} ended {status}: {error}",
            hint="See chap-core's job log (GET /v1/jobs/{id}/logs through the route) for the model's own output.",
        )

    # ---- results (only after SUCCESS: chap answers 500 on failed jobs) ----
    def find_prediction(self, prediction_id: int) -> PredictionInfo | None:
        """The prediction's metadata, or None when chap answers 404 (it does not hold it)."""
        path = f"/v1/crud/predictions/{prediction_id}"
        try:
            return _validated(PredictionInfo, self._get(path), "GET", path, "a prediction (PredictionInfo)")
        except ChapHttpError as exc:
            if exc.status_code == 404:
                return None
            raise

    def prediction_result(self, job_id: str) -> PredictionInfo:
        try:
            path = f"/v1/jobs/{job_id}/prediction_result"
            return _validated(PredictionInfo, self._get(path), "GET", path, "a prediction (PredictionInfo)")
        except ChapHttpError as exc:
            if exc.status_code not in (404, 405):
                raise
        # Older chap builds: the jobs list carries the prediction id as a string.
        description = self.job_description(job_id)
        if description is None or not description.result or not description.result.strip().isdigit():
            raise ChapHttpError(
                "GET", "/v1/jobs", 200, description.model_dump() if description else None,
                hint="chap reported SUCCESS but no prediction id.",
            )
        return PredictionInfo(id=int(description.result))

    def summarize_prediction(self, prediction_id: int, quantiles: list[float]) -> PredictionSummary:
        """Count and summarize the forecast values, one quantile per request.

        A national model has org units × periods × quantiles entries (150,000 for 10,000
        org units); asking per quantile keeps one fifth of them in memory at a time.
        """
        summary = PredictionSummary()
        for quantile in quantiles:
            path = f"/v1/analytics/prediction-entry/{prediction_id}"
            rows = self._get(path, params=[("quantiles", str(quantile))])
            if rows is not None and not isinstance(rows, list):
                raise ChapUnexpectedAnswer("GET", path, "a list of prediction values", rows)
            summary.add(rows or [], quantile)
        return summary


class _CutOff:
    """A body that starts like JSON but ends early: the answer was cut off on the way."""

    def __init__(self, text: str, size: int) -> None:
        self.text = text[:200]
        self.size = size


def _json_or_text(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = response.text
        if looks_cut_off(text):
            return _CutOff(text, len(response.content))
        return text


def _text_snippet(body: Any) -> str:
    text = body if isinstance(body, str) else orjson.dumps(body).decode() if body is not None else ""
    if looks_like_html(text):
        return "an HTML error page"
    return text[:300]


def _validated(model: Any, row: Any, method: str, path: str, expected: str) -> Any:
    """``model.model_validate(row)``, or a plain-words error naming what chap should have answered."""
    try:
        return model.model_validate(row)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "the answer"
        raise ChapUnexpectedAnswer(
            method, path, expected, row, problem=f"{where}: {first.get('msg', 'invalid')}"
        ) from None


def _setups(rows: Any, path: str) -> list[PredictionSetup]:
    expected = "a list of prediction setups"
    if not isinstance(rows, list):
        raise ChapUnexpectedAnswer("GET", path, expected, rows)
    return [_validated(PredictionSetup, r, "GET", path, expected) for r in rows]
