"""Preflight with a real dagster-daemon: the ``check`` command sees its heartbeat, and the job
``check_connections`` launched over GraphQL like the launchpad writes ``chap_scheduler_health``."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import BIN, LOCATION, running_stack

pytestmark = pytest.mark.e2e

PASSWORD = "Pw-e2e-preflight-SECRET-77"

HEALTH = """
query Health($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries {
          label
          ... on TableMetadataEntry { table { records } }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": PASSWORD}
    with Sandbox(SandboxConfig(port=0, password=PASSWORD, job_seconds=0.2)) as sandbox, \
            running_stack(tmp_path_factory.mktemp("preflight_e2e"), sandbox.base_url, env) as stack:
        yield stack


def check_json(stack, *args: str) -> dict:
    done = subprocess.run([str(BIN / "chap-scheduler-run"), "check", "--json", *args], cwd=stack.home,
                          env=stack.env, capture_output=True, text=True, timeout=120)
    assert PASSWORD not in done.stdout + done.stderr
    return json.loads(done.stdout)


def test_check_sees_the_running_daemon(stack):
    deadline = time.monotonic() + 60
    while True:
        document = check_json(stack, "1")
        daemon = next(c for c in document["checks"] if c["name"] == "dagster-daemon")
        if daemon["status"] == "ok" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert daemon["status"] == "ok" and "heartbeating" in daemon["finding"], stack.log_tail()
    instance = next(c for c in document["checks"] if c["name"] == "Dagster instance")
    assert instance["status"] == "ok" and "PostgresRunStorage" in instance["finding"]
    assert document["exit_code"] == 0


def test_check_connections_launched_like_the_ui(stack):
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                     "pipelineName": "check_connections"},
        "runConfigData": {},
    }
    launched = stack.graphql(
        """mutation Launch($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
             __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {"params": params},
    )["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    run = stack.wait_for_run(run_id, timeout=120)
    assert run["status"] == "SUCCESS", stack.log_tail()
    asset = stack.graphql(HEALTH, {"path": ["chap_scheduler_health"]})["assetOrError"]
    (materialization,) = asset["assetMaterializations"]
    assert materialization["runId"] == run_id
    entries = {e["label"]: e for e in materialization["metadataEntries"]}
    rows = [json.loads(r) for r in entries["checks"]["table"]["records"]]
    status = {r["check"]: r["status"] for r in rows}
    assert status["DHIS2 credentials"] == "ok" and status["chap-core"] == "ok"
    assert status["dagster-daemon"] == "ok"  # the run worker sees the daemon that launched it
    assert entries["status"]["text"] == "passed with warnings"
    assert PASSWORD not in json.dumps(asset)
