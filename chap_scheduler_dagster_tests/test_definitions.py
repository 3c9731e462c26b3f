"""The code location loads, and the names other people depend on (DESIGN.md) are what they should be."""

import json
import os
import subprocess
import sys

import dagster as dg

from chap_scheduler_dagster.definitions import defs


def test_definitions_load_and_names_hold(monkeypatch):
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("dhis2_chap_prediction")
    deps = {n.node_name: [d.node_name for inp in n.input_dep_snaps for d in inp.upstream_output_snaps]
            for n in job.get_job_snapshot().dep_structure_snapshot.node_invocation_snaps}
    assert deps == {"probe_covariates": [], "fetch_analytics": ["probe_covariates"],
                    "submit_prediction": ["fetch_analytics"], "await_prediction": ["submit_prediction"],
                    "publish_forecasts": ["await_prediction"]}
    assert isinstance(job.partitions_def, dg.DynamicPartitionsDefinition)
    assert job.partitions_def.name == "chap_configured_models"
    assert job.tags["chap_scheduler/dhis2"] == "default"
    assert job.tags["dagster/max_runtime"] == "5400"  # 3600 s chap wait + 30 min
    assert {s.key for s in defs.resolve_all_asset_specs()} >= {
        dg.AssetKey("dhis2_chap_prediction_report"), dg.AssetKey("chap_predictions_overview")}
    assert defs.resolve_sensor_def("configured_models_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("chap_schedule_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("dhis2_chap_prediction_schedule").default_status == dg.DefaultScheduleStatus.STOPPED


def test_window_config_uses_the_literal_spelling_in_the_launchpad(monkeypatch):
    for name in ("DHIS2_BASE_URL", "DHIS2_USERNAME", "DHIS2_PASSWORD"):
        monkeypatch.setenv(name, "x")
    job = defs.resolve_job_def("dhis2_chap_prediction")
    dg.validate_run_config(job, {"ops": {"probe_covariates": {"config": {"end_mode": "offset", "end_period_offset": 2}}}})
    try:
        dg.validate_run_config(job, {"ops": {"probe_covariates": {"config": {"end_mode": "OFFSET"}}}})
    except dg.DagsterInvalidConfigError as exc:
        assert "end_mode" in str(exc)
    else:
        raise AssertionError("an end_mode outside calculated/fixed/offset must be refused at launch")


def test_dhis2_resource_is_bound_to_env_var_names_only(monkeypatch):
    from chap_scheduler_dagster.defs.resources import Dhis2Resource, dhis2_resource_from_env

    monkeypatch.delenv("DHIS2_TOKEN", raising=False)
    resource = dhis2_resource_from_env()
    assert isinstance(resource, Dhis2Resource)
    fields = resource._get_non_default_public_field_values()  # what the UI's resource page lists
    assert all(isinstance(v, dg.EnvVar) for v in fields.values())
    assert {k: v.env_var_name for k, v in fields.items()} == {
        "base_url": "DHIS2_BASE_URL", "username": "DHIS2_USERNAME", "password": "DHIS2_PASSWORD"}
    monkeypatch.setenv("DHIS2_TOKEN", "d2pat_secret")
    assert set(dhis2_resource_from_env()._get_non_default_public_field_values()) == {"base_url", "token"}


def test_sensor_intervals_follow_the_settings():
    """Sensor intervals are fixed when the code location loads, so a fresh interpreter reads them."""
    env = os.environ | {"CHAP_SCHEDULER_OVERVIEW_INTERVAL_SECONDS": "7", "CHAP_SCHEDULER_DISCOVERY_INTERVAL_SECONDS": "45"}
    code = ("import json; from chap_scheduler_dagster.definitions import defs; print(json.dumps({s.name: "
            "s.minimum_interval_seconds for s in defs.get_repository_def().sensor_defs}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    intervals = json.loads(done.stdout.splitlines()[-1])
    assert {name: intervals[name] for name in intervals if name.startswith("chap_predictions_overview_on_")} == {
        "chap_predictions_overview_on_success": 7, "chap_predictions_overview_on_failure": 7,
        "chap_predictions_overview_on_canceled": 7}
    assert intervals["configured_models_sensor"] == 45
