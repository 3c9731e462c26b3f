"""Publishing end to end as operators do it: dagster-webserver + dagster-daemon on Postgres, the sandbox
DHIS2, runs launched over GraphQL like the launchpad (publish mode in the op config), the forecast
assets and their lineage read back over GraphQL, then a republish of the same prediction."""

import pytest

from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox.world import DE_PRED_MEDIAN

from .dagster_stack import running_stack

pytestmark = pytest.mark.e2e

SELECTOR = {"repositoryLocationName": "chap_scheduler_dagster", "repositoryName": "__repository__"}
WINDOW = {"end_mode": "offset", "end_period_offset": 3}

MATERIALIZATIONS = """
query M($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) {
        runId metadataEntries { label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text }
                                ... on TableMetadataEntry { table { records } } } } }
  }
}
"""
LINEAGE = """
{ assetNodes { assetKey { path } dependencyKeys { path } } }
"""


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(port=0)) as sb:
        yield sb


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    env = {"DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district"}
    with running_stack(tmp_path_factory.mktemp("e2e-publish"), sandbox.base_url, env) as stack:
        yield stack


def materialization(stack, name, partition):
    answer = stack.graphql(MATERIALIZATIONS, {"path": [name], "partition": partition})
    [m] = answer["assetOrError"]["assetMaterializations"]
    entries = {}
    for e in m["metadataEntries"]:
        entries[e["label"]] = e.get("intValue", e.get("text", e.get("table")))
    return m["runId"], entries


def launch(stack, partition, run_config, job="dhis2_chap_prediction"):
    stack.graphql(
        """mutation Add($sel: RepositorySelector!, $key: String!) {
             addDynamicPartition(repositorySelector: $sel, partitionsDefName: "chap_configured_models",
                                 partitionKey: $key) { __typename } }""",
        {"sel": SELECTOR, "key": partition},
    )
    launched = stack.launch(partition, run_config, job=job)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    return stack.wait_for_run(run_id) | {"runId": run_id}


def test_publish_through_the_ui_path_then_republish_the_same_prediction(stack, sandbox):
    # Dry run from the launchpad: a report of what would be written, nothing in DHIS2.
    run = launch(stack, "1", {"ops": {"probe_covariates": {"config": WINDOW},
                                      "publish_forecasts": {"config": {"mode": "dry-run"}}}})
    assert run["status"] == "SUCCESS", stack.log_tail()
    text, _ = stack.report("1")
    assert "- **Mode:** dry-run (op config mode: dry-run)" in text and "- **Outcome:** dry run" in text
    run_id, forecast = materialization(stack, "chap_forecast", "1")
    assert run_id == run["runId"] and forecast["prediction_id"] > 0
    assert len(forecast["forecast"]["records"]) == 3

    # The default mode publishes.
    run = launch(stack, "1", {"ops": {"probe_covariates": {"config": WINDOW}}})
    assert run["status"] == "SUCCESS", stack.log_tail()
    text, meta = stack.report("1")
    assert "- **Outcome:** published" in text and "**Imported:** imported" in text
    run_id, values = materialization(stack, "dhis2_forecast_values", "1")
    assert run_id == run["runId"] and values["imported"] > 0
    prediction_id = values["prediction_id"]
    assert any(k[0] == DE_PRED_MEDIAN for k in sandbox.data_values.values)

    # Republish the same prediction with the small job: nothing new, and no POST to chap.
    posts_before = [p for m, p, _ in sandbox.requests if m == "POST" and "/run" in p]
    run = launch(stack, "1", {"ops": {"republish_forecast": {"config": {"prediction_id": prediction_id}}}},
                 job="publish_chap_forecast")
    assert run["status"] == "SUCCESS", stack.log_tail()
    _, again = materialization(stack, "dhis2_forecast_values", "1")
    assert again["prediction_id"] == prediction_id and again["imported"] == 0 and again["ignored"] == values["imported"]
    assert [p for m, p, _ in sandbox.requests if m == "POST" and "/run" in p] == posts_before

    # The asset graph reads DHIS2 covariates -> chap forecast -> DHIS2 forecast values.
    nodes = {tuple(n["assetKey"]["path"]): [tuple(d["path"]) for d in n["dependencyKeys"]]
             for n in stack.graphql(LINEAGE)["assetNodes"]}
    assert nodes[("chap_forecast",)] == [("dhis2_covariates",)]
    assert nodes[("dhis2_forecast_values",)] == [("chap_forecast",)]
