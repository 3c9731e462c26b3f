"""End to end as operators use it: dagster-webserver + dagster-daemon on Postgres, the sandbox
DHIS2 with its chap route, runs launched over GraphQL like the launchpad, reports read back
from the asset over GraphQL."""

import pytest

from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import add_every_minute_setup, running_stack

pytestmark = pytest.mark.e2e

PASSWORD = "district"


EVERY_MINUTE_SETUP = 61


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(port=0)) as sb:
        add_every_minute_setup(sb, EVERY_MINUTE_SETUP)
        yield sb


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    env = {"DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": PASSWORD,
           "CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS": "0"}  # retries still happen, without the waits
    # The repository's workspace.yaml, as on a host: here runs start from the daemon's own code server.
    with running_stack(tmp_path_factory.mktemp("e2e"), sandbox.base_url, env, host_workspace=True) as stack:
        yield stack


def add_partitions(stack, keys):
    for key in keys:
        answer = stack.graphql(
            """mutation Add($sel: RepositorySelector!, $name: String!, $key: String!) {
                 addDynamicPartition(repositorySelector: $sel, partitionsDefName: $name, partitionKey: $key) { __typename }
               }""",
            {"sel": {"repositoryLocationName": "chap_scheduler_dagster", "repositoryName": "__repository__"},
             "name": "chap_configured_models", "key": key},
        )
        assert answer["addDynamicPartition"]["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError")


def launch_and_wait(stack, partition, run_config):
    launched = stack.launch(partition, run_config)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return stack.wait_for_run(launched["run"]["runId"])


def test_success_through_the_ui_path(stack):
    add_partitions(stack, ["1", "3"])
    run = launch_and_wait(stack, "1", {"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}})
    assert run["status"] == "SUCCESS", stack.log_tail()
    assert {"key": "chap_scheduler/dhis2", "value": "default"} in run["tags"]
    assert PASSWORD not in run["runConfigYaml"]
    text, meta = stack.report("1")
    # An org unit without geometry and two dropped by chap: the report, its metadata and the run's tag agree.
    assert "- **Status:** SUCCEEDED WITH WARNINGS\n" in text and meta["status"] == "succeeded with warnings"
    assert {"key": "chap_scheduler/outcome", "value": "succeeded with warnings"} in run["tags"]
    assert "**Prediction id:**" in text and "Predicted periods" in text
    assert "DHIS2_PASSWORD" not in text and PASSWORD not in text


def test_invalid_run_config_gives_failed_run_with_report(stack):
    # The one failing run launched like the launchpad: its FAILURE status and the report read back over
    # GraphQL. What each failure says is shown in process (test_job.py), where a run costs a second.
    add_partitions(stack, ["1"])
    run = launch_and_wait(stack, "1", {"ops": {"probe_covariates": {"config": {"end_mode": "fixed"}}}})
    assert run["status"] == "FAILURE"
    text, meta = stack.report("1")
    assert meta["failed_step"] == "probe_covariates"
    assert "Invalid run config: end_date: end_mode 'fixed' needs end_date" in text


def test_schema_invalid_config_is_refused_at_launch(stack):
    add_partitions(stack, ["1"])
    launched = stack.launch("1", {"ops": {"probe_covariates": {"config": {"end_mode": "tomorrow"}}}})
    assert launched["__typename"] == "RunConfigValidationInvalid"
    assert any("tomorrow" in e["message"] or "end_mode" in e["message"] for e in launched["errors"])


SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 20) { status skipReason runIds
                    dynamicPartitionsRequestResults { partitionKeys type } } } }
  }
}
"""

RUNS_BY_TAG = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status tags { key value } } } }
}
"""


def sensor_ticks(stack, name):
    selector = {"repositoryLocationName": "chap_scheduler_dagster", "repositoryName": "__repository__",
                "sensorName": name}
    return stack.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]["sensorState"]


def test_discovery_sensor_adds_every_configured_model_as_a_partition(stack, sandbox):
    expected = {str(i) for i in sandbox.chap.setups}

    def added():
        keys = set()
        for tick in sensor_ticks(stack, "configured_models_sensor")["ticks"]:
            for request in tick["dynamicPartitionsRequestResults"] or []:
                if request["type"] == "ADD_PARTITIONS":
                    keys |= set(request["partitionKeys"])
        return expected <= keys | _existing(stack) and keys

    assert stack.wait_until(added, 60, "the discovery sensor adding partitions")
    assert expected <= _existing(stack)
    assert sensor_ticks(stack, "configured_models_sensor")["status"] == "RUNNING"


def _existing(stack):
    answer = stack.graphql(
        """{ partitionSetsOrError(pipelineName: "dhis2_chap_prediction",
             repositorySelector: {repositoryLocationName: "chap_scheduler_dagster", repositoryName: "__repository__"}) {
             __typename
             ... on PartitionSets { results { partitionsOrError { ... on Partitions { results { name } } } } } } }"""
    )
    sets = answer["partitionSetsOrError"]["results"]
    return {p["name"] for s in sets for p in s["partitionsOrError"]["results"]}


def test_chap_schedule_sensor_launches_a_run_for_a_due_cron_tick(stack):
    filter_ = {"tags": [{"key": "chap_scheduler/trigger", "value": "chap-cron"}]}

    def launched():
        runs = stack.graphql(RUNS_BY_TAG, {"filter": filter_})["runsOrError"]["results"]
        return [r for r in runs if {"key": "dagster/partition", "value": str(EVERY_MINUTE_SETUP)} in r["tags"]]

    runs = stack.wait_until(launched, 150, "chap_schedule_sensor launching a run")
    run = stack.wait_for_run(runs[-1]["runId"])
    assert run["status"] == "SUCCESS", stack.log_tail()
    # Only enabled setups with a cron are launched by it: the weekly setup (disabled) never is.
    runs = stack.graphql(RUNS_BY_TAG, {"filter": filter_})["runsOrError"]["results"]
    assert not [r for r in runs if {"key": "dagster/partition", "value": "2"} in r["tags"]]
