"""Notification rules (transitions, stale with a pinned clock, sensor outage) and the four channels
against real loopback receivers (HTTP for webhook/Slack/Teams, aiosmtpd with STARTTLS for email)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from chap_scheduler_dagster.core.notifications import (
    ENVELOPE_VERSION,
    Notification,
    NotifySettings,
    NotifyState,
    RunOutcome,
    SensorTick,
    Where,
    check_stale,
    observe_run,
    observe_sensor,
)
from chap_scheduler_dagster.core.notify_channels import (
    EmailChannel,
    SlackChannel,
    TeamsChannel,
    WebhookChannel,
    all_secrets,
    configured_channels,
    deliver,
)

from .notify_receivers import self_signed_cert, start_http_receiver, start_smtp_receiver

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
WHERE = Where(dhis2_url="https://dhis2.example.org", location_name="sandboxia", dagster_url="http://dagster.local:3000")
PASSWORD = "s3cret-district-pw"


def _run(n: int, ok: bool, model: str = "3", **kw) -> RunOutcome:
    return RunOutcome(
        model_id=model, run_id=f"run-{model}-{n}", succeeded=ok, finished_at=T0 + timedelta(days=n),
        model_name="ewars monthly", period_type="month",
        failed_step="" if ok else "fetch_analytics", error="" if ok else "DHIS2 analytics answered 500",
        hint="" if ok else "Run analytics tables in DHIS2.", prediction_id=100 + n if ok else None, **kw,
    )


# ---- transitions -------------------------------------------------------------------------------------


def test_fail_fail_fail_recover_gives_two_messages():
    state = NotifyState()
    sent = [m for i, ok in enumerate([True, False, False, False, True]) for m in observe_run(state, _run(i, ok), WHERE)]
    assert [m.kind for m in sent] == ["failed", "recovered"]
    failed, recovered = sent
    assert failed.model_label == "ewars monthly (id 3)"
    assert failed.what == "the prediction failed at fetch_analytics: DHIS2 analytics answered 500"
    assert failed.fix == "Run analytics tables in DHIS2."
    assert failed.run_url == "http://dagster.local:3000/runs/run-3-1"
    assert failed.report_url == "http://dagster.local:3000/assets/dhis2_chap_prediction_report?partition=3"
    assert recovered.run_id == "run-3-4" and recovered.prediction_id == 104
    # The state survives the cursor round trip, and a second failure after recovery is news again.
    state = NotifyState.load(state.dump())
    assert [m.kind for m in observe_run(state, _run(5, False), WHERE)] == ["failed"]


def test_models_are_independent_and_first_success_is_silent():
    state = NotifyState()
    assert observe_run(state, _run(0, True, model="1"), WHERE) == []
    assert [m.model_id for m in observe_run(state, _run(0, False, model="2"), WHERE)] == ["2"]
    assert observe_run(state, _run(1, False, model="2"), WHERE) == []
    assert observe_run(state, _run(1, True, model="1"), WHERE) == []


def test_pending_chap_alerts_are_announced_once_per_prediction():
    state = NotifyState()
    run = _run(0, True, alerts_pending=5, alerts_summary="5 alerts (3 action, 2 monitor) in 2 org units")
    [msg] = observe_run(state, run, WHERE)
    assert msg.kind == "alerts" and msg.prediction_id == 100
    assert "5 pending outbreak alert(s) for prediction 100: 5 alerts (3 action" in msg.what
    assert observe_run(state, run, WHERE) == []  # same prediction seen again (e.g. a re-read)


def test_cursor_that_cannot_be_read_starts_over():
    assert NotifyState.load("{not json") == NotifyState()
    assert NotifyState.load(None) == NotifyState()


# ---- stale, with a pinned clock ----------------------------------------------------------------------


def test_stale_is_said_once_until_the_model_recovers():
    settings = NotifySettings(_env_file=None)
    state = NotifyState()
    observe_run(state, _run(0, True), WHERE)  # last success T0, monthly: default limit 40 days
    assert check_stale(state, ["3"], T0 + timedelta(days=39), WHERE, settings.stale_after) == []
    [msg] = check_stale(state, ["3"], T0 + timedelta(days=41), WHERE, settings.stale_after)
    assert msg.kind == "stale" and msg.model_id == "3"
    assert msg.what.startswith("no successful prediction for 41 days (limit 40 days); last success 2026-03-01T06:00")
    assert check_stale(state, ["3"], T0 + timedelta(days=60), WHERE, settings.stale_after) == []
    # A success ends it (one "recovered"), and the clock starts again.
    [back] = observe_run(state, _run(61, True), WHERE)
    assert back.kind == "recovered"
    assert check_stale(state, ["3"], T0 + timedelta(days=62), WHERE, settings.stale_after) == []


def test_stale_limit_from_setting_and_period_type(monkeypatch):
    assert NotifySettings(_env_file=None).stale_after("week") == timedelta(days=10)
    assert NotifySettings(_env_file=None).stale_after(None) == timedelta(days=40)
    monkeypatch.setenv("CHAP_SCHEDULER_STALE_AFTER_DAYS", "2")
    settings = NotifySettings(_env_file=None)
    assert settings.stale_after("month") == timedelta(days=2)
    state = NotifyState()
    # A model that never succeeded counts from when it was first seen.
    assert check_stale(state, ["9"], T0, WHERE, settings.stale_after) == []
    [msg] = check_stale(state, ["9"], T0 + timedelta(days=3), WHERE, settings.stale_after)
    assert "never succeeded" in msg.what


# ---- the discovery sensors could not reach DHIS2/chap --------------------------------------------------


def test_sensor_outage_after_n_ticks_and_back():
    state = NotifyState()
    bad = SensorTick(0, True, "DHIS2 or chap unavailable: could not reach DHIS2 — Check DHIS2_BASE_URL")
    good = SensorTick(0, False, "no change")
    assert observe_sensor(state, "configured_models_sensor", [bad, bad, good], 3, WHERE, T0) == []
    [down] = observe_sensor(state, "configured_models_sensor", [bad, bad, bad], 3, WHERE, T0)
    assert down.kind == "unreachable" and "3 ticks in a row" in down.what
    assert down.fix == "Check DHIS2_BASE_URL"
    assert observe_sensor(state, "configured_models_sensor", [bad, bad, bad, bad], 3, WHERE, T0) == []
    [up] = observe_sensor(state, "configured_models_sensor", [good, bad, bad], 3, WHERE, T0)
    assert up.kind == "reachable"
    assert observe_sensor(state, "configured_models_sensor", [good, good], 3, WHERE, T0) == []


# ---- channels against real receivers -------------------------------------------------------------------


@pytest.fixture
def http_receiver():
    receiver = start_http_receiver()
    yield receiver
    receiver.close()


def _failure(error: str = "DHIS2 analytics answered 500") -> Notification:
    state = NotifyState()
    [msg] = observe_run(state, RunOutcome(model_id="3", run_id="r1", succeeded=False, finished_at=T0,
                                          model_name="ewars monthly", failed_step="fetch_analytics", error=error,
                                          hint="Run analytics tables in DHIS2."), WHERE)
    return msg


def test_webhook_envelope(http_receiver):
    [d] = deliver([WebhookChannel(http_receiver.url + "/hook/tok3n")], [_failure()], secrets=[])
    assert d.ok and d.answer == "HTTP 200" and d.attempts == 1
    [got] = http_receiver.received
    body = got.json()
    assert got.path == "/hook/tok3n"
    assert body["version"] == ENVELOPE_VERSION == 1
    assert body["kind"] == "failed" and body["severity"] == "error"
    assert body["model"] == {"id": "3", "name": "ewars monthly"}
    assert body["location"] == "https://dhis2.example.org (sandboxia)"
    assert body["links"] == {"run": "http://dagster.local:3000/runs/r1",
                             "report": "http://dagster.local:3000/assets/dhis2_chap_prediction_report?partition=3"}
    assert body["fix"] == "Run analytics tables in DHIS2."
    assert "Fix: Run analytics tables in DHIS2." in body["text"]


def test_slack_through_dagster_slack(http_receiver):
    channel = SlackChannel(token="xoxb-test-token", channel="#chap-ops", api_url=http_receiver.url + "/api/")
    [d] = deliver([channel], [_failure()], secrets=["xoxb-test-token"])
    assert d.ok, d.answer
    [got] = http_receiver.received
    assert got.path == "/api/chat.postMessage"
    assert got.headers["Authorization"] == "Bearer xoxb-test-token"
    body = got.json()
    assert body["channel"] == "#chap-ops"
    assert body["text"].startswith("[chap-scheduler] FAILED: ewars monthly (id 3) on https://dhis2.example.org")
    assert body["blocks"][0]["type"] == "header"


def test_teams_through_dagster_msteams(http_receiver):
    [d] = deliver([TeamsChannel(http_receiver.url + "/teams/webhook")], [_failure()], secrets=[])
    assert d.ok, d.answer
    body = http_receiver.received[0].json()
    card = body["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    texts = [b["text"] for b in card["body"]]
    assert texts[0].startswith("**[chap-scheduler] FAILED")
    assert "Model: ewars monthly (id 3)" in texts and "Fix: Run analytics tables in DHIS2." in texts


def test_failing_channel_is_retried_then_reported_without_raising(http_receiver, monkeypatch):
    from chap_scheduler_dagster.settings import get_settings

    monkeypatch.setenv("CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS", "0.5")  # the real policy (tests default to 0)
    get_settings.cache_clear()
    sleeps: list[float] = []
    http_receiver.fail_next = [503, 500, 404]
    url = http_receiver.url + "/hook/SECRET-TOKEN-123"
    [d] = deliver([WebhookChannel(url)], [_failure()], secrets=[url], attempts=3, sleep=sleeps.append)
    assert not d.ok and d.attempts == 3 and len(http_receiver.received) == 3
    assert len(sleeps) == 2 and all(0 < s <= 4 for s in sleeps)
    assert "HTTP 404" in d.answer and "SECRET-TOKEN" not in d.answer and "SECRET-TOKEN" not in d.describe()
    # A transient failure followed by success: delivered on the second attempt.
    http_receiver.fail_next = [502]
    [d] = deliver([WebhookChannel(url)], [_failure()], secrets=[url], sleep=sleeps.append)
    assert d.ok and d.attempts == 2


def test_unreachable_channel_gives_up_quickly():
    [d] = deliver([WebhookChannel("http://127.0.0.1:9/hook", timeout_seconds=1)], [_failure()], secrets=[],
                  attempts=2, sleep=lambda s: None)
    assert not d.ok and d.attempts == 2 and "ConnectError" in d.answer


def test_every_sent_message_is_scanned_for_the_dhis2_password(http_receiver, monkeypatch):
    monkeypatch.setenv("DHIS2_PASSWORD", PASSWORD)
    monkeypatch.setenv("CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL", http_receiver.url + "/hook")
    monkeypatch.setenv("CHAP_SCHEDULER_SLACK_TOKEN", "xoxb-1")
    monkeypatch.setenv("CHAP_SCHEDULER_SLACK_CHANNEL", "#ops")
    monkeypatch.setenv("CHAP_SCHEDULER_SLACK_API_URL", http_receiver.url + "/api/")
    monkeypatch.setenv("CHAP_SCHEDULER_TEAMS_WEBHOOK_URL", http_receiver.url + "/teams")
    settings = NotifySettings(_env_file=None)
    channels = configured_channels(settings)
    assert [c.name for c in channels] == ["webhook", "slack", "teams"]
    # An error text that (wrongly) quotes the password must not carry it to any receiver.
    leaky = _failure(error=f"login failed for admin:{PASSWORD}@dhis2")
    deliveries = deliver(channels, [leaky], secrets=all_secrets(settings), sleep=lambda s: None)
    assert all(d.ok and d.redacted for d in deliveries), [d.describe() for d in deliveries]
    assert len(http_receiver.received) == 3
    for got in http_receiver.received:
        assert PASSWORD not in got.body.decode()
        assert "[redacted]" in got.body.decode()


def test_email_over_starttls_with_auth(tmp_path, monkeypatch):
    cert, key = self_signed_cert(tmp_path)
    smtp = start_smtp_receiver(cert, key, user="notifier", password="smtp-pw-42")
    try:
        monkeypatch.setenv("DHIS2_PASSWORD", PASSWORD)
        for name, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_USERNAME": "notifier",
                            "SMTP_PASSWORD": "smtp-pw-42", "SMTP_FROM": "chap@example.org",
                            "SMTP_TO": "ops@example.org, epi@example.org", "SMTP_CA_FILE": str(cert)}.items():
            monkeypatch.setenv(f"CHAP_SCHEDULER_{name}", value)
        settings = NotifySettings(_env_file=None)
        [channel] = configured_channels(settings)
        assert isinstance(channel, EmailChannel) and channel.starttls
        [d] = deliver([channel], [_failure(error=f"pw {PASSWORD}")], secrets=all_secrets(settings))
        assert d.ok, d.answer
        assert d.answer == "accepted for 2 of 2 recipients"
        assert smtp.logins and smtp.logins[0][0] == "notifier"
        [envelope] = smtp.messages
        assert envelope.rcpt_tos == ["ops@example.org", "epi@example.org"]
        text = envelope.content.decode()
        assert "Subject: [chap-scheduler] FAILED: ewars monthly (id 3)" in text
        assert "Fix: Run analytics tables in DHIS2." in text
        assert PASSWORD not in text and "smtp-pw-42" not in text
        # Without STARTTLS this server refuses AUTH: the channel reports it, after its retries.
        plain = EmailChannel(host="127.0.0.1", port=smtp.port, sender="a@b", recipients=["c@d"],
                             username="notifier", password="smtp-pw-42", starttls=False, timeout_seconds=5)
        [d] = deliver([plain], [_failure()], secrets=["smtp-pw-42"], attempts=2, sleep=lambda s: None)
        assert not d.ok and "smtp-pw-42" not in d.answer
    finally:
        smtp.close()


def test_no_channel_by_default(monkeypatch):
    for name in ("NOTIFY_WEBHOOK_URL", "SLACK_TOKEN", "TEAMS_WEBHOOK_URL", "SMTP_HOST"):
        monkeypatch.delenv(f"CHAP_SCHEDULER_{name}", raising=False)
    assert configured_channels(NotifySettings(_env_file=None)) == []


def test_mute_by_kind_or_model(monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_NOTIFY_MUTE", "stale, 7")
    settings = NotifySettings(_env_file=None)
    assert settings.muted(Notification(kind="stale", severity="warning", location="x", what="w", fix="f"))
    assert settings.muted(Notification(kind="failed", severity="error", location="x", what="w", fix="f", model_id="7"))
    assert not settings.muted(_failure())
    assert json.dumps(_failure().envelope())  # serializable as is


# ---- chap-scheduler-run notify-test -------------------------------------------------------------------


def test_notify_test_cli_sends_to_each_channel_and_says_what_it_answered(http_receiver, monkeypatch, capsys):
    from chap_scheduler_dagster.cli import main

    for name in ("SLACK_TOKEN", "TEAMS_WEBHOOK_URL", "SMTP_HOST"):
        monkeypatch.delenv(f"CHAP_SCHEDULER_{name}", raising=False)
    monkeypatch.setenv("DHIS2_BASE_URL", "https://dhis2.example.org")
    monkeypatch.setenv("CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL", http_receiver.url + "/hook")
    monkeypatch.setenv("CHAP_SCHEDULER_TEAMS_WEBHOOK_URL", http_receiver.url + "/teams")
    assert main(["notify-test"]) == 0
    out = capsys.readouterr().out
    assert "OK     webhook: test sent — HTTP 200" in out and "OK     teams: test sent — accepted" in out
    assert [r.path for r in http_receiver.received] == ["/hook", "/teams"]
    assert http_receiver.received[0].json()["kind"] == "test"
    assert http_receiver.received[0].json()["location"] == "https://dhis2.example.org"  # the dhis2 resource's

    assert main(["notify-test", "--channel", "webhook"]) == 0
    assert http_receiver.paths()[-1] == "/hook" and len(http_receiver.received) == 3

    http_receiver.fail_next = [500, 500, 500]
    monkeypatch.setenv("CHAP_SCHEDULER_NOTIFY_ATTEMPTS", "3")
    assert main(["notify-test", "--channel", "webhook"]) == 1
    assert "FAILED webhook: test NOT sent after 3 attempts — HTTP 500" in capsys.readouterr().out

    assert main(["notify-test", "--channel", "email"]) == 2
    assert "no notification channel configured for email" in capsys.readouterr().out
