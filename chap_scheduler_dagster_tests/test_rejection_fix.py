"""chap's 400 rejection: the computed window, and its advice followed in the sandbox gets past the failure."""

from __future__ import annotations

import re
from datetime import date

import dagster as dg
import pytest
import yaml

from chap_scheduler_dagster.core.chap_models import Rejection
from chap_scheduler_dagster.core.periods import parse_period
from chap_scheduler_dagster.core.rejection_fix import window_fix
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox import periods as SP

TODAY = date(2026, 11, 30)


def rejection(rows: dict[str, list[str]]) -> Rejection:
    return Rejection.model_validate({
        "message": "All regions rejected due to missing values", "imported_count": 0,
        "rejected": [{"reason": "Missing value for some/all time periods", "orgUnit": ou, "featureName": "rainfall",
                      "timePeriods": periods} for ou, periods in rows.items()],
    })


def test_an_early_hole_does_not_pull_the_end_before_two_years():
    start, end = parse_period("202101"), parse_period("202608")
    # Every org unit misses 202604; OU_A also 202103 (so "before the first gap" would leave 2 months).
    fix = window_fix(rejection({"OU_A": ["202103", "202604"], "OU_B": ["202604"], "OU_C": ["202604"]}),
                     start, end, today=TODAY, names={"OU_A": "Bo"})
    assert fix.end == parse_period("202603") and (fix.org_units_kept, fix.org_units_rejected) == (2, 3)
    assert 'end_mode: fixed\n      end_date: "2026-03-01"' in fix.text
    assert "end_period_offset: 8" in fix.text  # 202611 - 8 = 202603
    assert "chap will still drop the org units with earlier gaps: Bo (OU_A)" in fix.text
    assert "62 periods" not in fix.text and "63 periods from 202101" in fix.text


def test_weekly_padded_ids_and_the_two_year_rule():
    start, end = parse_period("2024W1"), parse_period("2026W40")
    fix = window_fix(rejection({"OU_A": ["2026W05"]}), start, end, today=TODAY)
    assert fix.end == parse_period("2026W4") and fix.min_periods == 105
    # A gap 100 weeks after the start: ending before it leaves less than two whole years.
    fix = window_fix(rejection({"OU_A": ["2025W48"]}), start, end, today=TODAY)
    assert fix.end is None and "keeps 105 periods from the start 2024W1" in fix.text
    assert "Import the missing values into DHIS2" in fix.text and "end_mode" not in fix.text


def test_the_templates_minimum_wins_when_given():
    start, end = parse_period("202101"), parse_period("202608")
    fix = window_fix(rejection({"OU_A": ["202204"]}), start, end, today=TODAY, min_periods=12)
    assert fix.end == parse_period("202203") and "the model's minimum: at least 12" in fix.text


def _run(instance, sb, config: dict):
    instance.add_dynamic_partitions(configured_models_partitions.name, ["3"])
    result = dhis2_chap_prediction.execute_in_process(
        partition_key="3", instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
        run_config=config, raise_on_error=False,
    )
    [record] = instance.fetch_materializations(report_asset_key, limit=1).records
    assert record.run_id == result.run_id
    return result, {k: v.value for k, v in record.asset_materialization.metadata.items()}


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def test_the_advice_followed_gets_past_the_rejection_in_the_sandbox(instance):
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb:
        failed, meta = _run(instance, sb, {"ops": {"probe_covariates": {"config": {}}}})
        assert not failed.success and meta["failed_step"] == "submit_prediction"
        text = meta["report"]
        assert "All regions rejected due to missing values" in text
        # The exact launchpad YAML, in the report's "What to do", pasted as is.
        [snippet] = re.findall(r"```yaml\n(.*?)\n```", meta["hint"], re.S)
        config = yaml.safe_load(snippet)
        assert config["ops"]["probe_covariates"]["config"]["end_mode"] == "fixed"
        assert "```yaml" in text
        # The rejected org units are named (DHIS2 gave the names with the org units).
        some_ou = sb.world.ou_ids[0]
        assert f"{sb.world.ou_name(some_ou)} ({some_ou})" in text or "… (" in text

        followed, meta2 = _run(instance, sb, config)
        assert followed.success, meta2["report"]
        assert meta2["status"] in ("succeeded", "succeeded with warnings") and meta2["prediction_id"] != ""
        end = config["ops"]["probe_covariates"]["config"]["end_date"]
        assert meta2["window"].endswith(".." + end[:4] + end[5:7])  # monthly: the period covering end_date


def _run_model(instance, sb, key: str, config: dict):
    instance.add_dynamic_partitions(configured_models_partitions.name, [key])
    result = dhis2_chap_prediction.execute_in_process(
        partition_key=key, instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
        run_config=config, raise_on_error=False,
    )
    [record] = instance.fetch_materializations(report_asset_key, limit=1).records
    assert record.run_id == result.run_id
    return result, {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_too_little_history_names_the_start_that_works_and_following_it_succeeds(instance):
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb:
        monthly = sb.chap.setups[1]
        # The sandbox's last complete month, by the sandbox's period arithmetic (not the package's).
        kind, first = SP.parse(monthly["startPeriod"])
        last = first + 59
        # A configured model with 20 months of history: chap accepts the POST, then its job fails.
        sb.chap.add_setup(monthly | {"id": 9, "name": "Short history", "startPeriod": SP.format_id(kind, last - 19)})
        config = {"ops": {"probe_covariates": {"config": {}}}}
        failed, meta = _run_model(instance, sb, "9", config)
        assert not failed.success and meta["failed_step"] == "await_prediction"
        assert "Training data must cover at least two whole years" in meta["error"]
        [start] = re.findall(r"Move the configured model's start period in chap to (\w+) or earlier", meta["hint"])
        assert "**What to do:** The window" in meta["report"]

        sb.chap.add_setup(sb.chap.setups[9] | {"startPeriod": start})  # the advice, followed
        passed, meta2 = _run_model(instance, sb, "9", config)
        assert passed.success, meta2["report"]
        assert meta2["status"] in ("succeeded", "succeeded with warnings") and meta2["input_periods"] == 25


def test_known_job_failures_map_to_their_fix():
    from chap_scheduler_dagster.core.job_failures import job_failure_hint

    start, end = parse_period("2025W10"), parse_period("2026W40")
    hint = job_failure_hint("chap job j ended FAILURE: Training data must cover at least two whole years",
                            start=start, end=end, end_mode="fixed")
    assert hint is not None and "has 83 periods" in hint and "to 2024W40 or earlier" in hint
    assert "end_mode: calculated" in hint  # a fixed end may leave newer data out
    assert "end_mode" not in (job_failure_hint("Training data must cover at least two whole years",
                                               start=start, end=end, end_mode="calculated") or "")
    assert "geometry" in (job_failure_hint("No data in dataset DataSet({})", start=None, end=None, end_mode=None) or "")
    assert job_failure_hint("model crashed", start=start, end=end, end_mode=None) is None
