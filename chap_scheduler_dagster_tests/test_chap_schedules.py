"""Pure rules of chap's own schedules, the partition diff and the overview markdown (no Dagster)."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from chap_scheduler_dagster.core.chap_schedules import (
    CursorEntry,
    InvalidCron,
    dump_cursor,
    latest_tick,
    parse_cursor,
    plan_chap_cron,
    validate_cron,
)
from chap_scheduler_dagster.core.overview import OverviewRow, render_overview
from chap_scheduler_dagster.core.partition_keys import diff_partitions

GRACE = timedelta(minutes=2)


@dataclass
class Setup:
    id: int
    schedule_cron_expression: str | None = "0 6 * * 1"
    schedule_enabled: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"setup {self.id}"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else datetime.fromisoformat(text)


def plan(setups, cursor=None, now="2026-11-23T06:00:30", tz="UTC"):
    return plan_chap_cron(setups, cursor or {}, now=at(now), tz=tz, grace=GRACE)


# ---- cron --------------------------------------------------------------------------------


def test_latest_tick_includes_now_and_uses_time_zone():
    assert latest_tick("0 6 * * 1", at("2026-11-23T06:00:00"), "UTC") == at("2026-11-23T06:00:00")
    assert latest_tick("0 6 * * 1", at("2026-11-23T05:59:59"), "UTC") == at("2026-11-16T06:00:00")
    # 06:00 in Kampala (UTC+3) is 03:00 UTC.
    tick = latest_tick("0 6 * * 1", at("2026-11-23T04:00:00"), "Africa/Kampala")
    assert tick.astimezone(UTC) == at("2026-11-23T03:00:00")
    assert tick.utcoffset() == timedelta(hours=3)


@pytest.mark.parametrize(
    "expression, fragment",
    [
        ("0 6 * *", "exactly five fields, got 4"),
        ("0 0 6 * * 1", "exactly five fields, got 6"),
        ("@weekly", "exactly five fields, got 1"),
        ("61 6 * * 1", "out of range"),
        ("every monday", "five fields"),
        ("a b c d e", "not acceptable"),
        ("", "got 0"),
    ],
)
def test_invalid_cron_has_a_plain_message(expression, fragment):
    with pytest.raises(InvalidCron, match=fragment):
        validate_cron(expression)


def test_cron_that_never_matches_is_invalid():
    with pytest.raises(InvalidCron, match="never matches"):
        latest_tick("0 6 30 2 *", at("2026-11-23T06:00:00"), "UTC")


# ---- the plan ----------------------------------------------------------------------------


def test_due_once_then_not_due_with_the_new_cursor():
    cursor = {"3": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00"))}
    first = plan([Setup(3)], cursor)
    assert [(d.setup_id, d.tick_iso, d.catch_up) for d in first.due] == [(3, "2026-11-23T06:00:00+00:00", False)]
    assert first.due[0].run_key == "chap-cron:3:2026-11-23T06:00:00+00:00"
    again = plan([Setup(3)], first.cursor, now="2026-11-23T06:05:00")
    assert again.due == [] and again.not_due == [3]


def test_not_due_between_ticks():
    cursor = {"3": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00"))}
    result = plan([Setup(3)], cursor, now="2026-11-22T23:00:00")
    assert result.due == [] and result.not_due == [3]
    assert "not due: 3" in result.summary()


def test_restart_with_the_same_cursor_gives_the_same_run_key():
    cursor = {"3": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00"))}
    assert [d.run_key for d in plan([Setup(3)], cursor).due] == [d.run_key for d in plan([Setup(3)], cursor).due]


def test_downtime_collapses_missed_ticks_into_one_catch_up():
    cursor = {"3": CursorEntry("0 6 * * *", at("2026-11-01T06:00:00"))}
    result = plan([Setup(3, "0 6 * * *")], cursor, now="2026-11-23T10:00:00")
    assert len(result.due) == 1
    assert result.due[0].tick == at("2026-11-23T06:00:00") and result.due[0].catch_up
    assert result.cursor["3"].last_tick == at("2026-11-23T06:00:00")


def test_new_setup_does_not_fire_for_an_old_tick_but_does_for_a_fresh_one():
    old = plan([Setup(3)], now="2026-11-23T09:00:00")
    assert old.due == [] and old.first_seen == [3] and old.cursor["3"].last_tick == at("2026-11-23T06:00:00")
    fresh = plan([Setup(3)], now="2026-11-23T06:01:00")  # within the grace
    assert [d.setup_id for d in fresh.due] == [3]


def test_changed_cron_counts_as_new():
    cursor = {"3": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00"))}
    result = plan([Setup(3, "0 5 * * *")], cursor, now="2026-11-23T09:00:00")
    assert result.due == [] and result.first_seen == [3]


def test_disabled_or_unscheduled_setups_never_fire_and_are_forgotten():
    cursor = {"3": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00"))}
    result = plan([Setup(3, schedule_enabled=False), Setup(4, None), Setup(5, "  ")], cursor)
    assert result.due == [] and result.disabled == [3, 4, 5] and result.cursor == {}
    assert "scheduleEnabled false or no cron" in result.summary()


def test_bad_cron_is_skipped_reported_once_and_others_still_fire():
    cursor = {"4": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00"))}
    result = plan([Setup(3, "0 6 * *"), Setup(4)], cursor)
    assert [d.setup_id for d in result.due] == [4]
    assert [b.setup_id for b in result.bad] == [3] and [b.setup_id for b in result.newly_bad] == [3]
    assert "schedule '0 6 * *' skipped: a cron expression needs exactly five fields" in result.bad[0].message
    again = plan([Setup(3, "0 6 * *"), Setup(4)], result.cursor)
    assert [b.setup_id for b in again.bad] == [3] and again.newly_bad == []
    repaired = plan([Setup(3, "0 6 * * 1")], again.cursor, now="2026-11-23T09:00:00")
    assert repaired.bad == [] and repaired.first_seen == [3]


def test_bad_time_zone_is_a_bad_schedule_not_a_crash():
    result = plan([Setup(3)], tz="Mars/Olympus")
    assert result.due == [] and "unknown time zone 'Mars/Olympus'" in result.bad[0].message


def test_cursor_round_trip_and_garbage():
    entries = {
        "10": CursorEntry("0 6 * * 1", at("2026-11-16T06:00:00")),
        "3": CursorEntry("bad", None, "a cron expression needs exactly five fields, got 1"),
    }
    text = dump_cursor(entries)
    assert parse_cursor(text) == entries
    assert list(json.loads(text)["setups"]) == ["3", "10"]  # numeric order, stable across ticks
    assert parse_cursor(None) == {} and parse_cursor("not json") == {} and parse_cursor("[1]") == {}


# ---- discovery ---------------------------------------------------------------------------


def test_diff_partitions():
    diff = diff_partitions(["1", "2", "10"], ["2", "10", "11", "3"])
    assert diff.add == ["3", "11"] and diff.remove == ["1"] and diff.keep == ["2", "10"] and diff.changed
    assert not diff_partitions(["1"], ["1"]).changed


# ---- overview ----------------------------------------------------------------------------


def test_overview_markdown_has_one_row_per_model():
    rows = [
        OverviewRow("10", "Malaria", "succeeded", at("2026-11-23T06:03:00"), prediction_id="42", run_id="abcdef0123456789"),
        OverviewRow("3", "Dengue | weekly", "failed", at("2026-11-23T06:01:00"), "fetch_analytics", "DHIS2 down", run_id="r1"),
        OverviewRow("4"),
        OverviewRow("2", "Old", "succeeded", at("2026-10-01T06:00:00"), deleted=True),
    ]
    text = render_overview(rows, location="sierra_leone", dhis2_url="http://dhis2.test", generated_at=at("2026-11-23T07:00:00"))
    lines = text.splitlines()
    assert lines[0] == "# chap predictions overview (sierra_leone — `http://dhis2.test`)"
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert table == [
        "| 3 — Dengue \\| weekly | **FAILED** | 2026-11-23 06:01 | fetch_analytics |  | [r1](/runs/r1) | never |",
        "| 4 | never run |  |  |  |  |  |",
        "| 10 — Malaria | succeeded | 2026-11-23 06:03 |  | 42 | [abcdef01](/runs/abcdef0123456789) "
        "| 2026-11-23 06:03, prediction 42 |",
        "| 2 — Old (deleted in chap) | succeeded | 2026-10-01 06:00 |  |  |  | 2026-10-01 06:00 |",
    ]
    assert "- **3** (Dengue \\| weekly): DHIS2 down" in text
    assert "3 configured models: 1 failed, 1 never run, 1 succeeded; 1 deleted in chap (history kept)." in text


def test_overview_without_models():
    assert "No configured model is known yet" in render_overview([])
