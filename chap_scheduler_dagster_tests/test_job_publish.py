"""publish_forecasts in the real job against the sandbox over loopback HTTP: publishing, faults, republishing."""

import dagster as dg
import httpx
import pytest

from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.publishing import (
    chap_forecast_key,
    dhis2_forecast_values_key,
    publish_chap_forecast,
)
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox import periods as P
from dhis2_sandbox.world import DE_PRED_HIGH, DE_PRED_MEDIAN, DE_PRED_SHORT, ROOT_OU

WINDOW = {"end_mode": "offset", "end_period_offset": 3}
RUN_POST = "/api/routes/chap/run/v1/crud/prediction-setups/{}/run"


@pytest.fixture
def sb():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sandbox:
        yield sandbox


def resources(sb):
    return {"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")}


def run(sb, instance, key, publish_config=None, window=WINDOW, force=False):
    instance.add_dynamic_partitions(configured_models_partitions.name, [key])
    ops = {"probe_covariates": {"config": window}}
    if force:  # predict even when the inputs are unchanged since the last prediction
        ops["submit_prediction"] = {"config": {"force": True}}
    if publish_config is not None:
        ops["publish_forecasts"] = {"config": publish_config}
    result = dhis2_chap_prediction.execute_in_process(
        partition_key=key, instance=instance, resources=resources(sb), run_config={"ops": ops}, raise_on_error=False
    )
    return result, latest(instance, report_asset_key, key)


def latest(instance, asset_key, key):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    meta = records[0].asset_materialization.metadata
    return {k: v.value for k, v in meta.items()}


def chap_posts(sb, key):
    return [p for m, p, _ in sb.requests if m == "POST" and p.startswith(RUN_POST.format(key))]


def dv_posts(sb, dry_run):
    flag = f"dryRun={'true' if dry_run else 'false'}"
    return [p for m, p, _ in sb.requests if m == "POST" and p.startswith("/api/dataValueSets") and flag in p]


def prediction_entries(sb, prediction_id, quantile):
    r = httpx.get(f"{sb.base_url}/__sandbox/chap/v1/analytics/prediction-entry/{prediction_id}",
                  params={"quantiles": str(quantile)})
    return r.json()


def test_a_prediction_lands_in_dhis2_equal_to_chaps_values_and_twice_writes_nothing_new(sb, instance):
    result, meta = run(sb, instance, "1")
    assert result.success, meta["report"]
    pid = meta["prediction_id"]
    assert meta["publish_outcome"] == "published" and meta["publish_imported"] == meta["publish_values"] > 0
    # Read back from DHIS2: every target cell equals chap's prediction-entry value.
    for q, de in ((0.5, DE_PRED_MEDIAN), (0.9, DE_PRED_HIGH)):
        rows = prediction_entries(sb, pid, q)
        periods = sorted({P.format_id(*P.parse(r["period"])) for r in rows})
        stored = httpx.get(f"{sb.base_url}/api/dataValueSets", auth=sb.auth, params=[
            ("dataElement", de), *[("period", p) for p in periods], ("orgUnit", ROOT_OU), ("children", "true")],
        ).json()["dataValues"]
        got = {(v["orgUnit"], v["period"]): float(v["value"]) for v in stored}
        want = {(r["orgUnit"], P.format_id(*P.parse(r["period"]))): r["value"] for r in rows}
        assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-6 for k in want)
    assert "## DHIS2 import" in meta["report"] and "Sandbox predicted cases (median)" in meta["report"]
    forecast = latest(instance, chap_forecast_key, "1")
    assert forecast["prediction_id"] == pid and [c.name for c in forecast["forecast"].schema.columns] == [
        "period", "q10", "median", "q90"]
    assert len(forecast["forecast"].records) == 3
    values = latest(instance, dhis2_forecast_values_key, "1")
    assert values["imported"] == meta["publish_imported"] and values["prediction_id"] == pid

    result, skipped = run(sb, instance, "1")  # unchanged inputs: no prediction, nothing published again
    assert result.success and skipped["status"] == "skipped" and "publish_outcome" not in skipped
    assert len(chap_posts(sb, "1")) == 1
    result, meta2 = run(sb, instance, "1", force=True)  # same data: chap gives the same numbers
    assert result.success
    assert meta2["publish_imported"] == 0 and meta2["publish_updated"] == 0
    assert meta2["publish_ignored"] == meta["publish_values"]
    assert "Nothing new" in meta2["report"]
    assert len(chap_posts(sb, "1")) == 2  # one POST to chap per run


def test_weekly_labels_write_unpadded_dhis2_week_ids(sb, instance):
    result, meta = run(sb, instance, "2")
    assert result.success, meta["report"]
    keys = [k for k in sb.data_values.values if k[0].startswith("dePredWk")]
    assert keys and all("W" in pe and not pe.split("W")[1].startswith("0") for _, pe, _ in keys)
    assert "quantile_low (quantile 0.1)" in meta["report"]


def test_without_targets_nothing_is_published_and_the_report_says_so(sb, instance):
    result, meta = run(sb, instance, "4")
    assert result.success
    assert "nothing published — no quantile targets in chap for this configured model" in meta["report"]
    assert not dv_posts(sb, True) and latest(instance, dhis2_forecast_values_key, "4") is None
    assert latest(instance, chap_forecast_key, "4")["prediction_id"] == meta["prediction_id"]


def test_dry_run_mode_from_the_launchpad_writes_nothing(sb, instance):
    result, meta = run(sb, instance, "1", {"mode": "dry-run"})
    assert result.success
    assert meta["publish_outcome"] == "dry run" and dv_posts(sb, True) and not dv_posts(sb, False)
    assert not sb.data_values.values


def test_publish_off_from_the_setting(sb, instance, monkeypatch):
    from chap_scheduler_dagster.settings import get_settings

    monkeypatch.setenv("CHAP_SCHEDULER_PUBLISH", "off")
    get_settings.cache_clear()
    result, meta = run(sb, instance, "1")
    assert result.success and meta["publish_outcome"] == "off" and not dv_posts(sb, True)


def failed_publish(sb, instance, key="1", window=WINDOW):
    result, meta = run(sb, instance, key, window=window)
    assert not result.success
    assert meta["failed_step"] == "publish_forecasts" and meta["status"] == "failed"
    assert isinstance(meta["prediction_id"], int)
    assert len(chap_posts(sb, key)) == 1  # never a second POST to chap
    return meta


def test_dhis2_5xx_during_publishing_fails_and_republishing_completes_without_chap(sb, instance):
    sb.faults.datavalues_fail_next = 1
    meta = failed_publish(sb, instance)
    assert "HTTP 503" in meta["error"] and not sb.data_values.values
    assert "publish_chap_forecast" in meta["report"] and f"prediction_id: {meta['prediction_id']}" in meta["report"]
    # Republish the same prediction: no POST to chap, values written.
    result = publish_chap_forecast.execute_in_process(
        partition_key="1", instance=instance, resources=resources(sb), raise_on_error=False,
        run_config={"ops": {"republish_forecast": {"config": {"prediction_id": meta["prediction_id"]}}}},
    )
    again = latest(instance, report_asset_key, "1")
    assert result.success, again["report"]
    assert again["publish_imported"] > 0 and again["prediction_id"] == meta["prediction_id"]
    assert len(chap_posts(sb, "1")) == 1


def test_a_401_for_the_write_fails_after_a_clean_dry_run(sb, instance):
    sb.faults.datavalues_write_status = 401
    meta = failed_publish(sb, instance)
    assert "DHIS2 authentication failed" in meta["error"] and "district" not in meta["report"]
    assert dv_posts(sb, True) and not sb.data_values.values


def test_conflicts_fail_with_the_codes_and_write_nothing(sb, instance):
    # Cases and rainfall only (both up to last month), so the forecast reaches two months ahead,
    # past the data set's single open future period.
    sb.chap.add_setup(id=9, name="short", periodType="month",
                      quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_SHORT}])
    meta = failed_publish(sb, instance, "9", window={"end_mode": "offset", "end_period_offset": 1})
    text = meta["report"]
    assert "E7641" in meta["error"] and "nothing was written" in meta["error"]
    assert "openFuturePeriods 1, below the horizon of 3" in text  # the preflight warned
    assert "**E7641** ×" in text and "*fix:*" in text
    assert not dv_posts(sb, False) and not sb.data_values.values


def test_org_units_outside_the_capture_hierarchy_are_named(sb, instance):
    sb.capture_roots = ["SomewhereEl"]
    meta = failed_publish(sb, instance)
    assert "outside the DHIS2 user's data capture org units" in meta["error"]
    assert sb.world.ou_ids[0] in meta["report"] and not dv_posts(sb, True)


def test_a_missing_target_data_element_fails_before_writing(sb, instance):
    sb.chap.add_setup(id=1, **{k: v for k, v in sb.chap.setups[1].items() if k not in ("id", "quantileTargets")},
                      quantileTargets={"median": DE_PRED_MEDIAN, "quantile_high": "deNotThere"})
    meta = failed_publish(sb, instance)
    assert "deNotThere does not exist or this DHIS2 user cannot read it" in meta["error"]
    assert not dv_posts(sb, True)


def test_a_prediction_without_values_fails_the_publish(sb, instance):
    sb.faults.chap_empty_prediction = True
    meta = failed_publish(sb, instance)
    assert f"prediction {meta['prediction_id']} has no values" in meta["error"]


def with_outbreak_target(sb):
    sb.chap.add_setup(id=1, **{k: v for k, v in sb.chap.setups[1].items() if k not in ("id", "quantileTargets")},
                      quantileTargets={"median": DE_PRED_MEDIAN, "outbreak_indicator": DE_PRED_HIGH})


def test_the_outbreak_indicator_is_1_where_the_075_forecast_is_above_chaps_threshold(sb, instance):
    with_outbreak_target(sb)
    result, meta = run(sb, instance, "1")
    assert result.success, meta["report"]
    pid = meta["prediction_id"]
    flags = {(ou, pe): v for (de, pe, ou), v in sb.data_values.values.items() if de == DE_PRED_HIGH}
    forecast = {(r["orgUnit"], P.format_id(*P.parse(r["period"]))): r["value"]
                for r in prediction_entries(sb, pid, 0.75)}
    periods = sorted({pe for _, pe in forecast})
    answer = httpx.post(f"{sb.base_url}/__sandbox/chap/v1/analytics/thresholds",
                        json={"datasetId": 100 + pid, "periodIds": periods, "params": {"type": "seasonal"}}).json()
    threshold = {(e["location"], e["period"]): e["values"][0] for e in answer["entries"]}
    assert flags.keys() == forecast.keys()
    assert flags == {k: ("1" if forecast[k] > threshold[k] else "0") for k in forecast}
    assert set(flags.values()) == {"0", "1"}
    assert "1/0 outbreak indicator" in meta["report"] and not meta["publish_warnings"]


def test_chaps_threshold_endpoint_failing_warns_and_publishes_the_quantiles(sb, instance):
    with_outbreak_target(sb)
    sb.faults.chap_thresholds_fail = True
    result, meta = run(sb, instance, "1")
    assert result.success, meta["report"]
    assert "outbreak_indicator not published: chap gave no threshold" in meta["report"]
    assert "no complete year" in meta["report"]
    assert meta["publish_warnings"] >= 1 and meta["publish_imported"] > 0
    assert {k[0] for k in sb.data_values.values} == {DE_PRED_MEDIAN}
    assert len(chap_posts(sb, "1")) == 1


def test_stale_cells_are_listed_and_deleted_only_when_asked(sb, instance, monkeypatch):
    from chap_scheduler_dagster.settings import get_settings

    stale_ou = sb.world.no_geometry_ou  # in the setup, never in a forecast (chap cannot use it)
    months = [P.format_id("month", sb.world.last_month + k) for k in range(-6, 7)]
    for pe in months:
        sb.data_values.values[(DE_PRED_MEDIAN, pe, stale_ou)] = "5"
    result, meta = run(sb, instance, "1")
    assert result.success and meta["publish_stale_cells"] == 3
    assert f"{DE_PRED_MEDIAN} " in meta["report"] and stale_ou in meta["report"]
    assert "CHAP_SCHEDULER_PUBLISH_DELETE_STALE" in meta["report"]
    assert sum(1 for k in sb.data_values.values if k[2] == stale_ou) == len(months)

    monkeypatch.setenv("CHAP_SCHEDULER_PUBLISH_DELETE_STALE", "true")
    get_settings.cache_clear()
    result, meta = run(sb, instance, "1", force=True)  # same inputs: force, or the run is skipped as unchanged
    assert result.success and "Stale cells deleted:** imported 0, updated 0, ignored 0, deleted 3" in meta["report"]
    assert sum(1 for k in sb.data_values.values if k[2] == stale_ou) == len(months) - 3  # exactly those cells
    deletes = [p for m, p, _ in sb.requests if m == "POST" and "importStrategy=DELETE" in p]
    assert [("dryRun=true" in p) for p in deletes] == [True, False]


def test_analytics_refresh_is_started_when_asked(sb, instance, monkeypatch):
    from chap_scheduler_dagster.settings import get_settings

    monkeypatch.setenv("CHAP_SCHEDULER_REFRESH_ANALYTICS", "true")
    get_settings.cache_clear()
    result, meta = run(sb, instance, "1")
    assert result.success and sb.analytics_runs == [{"lastYears": "1", "skipResourceTables": "true"}]
    assert "analytics table update was started" in meta["report"]


def republish(sb, instance, key, prediction_id):
    instance.add_dynamic_partitions(configured_models_partitions.name, [key])
    result = publish_chap_forecast.execute_in_process(
        partition_key=key, instance=instance, resources=resources(sb), raise_on_error=False,
        run_config={"ops": {"republish_forecast": {"config": {"prediction_id": prediction_id}}}},
    )
    return result, latest(instance, report_asset_key, key)


def test_republishing_fills_the_prediction_section_and_refuses_another_models_prediction(sb, instance):
    with_outbreak_target(sb)
    result, meta = run(sb, instance, "1")
    assert result.success
    pid = meta["prediction_id"]
    sb.data_values.values.clear()
    result, again = republish(sb, instance, "1", pid)
    assert result.success, again["report"]
    assert "Predicted periods:" in again["report"] and again["prediction_values"] == meta["prediction_values"]
    assert again["publish_values"] == meta["publish_values"]  # the outbreak indicator too: periods are known
    assert len(chap_posts(sb, "1")) == 1

    result, wrong = republish(sb, instance, "2", pid)
    assert not result.success and wrong["failed_step"] == "republish_forecast"
    assert f"prediction {pid} belongs to configured model 1, not 2" in wrong["error"]
    result, missing = republish(sb, instance, "1", 999)
    assert not result.success and "chap has no prediction 999" in missing["error"]


def test_chap_forecast_counts_the_org_units_the_forecast_covers(sb, instance):
    result, meta = run(sb, instance, "1")
    forecast = latest(instance, chap_forecast_key, "1")
    covered = {ou for (_, _, ou) in sb.data_values.values}
    assert forecast["org_units"] == len(covered) == 9  # 12 minus one without geometry, minus two chap dropped
    assert forecast["org_units_dropped_by_chap"] == 2
    # The inputs fingerprint (issue #12) is the forecast's data version.
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=chap_forecast_key, asset_partitions=["1"]), limit=1
    ).records[0]
    assert meta["fingerprint"].startswith("sha256:")
    assert record.event_log_entry.tags["dagster/data_version"] == meta["fingerprint"]
