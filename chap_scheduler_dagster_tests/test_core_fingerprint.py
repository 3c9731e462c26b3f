"""The inputs fingerprint and the double-run rule: plain functions, no Dagster, no I/O beyond a temp file."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from chap_scheduler_dagster.core.chap_models import ChapApi, PredictionInfo
from chap_scheduler_dagster.core.double_runs import (
    chap_cron,
    chap_fires_at,
    model_tick,
    plan_operator_tick,
)
from chap_scheduler_dagster.core.fingerprint import (
    LastPrediction,
    prediction_fingerprint,
    skip_reason,
    still_in_chap,
    unchanged_since,
)
from chap_scheduler_dagster.core.periods import parse_period
from chap_scheduler_dagster.core.prediction_body import PredictionBodyWriter
from chap_scheduler_dagster.core.run_window import InputWindow

from .core_fixtures import make_setup

HEADERS = [{"name": "dx"}, {"name": "pe"}, {"name": "ou"}, {"name": "value"}]
SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}


def window(start: str = "202401", end: str = "202403") -> InputWindow:
    s, e = parse_period(start), parse_period(end)
    return InputWindow(start=s, end=e, periods=(s, e), end_how="fixed")


def fingerprint(setup=None, win=None, n_periods=3, api=ChapApi.PREDICTION_SETUPS, body="b" * 64) -> str:
    return prediction_fingerprint(setup or make_setup(), win or window(), n_periods=n_periods, api=api,
                                  body_sha256=body)


def test_body_hash_is_the_hash_of_the_bytes_on_disk(tmp_path):
    setup = make_setup(org_units=["OU_A"])
    with PredictionBodyWriter(setup, name="x", n_periods=3, api=ChapApi.PREDICTION_SETUPS,
                              directory=str(tmp_path)) as writer:
        writer.add_features([{"id": "OU_A", "geometry": SQUARE}])
        writer.add_analytics({"headers": HEADERS, "rows": [["DE_RAIN", "202401", "OU_A", "1.5"]]})
        writer.finish()
    on_disk = writer.path.read_bytes()
    # Everything after the name (which carries the Dagster run id) is hashed, exactly as on disk.
    head = b'{"name":"x",'
    assert on_disk.startswith(head)
    assert writer.body_sha256 == hashlib.sha256(on_disk[len(head):]).hexdigest()
    writer.path.unlink()


def test_the_prediction_name_does_not_change_the_body_hash(tmp_path):
    setup = make_setup(org_units=["OU_A"])
    hashes = []
    for name in ("run A [dagster run 1]", "run A [dagster run 2]"):
        with PredictionBodyWriter(setup, name=name, n_periods=3, api=ChapApi.PREDICTION_SETUPS,
                                  directory=str(tmp_path)) as writer:
            writer.add_features([{"id": "OU_A", "geometry": SQUARE}])
            writer.add_analytics({"headers": HEADERS, "rows": [["DE_RAIN", "202401", "OU_A", "1.5"]]})
            writer.finish()
        json.loads(writer.path.read_bytes())  # still one valid JSON document
        hashes.append(writer.body_sha256)
        writer.path.unlink()
    assert hashes[0] == hashes[1]


def test_fingerprint_is_deterministic_and_covers_each_input():
    base = fingerprint()
    assert base == fingerprint() and base.startswith("sha256:")
    changed = [
        fingerprint(body="c" * 64),  # one value in DHIS2 changed the body
        fingerprint(win=window(end="202404")),
        fingerprint(n_periods=4),
        fingerprint(api=ChapApi.LEGACY),
        fingerprint(setup=make_setup(setup_id=4)),
        fingerprint(setup=make_setup(covariates={"DE_RAIN": "rainfall", "DE_CASES": "cases"})),  # mapping
        fingerprint(setup=make_setup(org_units=["OU_A"])),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    # The order chap lists covariates in does not matter; the mapping does.
    reordered = make_setup(covariates={"DE_CASES": "disease_cases", "DE_RAIN": "rainfall"})
    assert fingerprint(setup=reordered) == base


def test_unchanged_since():
    last = LastPrediction("sha256:aa", "12", "run-1")
    assert unchanged_since("sha256:aa", last) is last
    assert unchanged_since("sha256:bb", last) is None
    assert unchanged_since("sha256:aa", None) is None
    assert unchanged_since(None, last) is None
    assert unchanged_since("sha256:aa", LastPrediction("", "12", "run-1")) is None
    assert skip_reason(last) == "inputs unchanged since prediction 12 (run run-1)"


def test_still_in_chap_needs_the_id_and_the_run_that_made_it():
    last = LastPrediction("sha256:aa", "12", "run-1")
    assert still_in_chap(last, PredictionInfo(id=12, name="Monthly (naive) 202401-202412 [dagster run run-1]"))
    assert not still_in_chap(last, None), "deleted in chap"
    assert not still_in_chap(last, PredictionInfo(id=12, name="Monthly 202401-202412 [dagster run run-2]")), \
        "a new chap database: id 12 is another run's prediction"
    assert still_in_chap(last, PredictionInfo(id=12)), "no name to compare: the id answers"
    assert still_in_chap(LastPrediction("sha256:aa", "12", ""), PredictionInfo(id=12, name="made elsewhere"))


# ---- one run per model per minute ------------------------------------------------------------

def setup(i: int, cron: str | None, enabled: bool = True):
    return SimpleNamespace(id=i, name=f"s{i}", schedule_cron_expression=cron, schedule_enabled=enabled)


MONDAY_6 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
SETUPS = [setup(1, "0 6 * * 1"), setup(2, None, False), setup(3, "0 6 * * *", enabled=False),
          setup(4, "not a cron"), setup(5, "30 6 * * *")]


def test_model_tick_is_per_minute():
    assert model_tick("3", MONDAY_6) == "3@2026-11-23T06:00Z"
    assert model_tick("3", MONDAY_6.replace(second=41)) == model_tick("3", MONDAY_6)
    assert model_tick("3", MONDAY_6, "sierra_leone") == "sierra_leone/3@2026-11-23T06:00Z"  # ids repeat per DHIS2


def test_chap_cron_only_when_usable():
    assert [chap_cron(s, "UTC") for s in SETUPS] == ["0 6 * * 1", None, None, None, "30 6 * * *"]
    assert chap_cron(SETUPS[0], "Mars/Olympus") is None
    assert chap_fires_at("0 6 * * 1", MONDAY_6.replace(second=30), "UTC")
    assert not chap_fires_at("0 6 * * 1", MONDAY_6, "Africa/Kampala")  # 09:00 there


def test_operator_schedule_covers_only_unscheduled_models_by_default():
    plan = plan_operator_tick(["1", "2", "3", "4", "5"], SETUPS, tick=MONDAY_6, tz="UTC", scope="unscheduled")
    assert plan.run == ["2", "3", "4"]  # no chap cron, disabled, bad cron
    assert plan.left_to_chap == ["1", "5"]


def test_operator_schedule_all_yields_only_the_same_minute_to_chap():
    plan = plan_operator_tick(["1", "2", "5"], SETUPS, tick=MONDAY_6, tz="UTC", scope="all")
    assert plan.run == ["2", "5"] and plan.left_to_chap == ["1"]
    later = plan_operator_tick(["1", "2", "5"], SETUPS, tick=MONDAY_6.replace(hour=7), tz="UTC", scope="all")
    assert later.run == ["1", "2", "5"]


def test_operator_schedule_skips_models_already_run_this_minute_and_falls_back_when_chap_unreadable():
    plan = plan_operator_tick(["1", "2", "10"], None, tick=MONDAY_6, tz="UTC", scope="unscheduled",
                              already_run=["1"], unreadable="chap is down")
    assert plan.run == ["2", "10"] and plan.already_run == ["1"]
    assert "could not be read" in plan.summary() and "chap is down" in plan.summary()
    with pytest.raises(ValueError, match="scope"):
        plan_operator_tick([], [], tick=MONDAY_6, tz="UTC", scope="some")  # type: ignore[arg-type]
