"""The operator's picture, end to end: command-line runs in the UI, re-execution, progress and tags.

dagster-webserver + dagster-daemon on Postgres and the sandbox DHIS2, as in test_e2e.py. The
command line runs against the same instance; everything is then read and re-executed through
the GraphQL queries and mutations the UI uses (the job's Runs tab filters runs on the
``.dagster/repository`` tag; its Partitions tab reads ``partitionStatusesOrError``; the run
page's Re-execute buttons call ``launchPipelineReexecution``).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import BIN, LOCATION, REPO, running_stack

pytestmark = pytest.mark.e2e

JOB = "dhis2_chap_prediction"
REPOSITORY_LABEL = f"__repository__@{LOCATION}"
TIMEOUT_SECONDS = 15

JOB_RUNS = """
query JobRuns($filter: RunsFilter!) {
  runsOrError(filter: $filter) { __typename ... on Runs { results { runId status tags { key value } } } }
}
"""

RUN_DETAIL = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status parentRunId rootRunId runConfigYaml tags { key value }
                 repositoryOrigin { repositoryLocationName repositoryName } }
  }
}
"""

PARTITION_STATUSES = """
query Statuses($sel: RepositorySelector!, $name: String!) {
  partitionSetOrError(repositorySelector: $sel, partitionSetName: $name) {
    __typename
    ... on PartitionSet { partitionStatusesOrError { __typename
      ... on PartitionStatuses { results { partitionName runStatus runId } } } }
  }
}
"""

REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
  }
}
"""

LOGS = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId, limit: 2000) { __typename ... on EventConnection { events { __typename
    ... on MessageEvent { message } } } }
}
"""

SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(port=0, job_seconds=1.0)) as sb:
        yield sb


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    env = {"DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district",
           "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS)}
    with running_stack(tmp_path_factory.mktemp("e2e_operator"), sandbox.base_url, env) as stack:
        yield stack


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "chap-scheduler-run"), *args], env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=300
    )


def run_ids(stdout: str) -> dict[str, str]:
    """configured model id -> run id, from the command line's outcome lines."""
    ids, model = {}, None
    for line in stdout.splitlines():
        if line.startswith("configured model "):
            model = line.split()[2].rstrip(":")
        elif line.strip().startswith("report:") and model:
            ids[model] = line.rsplit("run ", 1)[1].strip()
    return ids


def reexecute(stack, parent_run_id: str, strategy: str) -> dict:
    answer = stack.graphql(REEXECUTE, {"params": {"parentRunId": parent_run_id, "strategy": strategy}})
    launched = answer["launchPipelineReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    return stack.wait_for_run(run_id) | {"runId": run_id}


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def posts(sandbox) -> int:
    return sum(1 for method, path, _ in sandbox.requests if method == "POST" and "/chap/" in path)


def test_cli_runs_are_first_class_in_the_ui(stack, sandbox):
    # --force: each test needs a prediction of its own (unchanged sandbox inputs would be skipped),
    # and a re-execution keeps the parent's config.
    answer = cli(stack, "--force", "1", "3")
    # The one-line outcome per model and the exit status are unchanged.
    assert answer.returncode == 1, answer.stderr[-3000:]
    assert "configured model 1: SUCCEEDED WITH WARNINGS\n" in answer.stdout
    assert "configured model 3: FAILED at submit_prediction" in answer.stdout
    ids = run_ids(answer.stdout)
    assert set(ids) == {"1", "3"}

    # The job's Runs tab: runs of the job in this repository.
    listed = stack.graphql(
        JOB_RUNS, {"filter": {"pipelineName": JOB, "tags": [{"key": ".dagster/repository", "value": REPOSITORY_LABEL}]}}
    )["runsOrError"]["results"]
    assert set(ids.values()) <= {r["runId"] for r in listed}

    # The run page: origin (Re-execute, Open in Launchpad), partition and trigger tags.
    detail = stack.graphql(RUN_DETAIL, {"runId": ids["3"]})["runOrError"]
    assert detail["repositoryOrigin"] == {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    tags = tags_of(detail)
    assert tags["dagster/partition"] == "3"
    assert tags["dagster/partition_set"] == f"{JOB}_partition_set"
    assert tags["chap_scheduler/trigger"] == "cli"
    # The Runs page says which model by name (set by the run once it loaded the configured model).
    assert tags["chap_scheduler/model"] == sandbox.chap.setups[3]["name"]
    assert "end_mode: calculated" in detail["runConfigYaml"]

    # The job's Partitions tab: model 1 succeeded, model 3 failed.
    statuses = stack.graphql(PARTITION_STATUSES, {"sel": SELECTOR, "name": f"{JOB}_partition_set"})
    results = statuses["partitionSetOrError"]["partitionStatusesOrError"]["results"]
    by_key = {r["partitionName"]: r for r in results}
    assert by_key["1"]["runStatus"] == "SUCCESS" and by_key["1"]["runId"] == ids["1"]
    # Dagster's green has no "with warnings": the run's outcome tag (Runs tab, run page) says it.
    detail1 = stack.graphql(RUN_DETAIL, {"runId": ids["1"]})["runOrError"]
    assert tags_of(detail1)["chap_scheduler/outcome"] == "succeeded with warnings"
    assert tags_of(detail)["chap_scheduler/outcome"] == "failed"
    assert by_key["3"]["runStatus"] == "FAILURE" and by_key["3"]["runId"] == ids["3"]

    # The overview asset, refreshed by the run-status sensors (which now see command-line runs), as the
    # full-width table the UI renders from TableMetadataEntry.
    def overview_table():
        data = stack.graphql(OVERVIEW_TABLE)["assetOrError"]["assetMaterializations"]
        for entry in (data[0]["metadataEntries"] if data else []):
            if entry["label"] == "models":
                records = {r["model"]: r for r in map(json.loads, entry["table"]["records"])}
                if records.get("3", {}).get("run") == ids["3"] and records.get("1", {}).get("run") == ids["1"]:
                    return records
        return None

    records = stack.wait_until(overview_table, 120, "the overview table with both command-line runs")
    assert records["1"]["status"] == "succeeded with warnings" and records["1"]["last_success_run"] == ids["1"]
    assert records["1"]["warnings"] == (
        "1 org unit without geometry, 2 org units dropped by chap, 2 predicted periods already over")
    # The CLI said the same, warning by warning, naming the org units.
    no_geometry = sandbox.world.no_geometry_ou
    assert (f"  warning: 1 of 12 org units have no geometry in DHIS2 and were not sent to chap (no forecast for "
            f"them): {sandbox.world.ou_name(no_geometry)} ({no_geometry})") in answer.stdout
    assert records["3"]["status"] == "failed" and records["3"]["step"] == "submit_prediction"

    # Re-execute all steps of a command-line run from the UI, after one value changed in DHIS2 (with
    # unchanged inputs the run would end `skipped`: issue #12's no-needless-predictions rule).
    from dhis2_sandbox import periods as P
    from dhis2_sandbox.world import DE_CASES

    world = sandbox.world
    unit = next(u for u in world.ou_ids if u != world.no_geometry_ou)
    [old] = world.native_values(world.data_elements[DE_CASES], world.last_month - 6, [world.ou_index[unit]])
    world.set_value(DE_CASES, P.format_id("month", world.last_month - 6), unit, old + 1)
    before = posts(sandbox)
    child = reexecute(stack, ids["1"], "ALL_STEPS")
    assert child["status"] == "SUCCESS", stack.log_tail()
    assert tags_of(child)["dagster/partition"] == "1"
    assert posts(sandbox) == before + 1  # all steps = a new prediction
    text, meta = stack.report("1")
    assert meta["runId"] == child["runId"]


def test_reexecution_from_await_waits_on_the_same_chap_job(stack, sandbox):
    # The chap job outlives the run's timeout: the run fails at await_prediction.
    sandbox.faults.update({"chap_job": "hang"})
    try:
        answer = cli(stack, "1", "--force")  # model 1 predicted earlier in this module: same inputs
    finally:
        sandbox.faults.update({"chap_job": "ok"})
    assert answer.returncode == 1
    assert "configured model 1: FAILED at await_prediction" in answer.stdout, answer.stdout
    parent = run_ids(answer.stdout)["1"]
    text, meta = stack.report("1")
    job_id = meta["job_id"]
    assert job_id and meta["runId"] == parent
    parent_started = _started(text)
    # While it waited, the log said what it waited on and for how long against the timeout.
    waited = [m for m in _messages(stack, parent) if f"chap job {job_id}: " in m]
    assert any(m.startswith(f"chap job {job_id}: STARTED (") and f"of the {TIMEOUT_SECONDS} s timeout" in m
               for m in waited), waited
    parent_tags = tags_of(stack.graphql(RUN_DETAIL, {"runId": parent})["runOrError"])
    assert parent_tags["chap_scheduler/chap_job_id"] == job_id

    # chap finishes the job later; re-executing from the failure picks it up without a new POST.
    sandbox.chap.jobs[job_id].outcome = "ok"
    before = posts(sandbox)
    time.sleep(1.1)  # the report's start time is to the second
    child = reexecute(stack, parent, "FROM_FAILURE")
    assert child["status"] == "SUCCESS", stack.log_tail()
    assert posts(sandbox) == before
    text, meta = stack.report("1")
    assert meta["runId"] == child["runId"] and meta["run_id"] == child["runId"]
    assert meta["job_id"] == job_id and meta["status"] == "succeeded with warnings"
    assert f"- **Dagster run:** `{child['runId']}`" in text
    assert f"- **Re-execution of:** run {parent}, from step await_prediction" in text
    assert _started(text) > parent_started
    messages = _messages(stack, child["runId"])
    assert any(f"waiting again on chap job {job_id} (no new request is sent to chap)" in m for m in messages)


def test_reexecution_from_submit_rebuilds_the_request_body(stack, sandbox):
    answer = cli(stack, "3")  # chap rejects model 3's gappy rainfall at the POST
    parent = run_ids(answer.stdout)["3"]
    before = posts(sandbox)
    child = reexecute(stack, parent, "FROM_FAILURE")
    assert child["status"] == "FAILURE"
    # The body was fetched again and posted once: chap rejects it for the same reason, not for a missing file.
    assert posts(sandbox) == before + 1
    text, meta = stack.report("3")
    assert meta["runId"] == child["runId"]
    assert meta["failed_step"] == "submit_prediction"
    assert "All regions rejected due to missing values" in text
    assert f"- **Re-execution of:** run {parent}, from step submit_prediction" in text
    assert any("fetching it again from DHIS2" in m for m in _messages(stack, child["runId"]))


TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on PythonError { message } ... on UnauthorizedError { message } }
}
"""


def test_terminated_run_is_canceled_and_says_the_chap_job_may_still_run(stack, sandbox):
    sandbox.faults.update({"chap_job": "hang"})
    try:
        launched = stack.launch("1", {"ops": {"probe_covariates": {"config": {}},
                                              "submit_prediction": {"config": {"force": True}}}})
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 90
        job_id = None
        while time.monotonic() < deadline and not job_id:  # await_prediction tags the run with the chap job
            job_id = tags_of(stack.graphql(RUN_DETAIL, {"runId": run_id})["runOrError"]).get("chap_scheduler/chap_job_id")
            time.sleep(0.3)
        assert job_id, stack.log_tail()
    finally:
        sandbox.faults.update({"chap_job": "ok"})
    answer = stack.graphql(TERMINATE, {"runId": run_id})["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    run = stack.wait_for_run(run_id)
    assert run["status"] == "CANCELED"
    text, meta = stack.report("1")
    assert meta["runId"] == run_id and meta["status"] == "canceled" and meta["failed_step"] == "await_prediction"
    assert "- **Status:** CANCELED during `await_prediction`" in text
    # What stopped it and the job that may still run, from the run's own events (core/run_cause.py) …
    assert "the run was terminated during await_prediction" in text
    assert f"chap accepted it as job {job_id}" in text and "may still be running in chap" in text
    # … and how to check it before relaunching (core/cancellation.py).
    assert f"/api/routes/chap/run/v1/jobs/{job_id}" in text and "re-execute this run from await_prediction" in text

    # Following the advice keeps the prediction chap went on computing: no second POST.
    sandbox.chap.jobs[job_id].outcome = "ok"
    before = posts(sandbox)
    child = reexecute(stack, run_id, "FROM_FAILURE")
    assert child["status"] == "SUCCESS", stack.log_tail()
    assert posts(sandbox) == before
    text, meta = stack.report("1")
    assert meta["runId"] == child["runId"] and meta["job_id"] == job_id and meta["status"] == "succeeded with warnings"


OVERVIEW_TABLE = """
{ assetOrError(assetKey: {path: ["chap_predictions_overview"]}) { __typename
    ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries { label
      ... on TableMetadataEntry { table { records schema { columns { name } } } } } } } } }
"""


def _started(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("- **Started:**"))


def _messages(stack, run_id: str) -> list[str]:
    events = stack.graphql(LOGS, {"runId": run_id})["logsForRun"]["events"]
    return [e.get("message") or "" for e in events]
