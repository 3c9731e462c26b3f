"""Point 1 against a real chap-core 2.5.1: a POST whose answer the route loses is found by name.

Uses the real chap lane (real_chap_fixture.py, one per session) (``-m realchap``). The sandbox route forwards
the POST to the real chap, which creates the job, then answers 502 (or drops the connection).
"""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from chap_scheduler_dagster.core.reconcile import run_marker
from chap_scheduler_dagster.settings import get_settings

from .real_chap_fixture import _log_tails  # the lane fixture itself comes from conftest.py

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
        result, meta = lane.run_job(instance)
    text = meta["report"]
    assert result.success, f"{text}\n{_log_tails(lane.run_dir)}"
    jobs = httpx.get(f"{lane.chap_url}/v1/jobs", params={"predictionSetupId": key}).json()
    mine = [j for j in jobs if run_marker(result.run_id) in (j["name"] or "")]
    assert len(mine) == 1, jobs  # chap named the job after the request, and there is no duplicate
    assert meta["job_id"] == mine[0]["id"]
    assert f"found job {mine[0]['id']} by name" in text
