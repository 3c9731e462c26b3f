"""The run report: what happened to one configured model in one run, and its markdown.

It is filled step by step, rendered on every outcome (the failed step and the error in
plain words included) and stored as asset metadata. Figures are also kept as plain
values so the UI can chart them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Literal

from .chap_alerts import AlertsSummary, render_alerts_section
from .errors import Rejection, SchedulerError
from .periods import calendar_order, dhis2_id
from .run_warnings import named

if TYPE_CHECKING:
    from .publish_report import PublishReport

Status = Literal["running", "succeeded", "succeeded with warnings", "failed", "canceled", "skipped"]


@dataclass
class RunReport:
    setup_id: str
    dhis2_url: str
    location: str = ""
    run_id: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    status: Status = "running"
    failed_step: str | None = None
    error: str | None = None
    hint: str | None = None
    rejection: Rejection | None = None
    # Systems
    dhis2_version: str | None = None
    dhis2_server_time: str | None = None
    dhis2_system_name: str | None = None
    dhis2_error: str | None = None
    chap_version: str | None = None
    chap_api: str | None = None
    chap_error: str | None = None
    # The configured model
    setup_name: str | None = None
    model_name: str | None = None
    template_name: str | None = None
    period_type: str | None = None
    org_unit_count: int | None = None
    covariates: list[str] = field(default_factory=list)
    # Window
    end_mode: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    end_how: str | None = None
    input_periods: int | None = None
    latest_by_covariate: dict[str, str] = field(default_factory=dict)
    # Data
    row_estimate: int | None = None
    analytics_rows: int | None = None
    observations: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    org_units_without_geometry: list[str] = field(default_factory=list)
    # org-unit id -> DHIS2 display name (from the org-unit fetch), so lists name what they mean
    org_unit_names: dict[str, str] = field(default_factory=dict)
    analytics_requests: int | None = None
    longest_url: int | None = None
    body_bytes: int | None = None
    # Prediction
    n_periods: int | None = None
    n_periods_how: str | None = None
    job_id: str | None = None
    prediction_id: int | None = None
    prediction_values: int | None = None
    predicted_periods: list[str] = field(default_factory=list)
    org_units_dropped_by_chap: list[str] = field(default_factory=list)
    median_by_period: dict[str, float] = field(default_factory=dict)
    # chap's own outbreak alerts (setups with an alert policy only)
    chap_alerts: AlertsSummary | None = None
    # Publishing to DHIS2 (core/publish.py); None until publish_forecasts runs
    publish: PublishReport | None = None
    # Inputs fingerprint (core.fingerprint); on a skip, the prediction that stays current
    fingerprint: str | None = None
    current_prediction_id: str | None = None
    current_prediction_run_id: str | None = None
    # Things the operator should know that are not errors (e.g. a reconciled POST)
    notes: list[str] = field(default_factory=list)
    # Set when this run re-executes another from a later step ("run <id>, from step <step>").
    reexecution_of: str | None = None
    # Why a successful run is "succeeded with warnings" (core/run_warnings.py); [] for a plain success.
    warnings: list[str] = field(default_factory=list)
    warnings_summary: str = ""  # the same in a few words (overview table)

    # ---- outcome ----
    def fail(self, step: str, exc: BaseException) -> None:
        self.status = "failed"
        self.failed_step = step
        self.error = str(exc) or type(exc).__name__
        if not isinstance(exc, SchedulerError):
            self.error = f"{type(exc).__name__}: {self.error}"
        self.hint = getattr(exc, "hint", "") or None
        self.rejection = getattr(exc, "rejection", None)
        self.finish()

    def skip(self, reason: str, hint: str | None = None) -> None:
        """Nothing to do (e.g. inputs unchanged): not a failure; ``error`` carries the reason."""
        self.status = "skipped"
        self.error, self.hint = reason, hint
        self.finish()

    def succeed(self, today: date | None = None) -> None:
        from .run_warnings import SUCCEEDED, SUCCEEDED_WITH_WARNINGS, run_warnings, warning_summary

        today = today or datetime.now(UTC).date()
        self.warnings = run_warnings(self, today)
        self.warnings_summary = warning_summary(self, today) if self.warnings else ""
        self.status = SUCCEEDED_WITH_WARNINGS if self.warnings else SUCCEEDED
        self.finish()

    def finish(self) -> None:
        self.finished_at = datetime.now(UTC)

    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or datetime.now(UTC)
        return max(0.0, (end - self.started_at).total_seconds())

    # ---- output ----
    def metadata(self) -> dict[str, str | int | float]:
        """Plain figures for asset metadata (never None: Dagster wants concrete values)."""
        values: dict[str, str | int | float | None] = {
            "status": self.status,
            "failed_step": self.failed_step or "",
            "error": self.error or "",
            "configured_model_id": self.setup_id,
            "configured_model": self.setup_name or "",
            "prediction_id": self.prediction_id if self.prediction_id is not None else "",
            "job_id": self.job_id or "",
            "window": f"{self.window_start}..{self.window_end}" if self.window_start else "",
            "input_periods": self.input_periods,
            "row_estimate": self.row_estimate,
            "analytics_rows": self.analytics_rows,
            "observations": self.observations,
            "longest_url": self.longest_url,
            "prediction_values": self.prediction_values,
            "duration_seconds": round(self.duration_seconds, 2),
            "run_id": self.run_id,
            "hint": self.hint or "",
            "period_type": self.period_type or "",
            "fingerprint": self.fingerprint,
            "current_prediction_id": self.current_prediction_id,
            "current_prediction_run_id": self.current_prediction_run_id,
            "warnings": len(self.warnings),
            "warnings_text": "\n".join(self.warnings),  # one a line (the CLI prints them so)
            "warnings_summary": self.warnings_summary,
        }
        if self.chap_alerts is not None:
            values.update(self.chap_alerts.metadata())
        if self.publish is not None:
            values.update(self.publish.metadata())
        return {k: v for k, v in values.items() if v is not None}

    def markdown(self) -> str:
        return render_markdown(self)


def render_markdown(r: RunReport) -> str:
    title = r.setup_name or f"configured model {r.setup_id}"
    lines = [
        f"# Run report: {title}",
        "",
        f"- **Status:** {_status_line(r)}",
    ]
    if r.status in ("failed", "canceled", "skipped") and (r.error or r.rejection):
        if r.rejection is not None:
            lines += _rejection_lines(r.rejection, r.org_unit_names)
        else:
            label = {"skipped": "Why skipped", "canceled": "Why canceled"}.get(r.status, "Error")
            lines.append(f"- **{label}:** {_inline(r.error or '')}")
        if r.hint:
            lines.append(f"- **What to do:** {r.hint}")
    if r.warnings:  # all of them in one place, right under the status
        lines.append(f"- **Warnings ({len(r.warnings)}):**")
        lines += [f"  - {w}" for w in r.warnings]
    lines += [
        f"- **Started:** {r.started_at.isoformat(timespec='seconds')}",
        f"- **Duration:** {_duration(r.duration_seconds)}",
    ]
    if r.run_id:
        lines.append(f"- **Dagster run:** `{r.run_id}`")
    if r.reexecution_of:
        lines.append(f"- **Re-execution of:** {r.reexecution_of}")
    lines += ["", "## DHIS2", "", f"- **Instance:** `{r.dhis2_url}`" + (f" ({r.location})" if r.location else "")]
    if r.dhis2_error:
        lines.append(f"- **NOT REACHABLE:** {_inline(r.dhis2_error)}")
    elif r.dhis2_version:
        lines.append(f"- **Version:** {r.dhis2_version}" + (f" ({r.dhis2_system_name})" if r.dhis2_system_name else ""))
        if r.dhis2_server_time:
            lines.append(f"- **Server time:** {r.dhis2_server_time}")
    else:
        lines.append("- not contacted")
    lines += ["", "## chap-core", ""]
    if r.chap_error:
        lines.append(f"- **NOT REACHABLE:** {_inline(r.chap_error)}")
    elif r.chap_version:
        lines.append(f"- **Version:** {r.chap_version} (API: {r.chap_api or 'unknown'})")
    else:
        lines.append("- not contacted")
    lines += ["", "## Configured model", ""]
    lines.append(f"- **Id:** {r.setup_id}" + (f" — {r.setup_name}" if r.setup_name else ""))
    if r.model_name:
        lines.append(f"- **Model:** {r.model_name}" + (f" ({r.template_name})" if r.template_name else ""))
    _opt(lines, "Period type", r.period_type)
    _opt(lines, "Org units", r.org_unit_count)
    if r.covariates:
        lines.append(f"- **Covariates:** {', '.join(r.covariates)}")
    if r.window_start or r.end_mode:
        lines += ["", "## Input window", ""]
        _opt(lines, "End mode", r.end_mode)
        if r.window_start:
            lines.append(f"- **Window:** {r.window_start} .. {r.window_end} ({r.input_periods} periods)")
        _opt(lines, "End chosen by", r.end_how)
        if r.latest_by_covariate:
            latest = ", ".join(f"{k} {v}" for k, v in sorted(r.latest_by_covariate.items()))
            lines.append(f"- **Latest period with data:** {latest}")
    if r.row_estimate is not None or r.analytics_rows is not None:
        lines += ["", "## DHIS2 data", ""]
        _opt(lines, "Rows estimated (preflight)", _num(r.row_estimate))
        _opt(lines, "Analytics rows fetched", _num(r.analytics_rows))
        _opt(lines, "Observations sent to chap", _num(r.observations))
        for reason, count in sorted(r.dropped.items()):
            lines.append(f"- **Rows dropped — {reason}:** {count:,}")
        if r.org_units_without_geometry:
            lines.append(f"- **Org units without geometry:** {named(r.org_units_without_geometry, r.org_unit_names)}")
        if r.analytics_requests is not None:
            longest = f" (longest URL {r.longest_url:,} bytes)" if r.longest_url is not None else ""
            lines.append(f"- **Analytics requests:** {r.analytics_requests}{longest}")
        _opt(lines, "Request body", f"{r.body_bytes / 1e6:.1f} MB" if r.body_bytes else None)
        _opt(lines, "Inputs fingerprint", f"`{r.fingerprint}`" if r.fingerprint else None)
    if r.n_periods is not None or r.job_id or r.current_prediction_id:
        lines += ["", "## Prediction", ""]
        if r.current_prediction_id:
            run = f" (run `{r.current_prediction_run_id}`)" if r.current_prediction_run_id else ""
            lines.append(f"- **Current prediction (unchanged, nothing sent to chap):** {r.current_prediction_id}{run}")
        if r.n_periods is not None:
            lines.append(f"- **Periods predicted (nPeriods):** {r.n_periods}" + (f" — {r.n_periods_how}" if r.n_periods_how else ""))
        _opt(lines, "Job", f"`{r.job_id}`" if r.job_id else None)
        for note in r.notes:
            lines.append(f"- **Note:** {note}")
        _opt(lines, "Prediction id", r.prediction_id)
        _opt(lines, "Prediction values", _num(r.prediction_values))
        if r.predicted_periods:
            lines.append(f"- **Predicted periods:** {_periods(r.predicted_periods, 6)}")
        if r.org_units_dropped_by_chap:
            lines.append(
                f"- **Org units chap silently dropped:** {len(r.org_units_dropped_by_chap)} — "
                f"{named(r.org_units_dropped_by_chap, r.org_unit_names)} (chap found missing covariate values for them)"
            )
        if r.median_by_period:
            lines += ["", "| period | median forecast, summed over org units |", "|---|---:|"]
            lines += [f"| {p} | {v:,.1f} |" for p, v in r.median_by_period.items()]
    lines += render_alerts_section(r.chap_alerts)
    if r.publish is not None:
        from .publish_report import render_publish_section

        lines += render_publish_section(r.publish)
    return "\n".join(lines) + "\n"


def _status_line(r: RunReport) -> str:
    if r.status == "failed":
        return f"FAILED at `{r.failed_step or 'unknown step'}`"
    if r.status == "canceled" and r.failed_step:
        return f"CANCELED during `{r.failed_step}`"
    return r.status.upper()


def _rejection_lines(rejection: Rejection, names: dict[str, str] | None = None) -> list[str]:
    lines = [
        f"- **Error:** chap rejected the prediction: {rejection.message} (imported {rejection.imported_count})",
        "- **Rejected cells (grouped by covariate):**",
    ]
    org_units: defaultdict[str, set[str]] = defaultdict(set)
    periods: defaultdict[str, set[str]] = defaultdict(set)
    reasons: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for row in rejection.rejected:
        org_units[row.feature_name].add(row.org_unit)
        periods[row.feature_name].update(row.time_periods)
        reasons[row.feature_name][row.reason] += 1
    for feature in sorted(org_units):
        lines.append(
            f"  - `{feature}`: {len(org_units[feature])} org units; periods affected: "
            f"{_periods(sorted({dhis2_id(p) for p in periods[feature]}, key=calendar_order), 4)} — "
            f"{'; '.join(sorted(reasons[feature]))} — {named(sorted(org_units[feature]), names or {}, 4)}"
        )
    return lines


def _periods(items: list[str], limit: int) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return f"{items[0]}..{items[-1]} ({len(items)} periods)"


def _list(items: list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} … ({len(items)} in all)"


def _num(value: int | None) -> str | None:
    return None if value is None else f"{value:,}"


def _opt(lines: list[str], label: str, value: object) -> None:
    if value is not None and value != "":
        lines.append(f"- **{label}:** {value}")


def _inline(text: str) -> str:
    if "\n" in text or len(text) > 300:
        return "\n\n```\n" + text.strip() + "\n```\n"
    return f"`{text}`" if text else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m {secs:04.1f}s"
