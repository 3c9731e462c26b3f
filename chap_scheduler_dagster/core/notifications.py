"""Who is told what, and when: the notification message and the transition rules behind it.

Plain and Dagster-free. The notifications sensor (``defs/notifications.py``) feeds it what
happened since its last tick (finished runs, the discovery sensors' recent ticks, the clock)
and sends what comes back through the channels in ``notify_channels``.

The rules, per configured model:
- a failure after a success (or on first sight) sends one ``failed`` message; further failures
  send nothing; the next success sends one ``recovered`` message;
- a success whose report counts pending chap alerts sends one ``alerts`` message per prediction;
- no success for the stale limit sends one ``stale`` message until the model succeeds again;
and per sensor: N ticks in a row that could not reach DHIS2/chap send one ``unreachable``
message; the first good tick after that sends ``reachable``.

All state lives in :class:`NotifyState`, which the sensor keeps as its cursor (JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENVELOPE_VERSION = 1
Kind = Literal["failed", "recovered", "stale", "alerts", "unreachable", "reachable", "test"]
KINDS: tuple[str, ...] = ("failed", "recovered", "stale", "alerts", "unreachable", "reachable", "test")
Severity = Literal["error", "warning", "info"]

# Days without a successful prediction before a model counts as stale, by period type: a bit more
# than one period plus the usual reporting delay, so a model on its normal cadence never trips it.
STALE_DEFAULT_DAYS = {"day": 3, "week": 10, "month": 40, "quarter": 100, "year": 380}
STALE_FALLBACK_DAYS = 40
# Skip reasons of the discovery sensors that mean DHIS2 or chap could not be used.
UNREACHABLE_MARK = "DHIS2 or chap unavailable"
# Prediction ids already announced, kept bounded in the cursor.
MAX_REMEMBERED_PREDICTIONS = 500


class NotifySettings(BaseSettings):
    """Notification settings, from ``CHAP_SCHEDULER_*`` environment variables. Secrets are SecretStr."""

    model_config = SettingsConfigDict(
        env_prefix="CHAP_SCHEDULER_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    dagster_url: str = Field(default="", description="Base URL of the Dagster UI, for links in messages.")
    stale_after_days: float | None = Field(default=None, gt=0, description="Default: by period type.")
    notify_interval_seconds: int = Field(default=60, ge=1, description="How often the notifications sensor looks.")
    notify_unreachable_ticks: int = Field(default=3, ge=1)
    notify_attempts: int = Field(default=3, ge=1, le=5)
    notify_timeout_seconds: float = Field(default=10, gt=0, le=30)
    notify_mute: str = Field(default="", description="Comma list of message kinds and/or model ids not to send.")
    # Channels: each is on when its first setting is set.
    notify_webhook_url: SecretStr | None = None
    slack_token: SecretStr | None = None
    slack_channel: str = ""
    slack_api_url: str = ""
    teams_webhook_url: SecretStr | None = None
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    smtp_from: str = ""
    smtp_to: str = ""
    smtp_ca_file: str = ""

    def stale_after(self, period_type: str | None) -> timedelta:
        if self.stale_after_days is not None:
            return timedelta(days=self.stale_after_days)
        return timedelta(days=STALE_DEFAULT_DAYS.get((period_type or "").lower(), STALE_FALLBACK_DAYS))

    def muted(self, notification: Notification) -> bool:
        words = {w.strip() for w in self.notify_mute.split(",") if w.strip()}
        return notification.kind in words or (notification.model_id is not None and notification.model_id in words)

    def secrets(self) -> list[str]:
        """Every secret value a message must never contain."""
        values = [
            s.get_secret_value()
            for s in (self.notify_webhook_url, self.slack_token, self.teams_webhook_url, self.smtp_password)
            if s is not None
        ]
        return [v for v in values if v]


# ---- the message ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """The DHIS2 a message is about (URL without credentials), and how the Dagster UI is reached."""

    dhis2_url: str
    location_name: str = ""
    dagster_url: str = ""
    report_asset_path: tuple[str, ...] = ("dhis2_chap_prediction_report",)

    @property
    def label(self) -> str:
        return f"{self.dhis2_url} ({self.location_name})" if self.location_name else self.dhis2_url or "DHIS2"

    def run_url(self, run_id: str | None) -> str | None:
        if not run_id or not self.dagster_url:
            return None
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def report_url(self, model_id: str | None) -> str | None:
        if not model_id or not self.dagster_url:
            return None
        path = "/".join(quote(p) for p in self.report_asset_path)
        return f"{self.dagster_url.rstrip('/')}/assets/{path}?partition={quote(model_id)}"


@dataclass(frozen=True)
class Notification:
    kind: Kind
    severity: Severity
    location: str
    what: str
    fix: str
    model_id: str | None = None
    model_name: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    report_url: str | None = None
    prediction_id: int | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, str | int] = field(default_factory=dict)

    @property
    def model_label(self) -> str:
        if self.model_id is None:
            return ""
        return f"{self.model_name} (id {self.model_id})" if self.model_name else f"configured model {self.model_id}"

    @property
    def title(self) -> str:
        head = {
            "failed": "FAILED", "recovered": "RECOVERED", "stale": "STALE", "alerts": "OUTBREAK ALERTS",
            "unreachable": "UNREACHABLE", "reachable": "REACHABLE AGAIN", "test": "TEST",
        }[self.kind]
        subject = self.model_label or self.details.get("sensor", "") or "chap-scheduler"
        return f"[chap-scheduler] {head}: {subject} on {self.location}"

    def lines(self) -> list[str]:
        """The message as plain lines: where, which model, what happened, the fix, the links."""
        out = [f"DHIS2: {self.location}"]
        if self.model_id is not None:
            out.append(f"Model: {self.model_label}")
        out += [f"What happened: {self.what}", f"Fix: {self.fix}"]
        if self.run_url:
            out.append(f"Dagster run: {self.run_url}")
        elif self.run_id:
            out.append(f"Dagster run: {self.run_id}")
        if self.report_url:
            out.append(f"Report: {self.report_url}")
        return out

    def text(self) -> str:
        return "\n".join([self.title, *self.lines()])

    def envelope(self) -> dict:
        """The generic webhook's JSON body (documented in the README; bump ENVELOPE_VERSION on change)."""
        return {
            "version": ENVELOPE_VERSION,
            "source": "chap-scheduler-dagster",
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "text": self.text(),
            "location": self.location,
            "model": None if self.model_id is None else {"id": self.model_id, "name": self.model_name},
            "what": self.what,
            "fix": self.fix,
            "run_id": self.run_id,
            "links": {"run": self.run_url, "report": self.report_url},
            "prediction_id": self.prediction_id,
            "occurred_at": self.occurred_at.isoformat(timespec="seconds"),
            "details": dict(self.details),
        }


def redact_secrets(text: str, secrets: list[str]) -> tuple[str, bool]:
    """Replace every secret in ``text``; returns the text and whether any was found."""
    found = False
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        if secret in text:
            found = True
            text = text.replace(secret, "[redacted]")
    return text, found


def scrub_notification(n: Notification, secrets: list[str]) -> tuple[Notification, bool]:
    """The notification with any secret removed from every text field (the last-line scan)."""
    raw = json.dumps(n.envelope(), default=str)
    if not any(s and len(s) >= 4 and s in raw for s in secrets):
        return n, False

    def clean(value):
        if isinstance(value, str):
            return redact_secrets(value, secrets)[0]
        return value

    return (
        Notification(
            kind=n.kind, severity=n.severity, location=clean(n.location), what=clean(n.what), fix=clean(n.fix),
            model_id=n.model_id, model_name=clean(n.model_name), run_id=n.run_id, run_url=clean(n.run_url),
            report_url=clean(n.report_url), prediction_id=n.prediction_id, occurred_at=n.occurred_at,
            details={k: clean(v) for k, v in n.details.items()},
        ),
        True,
    )


# ---- what the sensor observes --------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    """One finished prediction run, as its report tells it."""

    model_id: str
    run_id: str
    succeeded: bool
    finished_at: datetime
    model_name: str = ""
    period_type: str = ""
    failed_step: str = ""
    error: str = ""
    hint: str = ""
    prediction_id: int | None = None
    alerts_pending: int = 0
    alerts_summary: str = ""
    alerts_error: str = ""


@dataclass(frozen=True)
class SensorTick:
    """One tick of a discovery sensor: did it reach DHIS2/chap, and if not, why."""

    timestamp: float
    unreachable: bool
    reason: str = ""


# ---- the state kept in the sensor cursor ---------------------------------------------------


class ModelState(BaseModel):
    name: str = ""
    period_type: str = ""
    failing: bool = False
    first_seen: datetime
    last_success: datetime | None = None
    stale_said: bool = False


class NotifyState(BaseModel):
    """The notification sensor's cursor. ``watermark`` is the update time of the newest run handled."""

    version: int = 1
    watermark: float | None = None
    # Runs handled at or just before the watermark: run storage keeps whole seconds, so the next
    # query looks back a little and skips these.
    handled_runs: list[str] = Field(default_factory=list)
    models: dict[str, ModelState] = Field(default_factory=dict)
    announced_predictions: list[int] = Field(default_factory=list)
    unreachable: dict[str, bool] = Field(default_factory=dict)

    @classmethod
    def load(cls, cursor: str | None) -> NotifyState:
        if not cursor:
            return cls()
        try:
            return cls.model_validate_json(cursor)
        except ValueError:
            # An unreadable cursor (older layout) starts over rather than wedging the sensor.
            return cls()

    def dump(self) -> str:
        return self.model_dump_json()


# ---- the rules ------------------------------------------------------------------------------


def observe_run(state: NotifyState, run: RunOutcome, where: Where) -> list[Notification]:
    """Update the model's state with one finished run; the messages its transition calls for."""
    known = state.models.get(run.model_id)
    model = known or ModelState(first_seen=run.finished_at)
    if run.model_name:
        model.name = run.model_name
    if run.period_type:
        model.period_type = run.period_type
    state.models[run.model_id] = model
    common = dict(
        location=where.label, model_id=run.model_id, model_name=model.name or None, run_id=run.run_id,
        run_url=where.run_url(run.run_id), report_url=where.report_url(run.model_id), occurred_at=run.finished_at,
    )
    out: list[Notification] = []
    if not run.succeeded:
        if not model.failing:
            model.failing = True
            step = f" at {run.failed_step}" if run.failed_step else ""
            out.append(Notification(
                kind="failed", severity="error",
                what=f"the prediction failed{step}: {_one_line(run.error) or 'no error text'}",
                fix=_one_line(run.hint) or "Open the run report for the cause; the next scheduled run retries.",
                details={"failed_step": run.failed_step}, **common,
            ))
        return out
    was_failing = model.failing
    model.failing = False
    model.last_success = run.finished_at
    if model.stale_said and not was_failing:
        out.append(Notification(
            kind="recovered", severity="info", what="a prediction succeeded again after the model was stale",
            fix="Nothing to do.", prediction_id=run.prediction_id, **common,
        ))
    model.stale_said = False
    if was_failing:
        out.append(Notification(
            kind="recovered", severity="info",
            what=f"the prediction succeeded again (prediction {run.prediction_id})" if run.prediction_id
            else "the prediction succeeded again",
            fix="Nothing to do.", prediction_id=run.prediction_id, **common,
        ))
    if run.alerts_pending > 0 and run.prediction_id is not None and run.prediction_id not in state.announced_predictions:
        state.announced_predictions = [*state.announced_predictions, run.prediction_id][-MAX_REMEMBERED_PREDICTIONS:]
        out.append(Notification(
            kind="alerts", severity="warning",
            what=f"chap raised {run.alerts_pending} pending outbreak alert(s) for prediction {run.prediction_id}"
            + (f": {run.alerts_summary}" if run.alerts_summary else ""),
            fix="Review them in chap (GET /v1/crud/alerts?approved=pending) and approve or decline each.",
            prediction_id=run.prediction_id, details={"alerts_pending": run.alerts_pending}, **common,
        ))
    return out


def check_stale(
    state: NotifyState,
    known_models: list[str],
    now: datetime,
    where: Where,
    stale_after,
) -> list[Notification]:
    """One ``stale`` message per model without a success for its limit; ``stale_after(period_type)`` gives it."""
    out: list[Notification] = []
    for model_id in known_models:
        model = state.models.setdefault(model_id, ModelState(first_seen=now))
        since = model.last_success or model.first_seen
        limit: timedelta = stale_after(model.period_type or None)
        if model.stale_said or now - since < limit:
            continue
        model.stale_said = True
        days = (now - since).total_seconds() / 86400
        what = (
            f"no successful prediction for {days:.0f} days (limit {limit.total_seconds() / 86400:g} days); "
            + (f"last success {model.last_success.isoformat(timespec='minutes')}" if model.last_success
               else "never succeeded since notifications started")
        )
        out.append(Notification(
            kind="stale", severity="warning", location=where.label, model_id=model_id, model_name=model.name or None,
            what=what,
            fix="Check that a schedule or chap's own cron runs this model, and the latest run report for why it "
            "fails; raise CHAP_SCHEDULER_STALE_AFTER_DAYS if the cadence is slower.",
            report_url=where.report_url(model_id), occurred_at=now,
        ))
    return out


def forget_models(state: NotifyState, known_models: list[str]) -> None:
    """Drop state of models deleted in chap, so the cursor does not grow forever."""
    for model_id in list(state.models):
        if model_id not in known_models:
            del state.models[model_id]


def observe_sensor(
    state: NotifyState, sensor: str, ticks: list[SensorTick], threshold: int, where: Where, now: datetime
) -> list[Notification]:
    """``ticks`` newest first. N unreachable in a row sends one message; a good tick after it another."""
    if not ticks:
        return []
    said = state.unreachable.get(sensor, False)
    latest = ticks[0]
    if not said and len(ticks) >= threshold and all(t.unreachable for t in ticks[:threshold]):
        state.unreachable[sensor] = True
        reason, _, hint = latest.reason.partition(" — ")
        return [Notification(
            kind="unreachable", severity="error", location=where.label,
            what=f"sensor {sensor} could not reach DHIS2/chap for {threshold} ticks in a row: {_one_line(reason)}",
            fix=_one_line(hint) or "Check that DHIS2 and chap-core are up and that DHIS2's route 'chap' works.",
            occurred_at=now, details={"sensor": sensor},
        )]
    if said and not latest.unreachable:
        state.unreachable[sensor] = False
        return [Notification(
            kind="reachable", severity="info", location=where.label,
            what=f"sensor {sensor} reaches DHIS2/chap again", fix="Nothing to do.", occurred_at=now,
            details={"sensor": sensor},
        )]
    return []


def _one_line(text: str) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= 400 else line[:397] + "..."
