"""Errors an operator can act on.

Each error carries the plain-words cause (``str(err)``) and, where one exists, the fix
(``err.hint``). The run report shows both. No message ever contains a password: URLs are
passed through :func:`redact_url` and credentials are never formatted into text.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from .chap_models import Rejection  # noqa: F401 - chap's 400 model, imported from here too


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` part from a URL."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps the port and IPv6 brackets as written
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class SchedulerError(Exception):
    """Base of every error the scheduler explains to the operator."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class InvalidRunConfig(SchedulerError, ValueError):
    """The launch config passed Dagster's type check but is not usable."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(
            f"Invalid run config: {field_name}: {message}",
            hint="Fix ops.probe_covariates.config in the launchpad (or the schedule's run config) and launch again.",
        )
        self.field_name = field_name


# ---- DHIS2 -----------------------------------------------------------------------------


class Dhis2Error(SchedulerError):
    """DHIS2 could not be used."""


class Dhis2Unreachable(Dhis2Error):
    pass


class Dhis2AuthFailed(Dhis2Error):
    def __init__(self, username: str, base_url: str, detail: str) -> None:
        super().__init__(
            f"DHIS2 authentication failed for user {username!r} at {redact_url(base_url)} ({detail})",
            hint="Check DHIS2_USERNAME and DHIS2_PASSWORD (or DHIS2_TOKEN) in the code location's environment, "
            "and that the account is not locked. Restart the code location after changing them.",
        )


class Dhis2RequestFailed(Dhis2Error):
    def __init__(self, message: str, status_code: int | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


class CovariateDataMissing(Dhis2Error):
    pass


class RowBudgetExceeded(SchedulerError):
    pass


# ---- chap ------------------------------------------------------------------------------


class ChapError(SchedulerError):
    """chap-core, reached through the DHIS2 route, could not be used."""


class ChapUnreachable(ChapError):
    pass


class ChapRouteMissing(ChapError):
    pass


class ChapHttpError(ChapError):
    """chap answered with an error status; ``detail`` is chap's error body, verbatim."""

    def __init__(
        self, method: str, path: str, status_code: int, detail: object, hint: str = "", cause: str = "",
        summary: str = "",
    ) -> None:
        text = summary or _short(detail)
        message = f"{cause} (chap {method} {path} -> HTTP {status_code}): {text}" if cause else \
            f"chap {method} {path} -> HTTP {status_code}: {text}"
        super().__init__(message, hint=hint)
        self.method = method
        self.path = path
        self.status_code = status_code
        self.detail = detail


class ChapRejected(ChapHttpError):
    def __init__(self, method: str, path: str, status_code: int, detail: object, rejection: Rejection) -> None:
        super().__init__(
            method,
            path,
            status_code,
            detail,
            hint="DHIS2 lacks covariate values chap needs. Import the missing values into DHIS2, "
            "or launch with end_mode 'fixed'/'offset' to end the window before the gap while keeping two whole "
            "years of history (the run's report computes that end when it knows the window).",
        )
        self.rejection = rejection

    def __str__(self) -> str:
        return f"chap rejected the prediction: {self.rejection.message} (imported {self.rejection.imported_count})"


class ChapJobFailed(ChapError):
    pass


class ChapJobTimeout(ChapError):
    pass


class ChapJobUnknown(ChapError):
    pass


class PredictionSetupNotFound(ChapError):
    pass


class ChapSubmitUncertain(ChapUnreachable):
    """The POST may or may not have reached chap; it is not retried to avoid a duplicate prediction.

    ``what`` says how its answer was lost (a timeout after sending, HTTP 502/503/504 from the
    route, a dropped connection). The caller then looks the prediction up by name in chap.
    """

    def __init__(self, path: str, what: str, message: str = "", hint: str = "") -> None:
        super().__init__(
            message or f"chap POST {path}: {what}; chap may or may not have created the prediction",
            hint=hint
            or "Not retried, to avoid a duplicate prediction. Look in chap's job list for this run's prediction "
            "before launching again; raise the DHIS2 route's responseTimeoutSeconds if chap is slow to accept "
            "large requests.",
        )
        self.path = path
        self.what = what


class ChapPredictionNotCreated(ChapError):
    """The POST's answer was lost and chap has no job by this run's name: nothing was created."""


class ChapUnexpectedAnswer(ChapError):
    """chap answered 2xx, but with something that is not what the call returns (or cut short)."""

    def __init__(self, method: str, path: str, expected: str, got: object, problem: str = "") -> None:
        shown = got if isinstance(got, str) else json.dumps(got, default=str)
        shown = shown if len(shown) <= 200 else shown[:200] + "…"
        super().__init__(
            f"chap answered something that is not {expected} on {method} {path}"
            + (f" ({problem})" if problem else "")
            + f": {shown}",
            hint="Check that the DHIS2 route 'chap' points at chap-core itself (not a proxy's error page) and that "
            "chap-core is a version this scheduler supports (2.x with prediction setups); then launch again.",
        )
        self.expected = expected


def _short(detail: object, limit: int = 2000) -> str:
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
