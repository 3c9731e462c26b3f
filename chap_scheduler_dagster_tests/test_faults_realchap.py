"""Point 1 against a real chap-core 2.5.1: a POST whose answer the route loses is found by name.

Uses the real chap lane (real_chap_fixture.py, one per session) (``-m realchap``). The sandbox route forwards
the POST to the real chap, which creates the job, then answers 502 (or drops the connection).
"""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from chap_scheduler_dagster.core.reconcile import run_marker
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.settings import get_settings

from .real_chap_fixture import AUTH, _log_tails  # the lane fixture itself comes from conftest.py

pytestmark = pytest.mark.realchap


@pytest.mark.parametrize("fault", ["lost_502", "lost_drop"])
def test_real_chap_job_is_found_by_name_after_a_lost_answer(real_chap_lane, monkeypatch, fault):
    lane = real_chap_lane
    key = str(lane.seed["prediction_setup_id"])
    monkeypatch.setenv("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "0.5")
    monkeypatch.setenv("CHAP_SCHEDULER_RECONCILE_SECONDS", "20")
    get_settings.cache_clear()
    httpx.post(f"{lane.sandbox_url}/__sandbox/faults", json={"chap_post": fault}).raise_for_status()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(configured_models_partitions.name, [key])
        result = dhis2_chap_prediction.execute_in_process(
            partition_key=key,
            instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=lane.sandbox_url, username=AUTH[0], password=AUTH[1])},
            run_config={"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}},
            raise_on_error=False,
        )
        meta = instance.fetch_materializations(report_asset_key, limit=1).records[0].asset_materialization.metadata
    text = meta["report"].value
    assert result.success, f"{text}\n{_log_tails(lane.run_dir)}"
    jobs = httpx.get(f"{lane.chap_url}/v1/jobs", params={"predictionSetupId": key}).json()
    mine = [j for j in jobs if run_marker(result.run_id) in (j["name"] or "")]
    assert len(mine) == 1, jobs  # chap named the job after the request, and there is no duplicate
    assert meta["job_id"].value == mine[0]["id"]
    assert f"found job {mine[0]['id']} by name" in text
