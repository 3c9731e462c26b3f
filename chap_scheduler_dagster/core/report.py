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
from .report_metadata import Key
from .run_warnings import named

if TYPE_CHECKING:
    from .chap_models import ChapApi, ChapSystemInfo, PredictionSetup
    from .dhis2_fetch import FetchResult
    from .dhis2_reader import Dhis2SystemInfo
    from .publish_report import PublishReport
    from .run_window import InputWindow

Status = Literal["running", "succeeded", "succeeded with warnings", "failed", "canceled", "skipped"]


@dataclass
class PredictionOutcome:
    """What chap returned for the prediction, in DHIS2 period ids and calendar order."""

    values: int
    periods: list[str]
    median_by_period: dict[str, float]
    # quantile -> period -> forecast summed over org units (the chap_forecast asset's table)
    sums: dict[float, dict[str, float]] = field(default_factory=dict)
    org_units_dropped_by_chap: list[str] = field(default_factory=list)

    @classmethod
    def from_summary(cls, summary) -> PredictionOutcome:  # noqa: ANN001 - chap_client.PredictionSummary
        # chap pads weekly ids (2027W01); the report speaks DHIS2 (2027W1).
        periods = sorted(summary.periods, key=calendar_order)
        return cls(
            values=summary.values,
            periods=[dhis2_id(p) for p in periods],
            median_by_period={dhis2_id(p): summary.median_by_period[p] for p in periods if p in summary.median_by_period},
            sums={q: {dhis2_id(p): v for p, v in sums.items()} for q, sums in summary.sum_by_quantile.items()},
        )


@dataclass(frozen=True)
class Unreachable:
    """A system the run could not talk to, and why in plain words."""

    error: str


@dataclass(frozen=True)
class ChapSystem:
    """chap as the run found it: its system info and the API generation that answered its listing."""

    info: ChapSystemInfo
    api: ChapApi | None = None

    @property
    def api_name(self) -> str | None:
        return self.api.value if self.api else None


@dataclass
class RunReport:
    """The run's own objects (setup, window, fetch result, prediction, publish result) and its outcome."""

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
    # The systems as the run found them (DHIS2's system info, chap's), or why one was unreachable;
    # None: not contacted
    dhis2_system: Dhis2SystemInfo | Unreachable | None = None
    chap_system: ChapSystem | Unreachable | None = None
    # The configured model as chap returned it; its name alone when known without it (discovery)
    setup: PredictionSetup | None = None
    setup_name: str | None = None
    # Window: the end mode asked for, the window chosen, the latest periods probed
    end_mode: str | None = None
    window: InputWindow | None = None
    latest_by_covariate: dict[str, str] = field(default_factory=dict)
    # Data fetched from DHIS2 (core/dhis2_fetch.py) and its fingerprint (core/fingerprint.py)
    fetch: FetchResult | None = None
    fingerprint: str | None = None
    # Prediction
    n_periods: int | None = None
    n_periods_how: str | None = None
    job_id: str | None = None
    prediction_id: int | None = None
    prediction: PredictionOutcome | None = None
    # chap's own outbreak alerts (setups with an alert policy only)
    chap_alerts: AlertsSummary | None = None
    # Publishing to DHIS2 (core/publish.py); None until publish_forecasts runs
    publish: PublishReport | None = None
    # On a skip as unchanged: the prediction that stays current
    current_prediction_id: str | None = None
    current_prediction_run_id: str | None = None
    # Things the operator should know that are not errors (e.g. a reconciled POST)
    notes: list[str] = field(default_factory=list)
    # Set when this run re-executes another from a later step ("run <id>, from step <step>").
    reexecution_of: str | None = None
    # Why a successful run is "succeeded with warnings" (core/run_warnings.py); [] for a plain success.
    warnings: list[str] = field(default_factory=list)
    warnings_summary: str = ""  # the same in a few words (overview table)

    # ---- named reports that no step writes ----
    @classmethod
    def skipped(cls, setup_id: str, dhis2_url: str, *, location: str, setup_name: str | None, reason: str,
                hint: str | None) -> RunReport:
        """A report for a model that is not run (e.g. chap's schedule of it is not a valid cron)."""
        report = cls(setup_id=setup_id, dhis2_url=dhis2_url, location=location, setup_name=setup_name)
        report.skip(reason, hint)
        return report

    @classmethod
    def backstop(cls, setup_id: str, dhis2_url: str, *, location: str, run_id: str, started_at: datetime | None,
                 step: str, error: str, hint: str | None, job_id: str | None,
                 canceled: bool = False) -> RunReport:
        """The report of a run that ended without writing one (defs/overview.py), from its own record."""
        report = cls(setup_id=setup_id, dhis2_url=dhis2_url, location=location, run_id=run_id)
        if started_at is not None:
            report.started_at = started_at
        report.status, report.failed_step, report.error, report.hint = "failed", step, error, hint
        report.job_id = job_id
        report.finish()
        if canceled:
            from .cancellation import mark_canceled  # it imports this module

            # Canceled, not failed; the chap job id (the run's tag) says what may still run in chap.
            mark_canceled(report, step, job_id)
        return report

    # ---- what the objects say (read by run_warnings, publishing and the markdown) ----
    @property
    def name(self) -> str | None:
        return self.setup.name if self.setup is not None else self.setup_name

    @property
    def period_type(self) -> str | None:
        return self.setup.period_type if self.setup is not None else None

    @property
    def org_unit_count(self) -> int | None:
        return len(self.setup.org_units) if self.setup is not None else None

    @property
    def org_unit_names(self) -> dict[str, str]:
        return self.fetch.org_unit_names if self.fetch is not None else {}

    @property
    def org_units_without_geometry(self) -> list[str]:
        return self.fetch.org_units_without_geometry if self.fetch is not None else []

    @property
    def analytics_rows(self) -> int | None:
        return self.fetch.analytics_rows if self.fetch is not None else None

    @property
    def predicted_periods(self) -> list[str]:
        return self.prediction.periods if self.prediction is not None else []

    @property
    def org_units_dropped_by_chap(self) -> list[str]:
        return self.prediction.org_units_dropped_by_chap if self.prediction is not None else []

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
        w, f, p = self.window, self.fetch, self.prediction
        values: dict[Key, str | int | float | None] = {
            Key.STATUS: self.status,
            Key.FAILED_STEP: self.failed_step or "",
            Key.ERROR: self.error or "",
            Key.CONFIGURED_MODEL_ID: self.setup_id,
            Key.CONFIGURED_MODEL: self.name or "",
            Key.PREDICTION_ID: self.prediction_id if self.prediction_id is not None else "",
            Key.JOB_ID: self.job_id or "",
            Key.WINDOW: f"{w.start.id}..{w.end.id}" if w else "",
            Key.INPUT_PERIODS: len(w.periods) if w else None,
            Key.ROW_ESTIMATE: f.row_estimate if f else None,
            Key.ANALYTICS_ROWS: f.analytics_rows if f else None,
            Key.OBSERVATIONS: f.observations if f else None,
            Key.LONGEST_URL: f.longest_url if f else None,
            Key.PREDICTION_VALUES: p.values if p else None,
            Key.DURATION_SECONDS: round(self.duration_seconds, 2),
            Key.RUN_ID: self.run_id,
            Key.HINT: self.hint or "",
            Key.PERIOD_TYPE: self.period_type or "",
            Key.FINGERPRINT: self.fingerprint,
            Key.CURRENT_PREDICTION_ID: self.current_prediction_id,
            Key.CURRENT_PREDICTION_RUN_ID: self.current_prediction_run_id,
            Key.WARNINGS: len(self.warnings),
            Key.WARNINGS_TEXT: "\n".join(self.warnings),  # one a line (the CLI prints them so)
            Key.WARNINGS_SUMMARY: self.warnings_summary,
        }
        out = {str(k): v for k, v in values.items() if v is not None}
        if self.chap_alerts is not None:
            out.update(self.chap_alerts.metadata())
        if self.publish is not None:
            out.update(self.publish.metadata())
        return out

    def markdown(self) -> str:
        return render_markdown(self)


def render_markdown(r: RunReport) -> str:
    title = r.name or f"configured model {r.setup_id}"
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
    lines += _dhis2_lines(r.dhis2_system)
    lines += ["", "## chap-core", ""]
    lines += _chap_lines(r.chap_system)
    lines += ["", "## Configured model", ""]
    lines.append(f"- **Id:** {r.setup_id}" + (f" — {r.name}" if r.name else ""))
    lines += _setup_lines(r.setup)
    w = r.window
    if w or r.end_mode:
        lines += ["", "## Input window", ""]
        _opt(lines, "End mode", r.end_mode)
        if w:
            lines.append(f"- **Window:** {w.start.id} .. {w.end.id} ({len(w.periods)} periods)")
            _opt(lines, "End chosen by", w.end_how)
        if r.latest_by_covariate:
            latest = ", ".join(f"{k} {v}" for k, v in sorted(r.latest_by_covariate.items()))
            lines.append(f"- **Latest period with data:** {latest}")
    if r.fetch is not None:
        lines += _fetch_lines(r.fetch)
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
        if r.prediction is not None:
            lines += _prediction_lines(r.prediction, r.org_unit_names)
    lines += render_alerts_section(r.chap_alerts)
    if r.publish is not None:
        from .publish_report import render_publish_section

        lines += render_publish_section(r.publish)
    return "\n".join(lines) + "\n"


def _dhis2_lines(system: Dhis2SystemInfo | Unreachable | None) -> list[str]:
    if isinstance(system, Unreachable):
        return _unreachable(system)
    if system is None or not system.version:
        return ["- not contacted"]
    lines = [f"- **Version:** {system.version}" + (f" ({system.system_name})" if system.system_name else "")]
    _opt(lines, "Server time", system.server_date)
    return lines


def _chap_lines(system: ChapSystem | Unreachable | None) -> list[str]:
    if isinstance(system, Unreachable):
        return _unreachable(system)
    if system is None or not system.info.chap_core_version:
        return ["- not contacted"]
    return [f"- **Version:** {system.info.chap_core_version} (API: {system.api_name or 'unknown'})"]


def _unreachable(system: Unreachable) -> list[str]:
    # An error without words says no more than no contact at all.
    return [f"- **NOT REACHABLE:** {_inline(system.error)}" if system.error else "- not contacted"]


def _setup_lines(setup: PredictionSetup | None) -> list[str]:
    if setup is None:
        return []
    lines = []
    if setup.model_name:
        template = setup.template.display_name if setup.template else None
        lines.append(f"- **Model:** {setup.model_name}" + (f" ({template})" if template else ""))
    _opt(lines, "Period type", setup.period_type)
    _opt(lines, "Org units", len(setup.org_units))
    if setup.covariate_sources:
        covariates = ", ".join(f"{s.covariate} ({s.data_element_id})" for s in setup.covariate_sources)
        lines.append(f"- **Covariates:** {covariates}")
    return lines


def _fetch_lines(f: FetchResult) -> list[str]:
    lines = ["", "## DHIS2 data", ""]
    _opt(lines, "Rows estimated (preflight)", _num(f.row_estimate))
    _opt(lines, "Analytics rows fetched", _num(f.analytics_rows))
    _opt(lines, "Observations sent to chap", _num(f.observations))
    for reason, count in sorted(f.dropped.items()):
        lines.append(f"- **Rows dropped — {reason}:** {count:,}")
    if f.org_units_without_geometry:
        lines.append(f"- **Org units without geometry:** {named(f.org_units_without_geometry, f.org_unit_names)}")
    lines.append(f"- **Analytics requests:** {f.analytics_requests} (longest URL {f.longest_url:,} bytes)")
    _opt(lines, "Request body", f"{f.body_bytes / 1e6:.1f} MB" if f.body_bytes else None)
    return lines


def _prediction_lines(p: PredictionOutcome, names: dict[str, str]) -> list[str]:
    lines: list[str] = []
    _opt(lines, "Prediction values", _num(p.values))
    if p.periods:
        lines.append(f"- **Predicted periods:** {_periods(p.periods, 6)}")
    if p.org_units_dropped_by_chap:
        lines.append(
            f"- **Org units chap silently dropped:** {len(p.org_units_dropped_by_chap)} — "
            f"{named(p.org_units_dropped_by_chap, names)} (chap found missing covariate values for them)"
        )
    if p.median_by_period:
        lines += ["", "| period | median forecast, summed over org units |", "|---|---:|"]
        lines += [f"| {period} | {v:,.1f} |" for period, v in p.median_by_period.items()]
    return lines


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
