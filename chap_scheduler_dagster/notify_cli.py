"""``chap-scheduler-run notify-test [--channel webhook|slack|teams|email …]``: one test message per channel.

Sends through exactly the code the notifications sensor uses (retries included) and prints what
each channel answered. Exit 0 when every channel accepted it, 1 when one failed, 2 when none is
configured.
"""

from __future__ import annotations

import argparse

import dagster as dg

from .core.errors import redact_url
from .core.notifications import Notification, NotifySettings
from .core.notify_channels import CHANNEL_NAMES, all_secrets, channel_problems, configured_channels, deliver
from .defs.resources import dhis2_resource_definition
from .settings import get_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chap-scheduler-run notify-test",
                                description="Send one test notification to each configured channel.")
    p.add_argument("--channel", action="append", choices=CHANNEL_NAMES,
                   help="only this channel (repeatable); default: every configured one")
    return p


def test_message(settings: NotifySettings) -> Notification:
    location = get_settings().location_name
    dhis2 = _dhis2_url() or "DHIS2 (DHIS2_BASE_URL not set)"
    return Notification(
        kind="test", severity="info", location=f"{dhis2} ({location})" if location else dhis2,
        what="this is a test message from chap-scheduler-run notify-test",
        fix="Nothing to do: notifications reach this channel.",
        run_url=f"{settings.dagster_url.rstrip('/')}/runs" if settings.dagster_url else None,
    )


def _dhis2_url() -> str:
    """The ``dhis2`` resource's address, redacted, as the notifications sensor labels its messages."""
    with dg.build_resources({"dhis2": dhis2_resource_definition()}) as resources:
        return redact_url(resources.dhis2.base_url)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = NotifySettings()
    for problem in channel_problems(settings):
        print(f"not configured: {problem}")
    channels = configured_channels(settings, only=args.channel)
    if not channels:
        wanted = ", ".join(args.channel) if args.channel else "any channel"
        print(f"no notification channel configured for {wanted}: set CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL, "
              "CHAP_SCHEDULER_SLACK_TOKEN + CHAP_SCHEDULER_SLACK_CHANNEL, CHAP_SCHEDULER_TEAMS_WEBHOOK_URL or "
              "CHAP_SCHEDULER_SMTP_HOST + CHAP_SCHEDULER_SMTP_TO (see the README, Notifications)")
        return 2
    deliveries = deliver(channels, [test_message(settings)], secrets=all_secrets(settings),
                         attempts=settings.notify_attempts)
    for d in deliveries:
        print(("OK     " if d.ok else "FAILED ") + d.describe())
    return 0 if all(d.ok for d in deliveries) else 1
