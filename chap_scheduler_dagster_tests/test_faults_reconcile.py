"""Point 1: a POST whose answer is lost is reconciled by name, never guessed and never resent.

Against the sandbox over loopback HTTP: its chap route forwards the POST to chap (which creates
the job) and then answers 502, 503 or 504, or drops the connection; or answers 502 without
forwarding (chap never saw it). Plus respx cases for the lookup itself failing.
"""

from __future__ import annotations

import dagster as dg
import httpx
import pytest
import respx

from chap_scheduler_dagster.core.chap_client import ChapClient
from chap_scheduler_dagster.core.errors import ChapPredictionNotCreated, ChapSubmitUncertain
from chap_scheduler_dagster.core.reconcile import reconcile_submission, run_marker
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.settings import get_settings
from dhis2_sandbox import Sandbox, SandboxConfig

WINDOW = {"end_mode": "offset", "end_period_offset": 3}
RUN_URL = "/api/routes/chap/run/v1/crud/prediction-setups/1/run"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        yield sb


@pytest.fixture(autouse=True)
def short_window(monkeypatch, sandbox):
    monkeypatch.setenv("CHAP_SCHEDULER_RECONCILE_SECONDS", "1")
    monkeypatch.setenv("CHAP_SCHEDULER_HTTP_GET_ATTEMPTS", "1")
    get_settings.cache_clear()
    sandbox.faults.reset()
    with sandbox.chap.lock:
        sandbox.chap.jobs.clear()
    sandbox.requests.clear()


def run(sandbox: Sandbox, instance: dg.DagsterInstance):
    instance.add_dynamic_partitions(configured_models_partitions.name, ["1"])
    result = dhis2_chap_prediction.execute_in_process(
        partition_key="1",
        instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=sandbox.base_url, username="admin", password="district")},
        run_config={"ops": {"probe_covariates": {"config": WINDOW}}},
        raise_on_error=False,
    )
    meta = instance.fetch_materializations(report_asset_key, limit=1).records[0].asset_materialization.metadata
    tags = instance.get_run_by_id(result.run_id).tags
    return result, meta["report"].value, {k: v.value for k, v in meta.items()}, tags


@pytest.mark.parametrize(
    "fault, what",
    [("lost_502", "HTTP 502 from DHIS2's route"), ("lost_503", "HTTP 503 from DHIS2's route"),
     ("lost_504", "HTTP 504 from DHIS2's route"), ("lost_drop", "the connection was dropped")],
)
def test_lost_answer_is_found_by_name_and_waited_for(sandbox, instance, fault, what):
    sandbox.faults.update({"chap_post": fault})
    result, text, meta, tags = run(sandbox, instance)
    assert result.success, text
    [job] = sandbox.chap.jobs.values()  # one POST, one job: nothing was resent
    assert [p for m, p, _ in sandbox.requests if m == "POST" and "/api/routes/chap/" in p] == [RUN_URL]
    assert job.name.endswith(run_marker(result.run_id))
    assert f"the POST's answer was lost ({what}" in text and f"found job {job.id} by name" in text
    assert meta["job_id"] == job.id and meta["prediction_id"]
    assert tags["chap_scheduler/chap_job_id"] == job.id and tags["chap_scheduler/post"] == "answered"


def test_not_created_says_a_relaunch_is_safe(sandbox, instance):
    sandbox.faults.update({"chap_post": "not_created"})
    result, text, meta, tags = run(sandbox, instance)
    assert not result.success
    assert not sandbox.chap.jobs
    assert meta["failed_step"] == "submit_prediction"
    assert "so the prediction was not created" in meta["error"] and "HTTP 502 from DHIS2's route" in meta["error"]
    assert "Launching again is safe" in text
    assert "check that chap-core is running" not in text
    assert tags["chap_scheduler/post"] == "not created"
    assert "chap_scheduler/chap_job_id" not in tags


# ---- the lookup itself, with respx -----------------------------------------------------------

BASE = "http://dhis2.test"
JOBS = f"{BASE}/api/routes/chap/run/v1/jobs"


def lost() -> ChapSubmitUncertain:
    return ChapSubmitUncertain("/v1/crud/prediction-setups/3/run", "HTTP 504 from DHIS2's route")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_job_that_appears_late_is_found_within_the_window():
    clock = Clock()
    row = {"id": "job-9", "name": f"x {run_marker('r1')}", "status": "PENDING", "prediction_setup_id": 3}
    with respx.mock() as router, ChapClient(BASE, username="u", password="p", sleep=clock.sleep) as chap:
        route = router.get(JOBS).mock(side_effect=[httpx.Response(200, json=[]), httpx.Response(200, json=[row])])
        found = reconcile_submission(chap, 3, "r1", lost(), window_seconds=10, poll_seconds=2,
                                     clock=clock, sleep=clock.sleep)
    assert found.job.id == "job-9" and "found job job-9 by name" in found.note
    assert route.calls[0].request.url.params["predictionSetupId"] == "3"


def test_other_runs_jobs_do_not_count_and_the_window_is_bounded():
    clock = Clock()
    other = {"id": "job-1", "name": f"x {run_marker('another-run')}", "status": "SUCCESS"}
    with respx.mock() as router, ChapClient(BASE, username="u", password="p", sleep=clock.sleep) as chap:
        route = router.get(JOBS).respond(200, json=[other])
        with pytest.raises(ChapPredictionNotCreated, match="not created") as err:
            reconcile_submission(chap, 3, "r1", lost(), window_seconds=6, poll_seconds=2,
                                 clock=clock, sleep=clock.sleep)
    assert route.call_count == 4 and clock.t == 6  # looked at 0, 2, 4, 6 s, then stopped
    assert "Launching again is safe" in err.value.hint


def test_unreadable_job_list_stays_uncertain_with_what_to_check():
    clock = Clock()
    with respx.mock() as router, ChapClient(BASE, username="u", password="p", get_attempts=1,
                                            sleep=clock.sleep) as chap:
        router.get(JOBS).respond(502, json={"httpStatusCode": 502, "message": "Bad Gateway"})
        with pytest.raises(ChapSubmitUncertain, match="could not be read") as err:
            reconcile_submission(chap, 3, "r1", lost(), window_seconds=4, poll_seconds=2,
                                 clock=clock, sleep=clock.sleep)
    assert run_marker("r1") in err.value.hint and "launch again only if there is none" in err.value.hint


def test_post_dropped_or_timed_out_after_sending_is_uncertain_but_refused_connection_is_not():
    with respx.mock() as router, ChapClient(BASE, username="u", password="p") as chap:
        post = router.post(f"{BASE}{RUN_URL}".replace("/1/", "/3/"))
        for exc in (httpx.RemoteProtocolError("Server disconnected without sending a response."),
                    httpx.ReadTimeout("timed out"), httpx.ReadError("reset")):
            post.mock(side_effect=exc)
            with pytest.raises(ChapSubmitUncertain):
                chap.submit_prediction(3, b"{}", 2)
        post.mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(Exception) as err:
            chap.submit_prediction(3, b"{}", 2)
        assert not isinstance(err.value, ChapSubmitUncertain)
    assert post.call_count == 4  # one POST per call, never resent


def test_legacy_chap_api_is_reconciled_too(instance):
    with Sandbox(SandboxConfig(port=0, chap_api="legacy", job_seconds=0.2)) as legacy:
        legacy.faults.update({"chap_post": "lost_504"})
        result, text, meta, tags = run(legacy, instance)
        [job] = legacy.chap.jobs.values()
    assert result.success, text
    assert job.name.endswith(run_marker(result.run_id)) and f"found job {job.id} by name" in text
