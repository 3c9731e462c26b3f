"""Writing data values into DHIS2: ``POST /api/dataValueSets`` and its import summary.

Plain httpx on the run step's DHIS2 connection (not dhis2-client) because a 409 with status WARNING is an import summary to
read, not a transport failure, and dhis2-client turns every non-2xx into an exception.
Imports are never retried: a failed chunk is reported, and the operator republishes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

from .dhis2_http import Dhis2Connection, OnConnection
from .errors import Dhis2RequestFailed, Dhis2Unreachable
from .http_faults import login_refused, timed_out, unreachable_text

DATA_VALUE_SETS = "/api/dataValueSets"
Strategy = Literal["CREATE_AND_UPDATE", "DELETE"]

# What an operator does about each conflict a forecast writer meets (reference/publishing.md §5).
CONFLICT_FIXES: dict[str, str] = {
    "E7610": "The target data element does not exist or this DHIS2 user cannot see it: fix the quantile target "
    "in chap, or share the data element with the user (metadata read, data write).",
    "E7611": "DHIS2 does not accept this period id: check the setup's period type against the data element's.",
    "E7612": "The org unit is unknown or outside the user's data capture org units: give the DHIS2 user a "
    "capture org unit above every org unit of the configured model.",
    "E7619": "The value does not fit the data element's value type: use a NUMBER data element for quantiles "
    "(INTEGER types reject decimals).",
    "E7640": "The period is closed for data entry (expiry days): raise the data set's expiryDays or take the "
    "data element out of the data set.",
    "E7641": "The period is after the data set's latest open future period: set the data set's "
    "openFuturePeriods to at least the horizon, or keep forecast data elements out of data sets.",
    "E7642": "The data is already approved for this period and org unit: unapprove it in DHIS2 first.",
    "E7643": "The period is not open for this data set (input periods or wrong period type): open the period "
    "or use a data element whose data set has the setup's period type.",
}


@dataclass
class ImportCounts:
    imported: int = 0
    updated: int = 0
    ignored: int = 0
    deleted: int = 0

    def add(self, other: "ImportCounts") -> None:
        self.imported += other.imported
        self.updated += other.updated
        self.ignored += other.ignored
        self.deleted += other.deleted

    @property
    def written(self) -> int:
        return self.imported + self.updated + self.deleted

    def as_dict(self) -> dict[str, int]:
        return {"imported": self.imported, "updated": self.updated, "ignored": self.ignored, "deleted": self.deleted}


@dataclass(frozen=True)
class Conflict:
    error_code: str
    object: str
    value: str
    property: str = ""


@dataclass
class ImportSummary:
    status: str  # SUCCESS | WARNING | ERROR
    counts: ImportCounts
    conflicts: list[Conflict] = field(default_factory=list)
    rejected: int = 0
    description: str = ""

    @property
    def clean(self) -> bool:
        return self.status != "ERROR" and not self.conflicts and not self.rejected

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> "ImportSummary":
        # DHIS2 2.38+ wraps the summary in a WebMessage's "response"; older versions answer it bare.
        summary = body.get("response") if isinstance(body.get("response"), dict) else body
        c = summary.get("importCount") or {}
        counts = ImportCounts(
            imported=int(c.get("imported", 0) or 0),
            updated=int(c.get("updated", 0) or 0),
            ignored=int(c.get("ignored", 0) or 0),
            deleted=int(c.get("deleted", 0) or 0),
        )
        conflicts = [
            Conflict(
                error_code=str(x.get("errorCode") or "unknown"),
                object=str(x.get("object") or _first(x.get("objects")) or ""),
                value=str(x.get("value") or ""),
                property=str(x.get("property") or ""),
            )
            for x in summary.get("conflicts") or []
            if isinstance(x, dict)
        ]
        return cls(
            status=str(summary.get("status") or body.get("status") or "ERROR").upper(),
            counts=counts,
            conflicts=conflicts,
            rejected=len(summary.get("rejectedIndexes") or []),
            description=str(summary.get("description") or body.get("message") or ""),
        )


def _first(objects: Any) -> str:
    if isinstance(objects, dict) and objects:
        return str(next(iter(objects.values())))
    return ""


@dataclass
class ConflictGroup:
    error_code: str
    count: int
    examples: list[str]
    fix: str


def group_conflicts(conflicts: list[Conflict], examples: int = 3) -> list[ConflictGroup]:
    """Conflicts by error code, most frequent first, with a few examples and the fix for each."""
    by_code: defaultdict[str, list[Conflict]] = defaultdict(list)
    for c in conflicts:
        by_code[c.error_code].append(c)
    groups = []
    for code, items in sorted(by_code.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = list(dict.fromkeys(f"{c.object}: {c.value}" if c.object else c.value for c in items))[:examples]
        groups.append(
            ConflictGroup(code, len(items), shown, CONFLICT_FIXES.get(code, "See DHIS2's import conflict message."))
        )
    return groups


class Dhis2Writer(OnConnection):
    """Posts data value sets to one DHIS2, over a connection (see :class:`~.dhis2_http.OnConnection`).

    Imports are slow: their POSTs wait ``timeout_seconds`` (default: the connection's, at least 120 s).
    """

    def __init__(
        self, dhis2: Dhis2Connection | str, *, timeout_seconds: float | None = None, **connect: Any
    ) -> None:
        super().__init__(dhis2, **connect)
        self._seconds = timeout_seconds or max(self.conn.timeout_seconds, 120.0)
        self._timeout = Dhis2Connection.timeout(self._seconds)

    def post_data_values(self, body: bytes, *, dry_run: bool, strategy: Strategy = "CREATE_AND_UPDATE") -> ImportSummary:
        """One ``POST /api/dataValueSets`` with a JSON ``{"dataValues": [...]}`` body, sent once."""
        params = {"dryRun": "true" if dry_run else "false", "importStrategy": strategy, "preheatCache": "true"}
        what = f"{'dry run of ' if dry_run else ''}{DATA_VALUE_SETS} ({strategy})"
        try:
            response = self.conn.http.post(
                DATA_VALUE_SETS, params=params, content=body, headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise timed_out(
                self.conn, exc, f"the {what}", then="; DHIS2 may still complete this chunk",
                # writes wait at least 120 s: a raise below the wait changes nothing
                hint="Lower CHAP_SCHEDULER_PUBLISH_CHUNK_VALUES or raise CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS above "
                f"{self._seconds:g} (the seconds this write waited), then republish (identical values are ignored "
                "by DHIS2).",
            ) from None
        except httpx.TransportError as exc:
            raise Dhis2Unreachable(unreachable_text(self.conn, exc, f" for the {what}"),
                                   hint="Check that DHIS2 is up, then republish.") from None
        return self._summary(what, response)

    def _summary(self, what: str, response: httpx.Response) -> ImportSummary:
        status = response.status_code
        refused = login_refused(self.conn, status, f" on the {what}")
        if refused is not None:
            raise refused
        body: Any
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = None
        if status == 403:
            message = body.get("message", "") if isinstance(body, dict) else ""
            raise Dhis2RequestFailed(
                f"DHIS2 user {self.conn.user!r} may not write data values ({message or 'HTTP 403'})",
                status,
                hint="Give the DHIS2 user the authority to add data values (F_DATAVALUE_ADD) and data write "
                "sharing on the target data elements (and F_DATAVALUE_DELETE for stale cells).",
            )
        if isinstance(body, dict) and (status < 300 or status == 409):
            inner = body.get("response") if isinstance(body.get("response"), dict) else body
            if "importCount" in inner or "conflicts" in inner or inner.get("responseType") == "ImportSummary":
                # 200, or 409 with status WARNING/ERROR: an import summary, read it.
                return ImportSummary.from_answer(body)
        if status >= 500:
            raise Dhis2RequestFailed(
                f"DHIS2 answered the {what} with HTTP {status}",
                status,
                hint="DHIS2 or its proxy is failing; republish when DHIS2 is healthy (identical values are ignored).",
            )
        message = body.get("message", "") if isinstance(body, dict) else response.text[:200]
        raise Dhis2RequestFailed(
            f"DHIS2 answered the {what} with HTTP {status}: {message or 'no message'}",
            status,
            hint="Check the target data elements and the DHIS2 user's rights.",
        )

    def start_analytics(self, last_years: int = 1) -> str:
        """Start DHIS2's analytics table update for recent years; returns what the report says."""
        try:
            response = self.conn.http.post(
                "/api/resourceTables/analytics", params={"lastYears": str(last_years), "skipResourceTables": "true"},
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            return f"could not start DHIS2's analytics table update ({type(exc).__name__}); values reach dashboards " \
                "after DHIS2's next scheduled analytics run"
        if response.status_code >= 300:
            return f"DHIS2 refused to start the analytics table update (HTTP {response.status_code}; the user needs " \
                "F_PERFORM_MAINTENANCE); values reach dashboards after DHIS2's next scheduled analytics run"
        return f"DHIS2's analytics table update was started (lastYears={last_years})"
