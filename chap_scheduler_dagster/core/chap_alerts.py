"""chap-core's own outbreak alerts for a prediction: read them, summarize them, render them.

chap-core 2.5.1 raises alerts itself after every ``/run`` of a prediction setup that has an
alert policy (experimental API): per org unit and period at most one alert, at the most severe
level of the policy whose exceedance probability was reached. We only read them
(``GET /v1/crud/alerts?predictionId=…``); approving is a human's job in chap.

A chap without the alerts API (older builds answer 404) is a note in the report, not a failure;
neither is any other error reading them: the prediction itself succeeded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ChapHttpError, SchedulerError
from .periods import calendar_order, dhis2_id
from .report_metadata import Key


class ChapAlert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: int
    time_period: str = Field(alias="timePeriod")
    org_unit: str = Field(alias="orgUnit")
    alert_policy_id: int | None = Field(default=None, alias="alertPolicyId")
    level: str
    prediction_id: int | None = Field(default=None, alias="predictionId")
    approved: str = "pending"
    approved_by: str | None = Field(default=None, alias="approvedBy")


@dataclass
class AlertsSummary:
    """What the report, the asset metadata and the notifications say about one prediction's alerts."""

    prediction_id: int
    policy_name: str = ""
    levels: list[str] = field(default_factory=list)  # least to most severe, as the policy orders them
    alerts: list[ChapAlert] = field(default_factory=list)
    org_unit_names: dict[str, str] = field(default_factory=dict)
    note: str = ""  # why alerts could not be read (older chap, an error); empty when they were

    @property
    def available(self) -> bool:
        return not self.note

    def by_level(self) -> dict[str, list[ChapAlert]]:
        grouped: defaultdict[str, list[ChapAlert]] = defaultdict(list)
        for alert in self.alerts:
            grouped[alert.level].append(alert)
        order = [lvl for lvl in reversed(self.levels) if lvl in grouped]  # most severe first
        order += sorted(lvl for lvl in grouped if lvl not in order)
        return {lvl: grouped[lvl] for lvl in order}

    def counts(self) -> dict[str, int]:
        return {lvl: len(items) for lvl, items in self.by_level().items()}

    def approval_counts(self) -> dict[str, int]:
        return dict(Counter(a.approved for a in self.alerts))

    @property
    def pending(self) -> int:
        return sum(1 for a in self.alerts if a.approved == "pending")

    def one_line(self) -> str:
        if not self.available:
            return self.note
        if not self.alerts:
            return "no alerts"
        per_level = ", ".join(f"{n} {lvl}" for lvl, n in self.counts().items())
        units = len({a.org_unit for a in self.alerts})
        return f"{len(self.alerts)} alerts ({per_level}) in {units} org units"

    def name(self, org_unit: str) -> str:
        return self.org_unit_names.get(org_unit) or org_unit

    def metadata(self) -> dict[str, str | int]:
        """Plain figures for asset metadata (report and ``chap_forecast``)."""
        values: dict[str, str | int] = {
            Key.CHAP_ALERTS.value: len(self.alerts),
            Key.CHAP_ALERTS_PENDING.value: self.pending,
            Key.CHAP_ALERTS_SUMMARY.value: self.one_line(),
        }
        for lvl, n in self.counts().items():
            values[f"chap_alerts_{lvl}"] = n
        return values


def read_alerts(
    chap: Any,
    prediction_id: int,
    *,
    alert_policy: dict | None = None,
    org_unit_names: Callable[[list[str]], dict[str, str]] | None = None,
) -> AlertsSummary:
    """The alerts chap raised for a prediction. Never raises: problems become the summary's note.

    ``chap`` is a :class:`ChapClient`. ``alert_policy`` is the setup's ``alertPolicy`` (for the
    level order), ``org_unit_names`` looks names up in DHIS2.
    """
    summary = AlertsSummary(prediction_id=prediction_id)
    if alert_policy:
        summary.policy_name = str(alert_policy.get("name", ""))
        summary.levels = [str(lvl.get("name")) for lvl in alert_policy.get("levels") or [] if isinstance(lvl, dict)]
    try:
        rows = chap._get("/v1/crud/alerts", params={"predictionId": prediction_id})
        summary.alerts = [ChapAlert.model_validate(r) for r in rows or [] if isinstance(r, dict)]
        summary.alerts = [a for a in summary.alerts if a.prediction_id in (None, prediction_id)]
    except ChapHttpError as exc:
        if exc.status_code in (404, 405):
            summary.note = "this chap-core has no alerts API (GET /v1/crud/alerts; chap-core 2.5 or newer has it)"
        else:
            summary.note = f"chap's alerts could not be read: {exc}"
        return summary
    except (SchedulerError, ValueError) as exc:
        summary.note = f"chap's alerts could not be read: {exc}"
        return summary
    if summary.alerts and org_unit_names is not None:
        try:
            summary.org_unit_names = org_unit_names(sorted({a.org_unit for a in summary.alerts}))
        except (SchedulerError, ValueError):
            pass  # ids instead of names: still readable
    return summary


def fetch_alert_policy(chap: Any, setup_id: int) -> dict | None:
    """The setup's alert policy as chap returns it, or None (no policy, or an older chap)."""
    try:
        setup = chap._get(f"/v1/crud/prediction-setups/{setup_id}")
    except Exception:  # noqa: BLE001 - no policy readable means no alerts section, never a failed run
        return None
    policy = setup.get("alertPolicy") if isinstance(setup, dict) else None
    return policy if isinstance(policy, dict) else None


def render_alerts_section(summary: AlertsSummary | None) -> list[str]:
    """The report's "chap alerts" section (markdown lines; empty when the setup has no alert policy)."""
    if summary is None:
        return []
    lines = ["", "## chap alerts", ""]
    if not summary.available:
        return [*lines, f"- **Note:** {summary.note}"]
    if summary.policy_name:
        lines.append(f"- **Alert policy:** {summary.policy_name}"
                     + (f" (levels, least to most severe: {', '.join(summary.levels)})" if summary.levels else ""))
    if not summary.alerts:
        return [*lines, f"- **Alerts:** none raised for prediction {summary.prediction_id}"]
    approvals = ", ".join(f"{n} {state}" for state, n in sorted(summary.approval_counts().items()))
    lines.append(f"- **Alerts:** {summary.one_line()}; approval: {approvals}")
    lines += ["", "| level | org unit | periods | approval |", "|---|---|---|---|"]
    for lvl, items in summary.by_level().items():
        per_unit: defaultdict[str, list[ChapAlert]] = defaultdict(list)
        for alert in items:
            per_unit[alert.org_unit].append(alert)
        for unit in sorted(per_unit, key=summary.name):
            alerts = per_unit[unit]
            periods = sorted({dhis2_id(a.time_period) for a in alerts}, key=calendar_order)
            states = ", ".join(f"{n} {s}" if len(alerts) > 1 else s
                               for s, n in sorted(Counter(a.approved for a in alerts).items()))
            lines.append(f"| {lvl} | {summary.name(unit)} | {', '.join(periods)} | {states} |")
    lines.append("")
    lines.append("Review pending alerts in chap (`GET /v1/crud/alerts?approved=pending`, then `POST /v1/crud/alerts/$approve`).")
    return lines


def collect_alerts(run: Any, chap: Any, reader: Any | None, *, log: Callable[[str], None] = lambda _: None) -> None:
    """After a successful prediction: put chap's alerts on the run report (``run.report.chap_alerts``).

    Only for a setup with an alert policy. Never raises: the prediction already succeeded.
    """
    report = run.report
    if report.prediction_id is None or run.setup is None:
        return
    policy = fetch_alert_policy(chap, run.setup.id)
    if policy is None:
        return

    def names(ids: list[str]) -> dict[str, str]:
        if reader is None:
            return {}
        rows = reader.org_units(ids, fields="id,displayName")
        return {r["id"]: r.get("displayName") or r["id"] for r in rows if isinstance(r, dict) and "id" in r}

    try:
        summary = read_alerts(chap, report.prediction_id, alert_policy=policy, org_unit_names=names)
    except Exception as exc:  # noqa: BLE001 - the prediction succeeded; an alerts problem is only a note
        summary = AlertsSummary(prediction_id=report.prediction_id, note=f"chap's alerts could not be read: {exc}")
    report.chap_alerts = summary
    log(f"chap alerts for prediction {report.prediction_id}: {summary.one_line()}")


def forecast_alert_metadata(summary: AlertsSummary | None) -> dict[str, Any]:
    """Metadata for the ``chap_forecast`` asset: the alert counts, and the alerts table as markdown text
    under ``chap_alerts_table`` (the Dagster shell wraps it). Empty when the setup has no alert policy."""
    if summary is None:
        return {}
    values: dict[str, Any] = dict(summary.metadata())
    values["chap_alerts_table"] = "\n".join(render_alerts_section(summary)).strip() + "\n"
    return values


def explain_failed_job(run: Any, chap: Any, exc: Exception) -> bool:
    """chap's job failed for a setup with an alert policy: did chap store the prediction first?

    chap-core 2.5.1 stores the prediction and then raises alerts in the same job; when the
    threshold computation raises (e.g. no complete year of history), the job ends FAILURE although
    the prediction exists. Then the report gets the prediction id and a note, and the error's hint
    says what happened. Returns whether that was the case. Never raises.
    """
    try:
        if run.setup is None or run.job_id is None:
            return False
        setup = chap._get(f"/v1/crud/prediction-setups/{run.setup.id}")
        policy = setup.get("alertPolicy") if isinstance(setup, dict) else None
        if not isinstance(policy, dict):
            return False
        job = chap.job_description(run.job_id)
        if job is None or not job.start_time:
            return False
        started = _parse_time(job.start_time)
        stored = [
            p for p in setup.get("predictions") or []
            if isinstance(p, dict) and isinstance(p.get("id"), int) and p.get("created")
            and _parse_time(str(p["created"])) >= started
        ]
        if not stored:
            return False
        prediction_id = max(p["id"] for p in stored)
    except Exception:  # noqa: BLE001 - only an explanation; the original failure stands
        return False
    name = str(policy.get("name", ""))
    error = (job.error or "no error text").strip().splitlines()[-1][:300]
    run.report.prediction_id = prediction_id
    run.report.chap_alerts = AlertsSummary(
        prediction_id=prediction_id, policy_name=name,
        note=f"chap stored prediction {prediction_id}, then failed while raising alerts for policy '{name}': {error}",
    )
    exc.hint = (
        f"The forecast exists in chap (prediction {prediction_id}); only chap's alert step failed. Check the alert "
        f"policy '{name}' against the data (a seasonal or percentile channel needs at least one complete year of "
        "history), or remove the policy from the configured model in chap; then run again."
    )
    return True


def _parse_time(text: str):
    from datetime import UTC, datetime

    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
