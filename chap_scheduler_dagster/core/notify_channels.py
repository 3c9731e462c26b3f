"""Where messages go: a generic webhook, Slack, Microsoft Teams and email (SMTP).

Each channel is on when its settings are set (none by default). Slack and Teams go through
the Dagster integrations (dagster-slack, dagster-msteams); their clients are created per send.
:func:`deliver` retries a failing channel a few times with a short backoff, then gives up and
reports it: a channel never raises into the caller, so it can never fail or block a prediction.
Every payload is scanned for secrets (the DHIS2 password or token, channel credentials) first.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import httpx

from .errors import redact_url
from .notifications import Notification, NotifySettings, redact_secrets, scrub_notification
from .retry import backoff_delay

CHANNEL_NAMES = ("webhook", "slack", "teams", "email")


class Channel(Protocol):
    name: str

    def send(self, notification: Notification) -> str:
        """Send one message; returns what the receiver answered (short). Raises on failure."""


@dataclass
class WebhookChannel:
    url: str
    timeout_seconds: float = 10.0
    name: str = "webhook"

    def send(self, notification: Notification) -> str:
        response = httpx.post(self.url, json=notification.envelope(), timeout=self.timeout_seconds)
        response.raise_for_status()
        return f"HTTP {response.status_code}"


@dataclass
class SlackChannel:
    token: str
    channel: str
    api_url: str = ""  # another Slack API base (a proxy, or a test receiver)
    timeout_seconds: float = 10.0
    name: str = "slack"

    def send(self, notification: Notification) -> str:
        from dagster_slack import SlackResource

        client = SlackResource(token=self.token).get_client()
        client.timeout = int(max(1, self.timeout_seconds))
        if self.api_url:
            client.base_url = self.api_url.rstrip("/") + "/"
        answer = client.chat_postMessage(
            channel=self.channel, text=notification.text(), blocks=_slack_blocks(notification)
        )
        return f"ok={answer.get('ok')} ts={answer.get('ts', '')}"


@dataclass
class TeamsChannel:
    hook_url: str
    timeout_seconds: float = 10.0
    name: str = "teams"

    def send(self, notification: Notification) -> str:
        from dagster_msteams import MSTeamsResource
        from dagster_msteams.adaptive_card import AdaptiveCard

        card = AdaptiveCard()
        card.add_attachment(text_message=f"**{notification.title}**")
        for line in notification.lines():
            card.add_attachment(text_message=line)
        MSTeamsResource(hook_url=self.hook_url, timeout=self.timeout_seconds).get_client().post_message(
            payload=card.payload
        )
        return "accepted"


@dataclass
class EmailChannel:
    host: str
    port: int
    sender: str
    recipients: list[str]
    username: str = ""
    password: str = ""
    starttls: bool = True
    ca_file: str = ""
    timeout_seconds: float = 10.0
    name: str = "email"

    def send(self, notification: Notification) -> str:
        message = EmailMessage()
        message["Subject"] = notification.title
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content("\n".join(notification.lines()) + "\n")
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file or None))
            if self.username:
                smtp.login(self.username, self.password)
            refused = smtp.send_message(message)
        return f"accepted for {len(self.recipients) - len(refused)} of {len(self.recipients)} recipients"


def _slack_blocks(n: Notification) -> list[dict]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": n.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(n.lines())}},
    ]


def configured_channels(settings: NotifySettings, only: list[str] | None = None) -> list[Channel]:
    """The channels whose settings are present (optionally only the named ones)."""
    s = settings
    out: list[Channel] = []
    if s.notify_webhook_url is not None:
        out.append(WebhookChannel(s.notify_webhook_url.get_secret_value(), s.notify_timeout_seconds))
    if s.slack_token is not None and s.slack_channel:
        out.append(SlackChannel(s.slack_token.get_secret_value(), s.slack_channel, s.slack_api_url,
                                s.notify_timeout_seconds))
    if s.teams_webhook_url is not None:
        out.append(TeamsChannel(s.teams_webhook_url.get_secret_value(), s.notify_timeout_seconds))
    if s.smtp_host and s.smtp_to:
        out.append(EmailChannel(
            host=s.smtp_host, port=s.smtp_port, sender=s.smtp_from or "chap-scheduler@localhost",
            recipients=[a.strip() for a in s.smtp_to.split(",") if a.strip()], username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else "", starttls=s.smtp_starttls,
            ca_file=s.smtp_ca_file, timeout_seconds=s.notify_timeout_seconds,
        ))
    if only:
        out = [c for c in out if c.name in only]
    return out


def channel_problems(settings: NotifySettings) -> list[str]:
    """Half-configured channels (so notify-test can say why one is missing)."""
    s = settings
    problems = []
    if s.slack_token is not None and not s.slack_channel:
        problems.append("slack: CHAP_SCHEDULER_SLACK_TOKEN is set but CHAP_SCHEDULER_SLACK_CHANNEL is not")
    if s.smtp_host and not s.smtp_to:
        problems.append("email: CHAP_SCHEDULER_SMTP_HOST is set but CHAP_SCHEDULER_SMTP_TO is not")
    return problems


def all_secrets(settings: NotifySettings) -> list[str]:
    """The secrets no message may contain: the DHIS2 credentials and every channel credential."""
    dhis2 = [os.environ.get("DHIS2_PASSWORD", ""), os.environ.get("DHIS2_TOKEN", "")]
    return [s for s in [*dhis2, *settings.secrets()] if s]


@dataclass(frozen=True)
class Delivery:
    channel: str
    kind: str
    ok: bool
    attempts: int
    answer: str
    redacted: bool = False

    def describe(self) -> str:
        state = "sent" if self.ok else f"NOT sent after {self.attempts} attempts"
        return f"{self.channel}: {self.kind} {state} — {self.answer}" + (
            " (a secret was removed from the message)" if self.redacted else ""
        )


def deliver(
    channels: list[Channel],
    notifications: list[Notification],
    *,
    secrets: list[str],
    attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Delivery]:
    """Send every notification to every channel. Never raises; failures come back as deliveries."""
    results = []
    for notification in notifications:
        clean, redacted = scrub_notification(notification, secrets)
        for channel in channels:
            answer, ok, tried = "", False, 0
            for tried in range(1, attempts + 1):
                try:
                    answer, ok = channel.send(clean), True
                    break
                except Exception as exc:  # noqa: BLE001 - any channel failure is reported, never raised
                    answer = _error_text(exc, secrets)
                    if tried < attempts:
                        sleep(min(backoff_delay(tried), 4.0))
            results.append(Delivery(channel.name, notification.kind, ok, tried, answer, redacted))
    return results


def _error_text(exc: BaseException, secrets: list[str]) -> str:
    """The error in one line without secrets: webhook URLs carry tokens, and httpx errors quote the URL."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.HTTPStatusError):
        text = f"HTTP {exc.response.status_code} {exc.response.reason_phrase}: {exc.response.text[:200]}"
    text = redact_secrets(text, secrets)[0]
    return " ".join(redact_url(text).split())[:300]
