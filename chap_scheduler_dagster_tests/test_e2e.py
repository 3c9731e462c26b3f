"""End to end as operators use it: dagster-webserver + dagster-daemon on Postgres, the sandbox
DHIS2 with its chap route, runs launched over GraphQL like the launchpad, reports read back
from the asset over GraphQL."""

import pytest

from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import create_database, drop_database, make_stack

pytestmark = pytest.mark.e2e

PASSWORD = "district"


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(port=0)) as sb:
        yield sb


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    database = create_database()
    stack = make_stack(
        tmp_path_factory.mktemp("e2e"),
        database,
        {
            "DHIS2_BASE_URL": sandbox.base_url,
            "DHIS2_USERNAME": "admin",
            "DHIS2_PASSWORD": PASSWORD,
            "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.3",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        drop_database(database)


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
    assert "- **Status:** SUCCEEDED" in text
    assert "**Prediction id:**" in text and "Predicted periods" in text
    assert "DHIS2_PASSWORD" not in text and PASSWORD not in text


def test_chap_rejection(stack):
    add_partitions(stack, ["3"])
    run = launch_and_wait(stack, "3", {"ops": {"probe_covariates": {"config": {}}}})
    assert run["status"] == "FAILURE"
    text, meta = stack.report("3")
    assert meta["failed_step"] == "submit_prediction"
    assert "All regions rejected due to missing values" in text
    assert "Rejected cells (grouped by covariate)" in text and "`rainfall`:" in text


def test_dhis2_down(stack):
    add_partitions(stack, ["1"])
    # The launchpad can point a run at another DHIS2 URL (never a password): here, a closed port.
    run = launch_and_wait(
        stack, "1",
        {"ops": {"probe_covariates": {"config": {}}}, "resources": {"dhis2": {"config": {"base_url": "http://127.0.0.1:9"}}}},
    )
    assert run["status"] == "FAILURE"
    text, meta = stack.report("1")
    assert meta["failed_step"] == "probe_covariates"
    assert "could not reach DHIS2 at http://127.0.0.1:9" in text


def test_invalid_run_config_gives_failed_run_with_report(stack):
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
