"""The predictions overview: one row per configured model, rendered as markdown.

Pure: the Dagster shell (``defs/overview.py``) reads the latest run report of each
partition and passes plain rows here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from .partition_keys import key_order
from .run_warnings import is_success

NEVER_RUN = "never run"


@dataclass(frozen=True)
class OverviewRow:
    setup_id: str
    name: str = ""
    status: str = ""  # succeeded / succeeded with warnings / failed / canceled / skipped; "" when never run
    when: datetime | None = None
    failed_step: str = ""
    error: str = ""
    prediction_id: str = ""
    run_id: str = ""
    deleted: bool = False  # no longer configured in chap (partition removed)
    alerts: int = 0  # chap's outbreak alerts for the latest prediction
    alerts_pending: int = 0
    next_run: datetime | None = None  # next scheduled run (core.next_due), UTC
    next_by: str = ""  # what fires it: chap's cron or an operator schedule
    # The latest succeeded run: a later failure (even a launchpad typo) never hides the last good forecast.
    last_success_when: datetime | None = None
    last_success_prediction_id: str = ""
    last_success_run_id: str = ""
    warnings: str = ""  # of the last attempt, when it succeeded with warnings, in a few words


def sort_rows(rows: Iterable[OverviewRow]) -> list[OverviewRow]:
    return sorted(rows, key=lambda row: (row.deleted, *key_order(row.setup_id)))


def status_totals(rows: Iterable[OverviewRow]) -> dict[str, int]:
    """Configured models (deleted ones left out) per latest status, by name; "succeeded with warnings"
    is its own status, never counted as "succeeded"."""
    return dict(sorted(Counter(row.status or NEVER_RUN for row in rows if not row.deleted).items()))


def render_overview(
    rows: Iterable[OverviewRow], *, location: str = "", dhis2_url: str = "", generated_at: datetime | None = None
) -> str:
    rows = sort_rows(rows)
    at = (generated_at or datetime.now(UTC)).astimezone(UTC)
    where = " — ".join(part for part in (location, f"`{dhis2_url}`" if dhis2_url else "") if part)
    lines = ["# chap predictions overview" + (f" ({where})" if where else ""), ""]
    summary = ", ".join(f"{n} {status}" for status, n in status_totals(rows).items())
    deleted = sum(1 for row in rows if row.deleted)
    updated = f"Updated {at.isoformat(timespec='seconds')}. {len(rows) - deleted} configured models"
    updated += f": {summary}" if summary else ""
    updated += f"; {deleted} deleted in chap (history kept)" if deleted else ""
    lines.append(updated + ".")
    lines.append(f"Preflight: [chap_scheduler_health](/assets/{location + '/' if location else ''}chap_scheduler_health) (job `check_connections`, or `chap-scheduler-run check`).")
    lines.append("")
    if not rows:
        lines.append("No configured model is known yet. The discovery sensor adds chap's configured models.")
        return "\n".join(lines) + "\n"
    lines += [
        "| model | status | when (UTC) | failed step | prediction id | run | last success (UTC) |",
        "|---|---|---|---|---|---|---|",
    ]
    # The next-run column only when something is scheduled (core.next_due).
    scheduled = any(row.next_run for row in rows)
    if scheduled:
        lines[-2:] = [lines[-2] + " next run (UTC) |", lines[-1] + "---|"]
    for row in rows:
        model = f"{row.setup_id}" + (f" — {_cell(row.name)}" if row.name else "")
        if row.deleted:
            model += " (deleted in chap)"
        status = _status(row)
        when = row.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if row.when else ""
        run = f"[{row.run_id[:8]}](/runs/{row.run_id})" if row.run_id else ""
        line = (
            f"| {model} | {status} | {when} | {_cell(row.failed_step)} | {_cell(row.prediction_id)} | {run} "
            f"| {_last_success(row)} |"
        )
        if scheduled:
            nxt = f"{row.next_run.astimezone(UTC).strftime('%Y-%m-%d %H:%M')} ({_cell(row.next_by)})" if row.next_run else ""
            line += f" {nxt} |"
        lines.append(line)
    alerted = [r for r in rows if r.alerts and not r.deleted]
    if alerted:
        lines += ["", "## chap alerts (latest prediction)", ""]
        for row in alerted:
            name = f" ({_cell(row.name)})" if row.name else ""
            lines.append(f"- **{row.setup_id}**{name}: {row.alerts} alerts, {row.alerts_pending} pending review")
    warned = [r for r in rows if r.warnings and is_success(r.status) and not r.deleted]
    if warned:
        lines += ["", "## Warnings (latest run)", ""]
        for row in warned:
            name = f" ({_cell(row.name)})" if row.name else ""
            lines.append(f"- **{row.setup_id}**{name}: {_cell(row.warnings, 300)} (the run report lists them)")
    failures = [r for r in rows if r.status in ("failed", "canceled", "skipped") and r.error and not r.deleted]
    if failures:
        lines += ["", "## Why", ""]
        for row in failures:
            name = f" ({_cell(row.name)})" if row.name else ""
            lines.append(f"- **{row.setup_id}**{name}: {_cell(row.error, 300)}")
    return "\n".join(lines) + "\n"


def last_success(row: OverviewRow) -> tuple[datetime | None, str, str]:
    """(when, prediction id, run id) of the model's last success; the latest attempt when that succeeded."""
    if row.last_success_when is None and is_success(row.status):
        return row.when, row.prediction_id, row.run_id
    return row.last_success_when, row.last_success_prediction_id, row.last_success_run_id


def _last_success(row: OverviewRow) -> str:
    when, prediction, run = last_success(row)
    if when is None:
        return "never" if row.status else ""
    text = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if prediction:
        text += f", prediction {_cell(prediction)}"
    if run and run != row.run_id:
        text += f" ([{run[:8]}](/runs/{run}))"
    return text


def _status(row: OverviewRow) -> str:
    if not row.status:
        return NEVER_RUN
    if row.status == "failed":
        return "**FAILED**"
    return row.status


def _cell(text: object, limit: int = 120) -> str:
    value = " ".join(str(text or "").split()).replace("|", "\\|")
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ---- the same rows as a table (Dagster renders it full width, one column per fact) ----------

TABLE_COLUMNS: list[tuple[str, str, str]] = [
    # (name, type, description)
    ("model", "string", "chap configured-model id (the partition key)"),
    ("name", "string", "configured-model name in chap"),
    ("status", "string", "last attempt: succeeded, succeeded with warnings, failed, canceled, skipped, or never run"),
    ("when_utc", "string", "when the last attempt's report was written"),
    ("step", "string", "the step that failed or was canceled"),
    ("error", "string", "why, in one line"),
    ("run", "string", "Dagster run id of the last attempt"),
    ("last_success_utc", "string", "when the last successful prediction was made"),
    ("last_prediction_id", "string", "chap prediction id of the last success"),
    ("last_success_run", "string", "Dagster run id of the last success"),
    ("in_chap", "bool", "false once the configured model was deleted in chap (history kept)"),
    ("warnings", "string", "why the last attempt succeeded only with warnings, in a few words (the report has the detail)"),
]


def _utc(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if when else ""


def table_rows(rows: Iterable[OverviewRow]) -> list[dict[str, str | bool]]:
    """One record per model, keyed like TABLE_COLUMNS; plain values only."""
    records = []
    for row in sort_rows(rows):
        success_when, success_prediction, success_run = last_success(row)
        records.append(
            {
                "model": row.setup_id,
                "name": row.name,
                "status": row.status or NEVER_RUN,
                "when_utc": _utc(row.when),
                "step": row.failed_step,
                "error": " ".join(row.error.split())[:300],
                "run": row.run_id,
                "last_success_utc": _utc(success_when),
                "last_prediction_id": success_prediction,
                "last_success_run": success_run,
                "in_chap": not row.deleted,
                "warnings": " ".join(row.warnings.split())[:300],
            }
        )
    return records
