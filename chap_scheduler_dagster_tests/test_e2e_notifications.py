"""End to end: dagster-webserver + dagster-daemon, runs launched over GraphQL like the launchpad,
and the notifications sensor (run by the daemon) posting to a real loopback webhook receiver.

fail, fail, fail, recover must give exactly two messages: one "failed", one "recovered"."""

import time

import pytest

from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import running_stack
from .notify_receivers import start_http_receiver

pytestmark = pytest.mark.e2e

PASSWORD = "district"
FAILING = {"ops": {"probe_covariates": {"config": {"end_mode": "fixed"}}}}  # fixed without end_date
WORKING = {"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}}
TICK_SECONDS = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    receiver = start_http_receiver()
    env = {
        "DHIS2_USERNAME": "admin",
        "DHIS2_PASSWORD": PASSWORD,
        "CHAP_SCHEDULER_NOTIFY_WEBHOOK_URL": receiver.url + "/hook",
        "CHAP_SCHEDULER_NOTIFY_INTERVAL_SECONDS": str(TICK_SECONDS),
        "CHAP_SCHEDULER_DAGSTER_URL": "http://dagster.example.org",
        # The outage test: the discovery sensor at its shortest interval, told after one bad tick.
        "CHAP_SCHEDULER_DISCOVERY_INTERVAL_SECONDS": "30",
        "CHAP_SCHEDULER_NOTIFY_UNREACHABLE_TICKS": "1",
    }
    try:
        with Sandbox(SandboxConfig(port=0)) as sandbox, \
                running_stack(tmp_path_factory.mktemp("e2e-notify"), sandbox.base_url, env) as stack:
            yield stack, receiver, sandbox
    finally:
        receiver.close()


def test_fail_fail_fail_recover_sends_exactly_two_messages(world):
    stack, receiver, _ = world
    answer = stack.graphql(
        """mutation Add($sel: RepositorySelector!, $name: String!, $key: String!) {
             addDynamicPartition(repositorySelector: $sel, partitionsDefName: $name, partitionKey: $key) { __typename }
           }""",
        {"sel": {"repositoryLocationName": "chap_scheduler_dagster", "repositoryName": "__repository__"},
         "name": "chap_configured_models", "key": "1"},
    )
    assert answer["addDynamicPartition"]["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError")
    # Let the sensor take its first look at an instance without runs.
    time.sleep(2 * TICK_SECONDS)
    runs = []
    for config in (FAILING, FAILING, FAILING, WORKING):
        launched = stack.launch("1", config)
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run = stack.wait_for_run(launched["run"]["runId"])
        runs.append(launched["run"]["runId"])
        assert run["status"] == ("SUCCESS" if config is WORKING else "FAILURE"), stack.log_tail()
        if len(runs) == 1:  # the first failure is told before the next run starts
            stack.wait_until(lambda: len(receiver.received) >= 1, 60, "the first message", interval=0.5)
    stack.wait_until(lambda: len(receiver.received) >= 2, 60, "the second message", interval=0.5)
    time.sleep(3 * TICK_SECONDS)  # and nothing more comes
    bodies = [r.json() for r in receiver.received]
    assert [b["kind"] for b in bodies] == ["failed", "recovered"], bodies
    failed, recovered = bodies
    assert failed["version"] == 1 and failed["model"]["id"] == "1"
    assert failed["run_id"] == runs[0] and failed["links"]["run"] == f"http://dagster.example.org/runs/{runs[0]}"
    assert "probe_covariates" in failed["what"] and "end_date" in failed["what"]
    assert failed["fix"] and failed["location"].startswith("http://127.0.0.1:")
    assert recovered["run_id"] == runs[3]
    for got in receiver.received:
        assert PASSWORD not in got.body.decode()


def test_discovery_sensor_outage_and_back(world):
    stack, receiver, sandbox = world

    def told(kind):
        return [r.json() for r in receiver.received
                if r.json()["kind"] == kind and r.json()["details"].get("sensor") == "configured_models_sensor"]

    sandbox.faults.update({"route_down": True})
    try:
        stack.wait_until(lambda: told("unreachable"), 150, "the unreachable message", interval=0.5)
    finally:
        sandbox.faults.reset()
    [down] = told("unreachable")
    assert down["model"] is None and down["severity"] == "error"
    assert "could not reach DHIS2/chap for 1 ticks in a row" in down["what"] and down["fix"]
    stack.wait_until(lambda: told("reachable"), 150, "the reachable message", interval=0.5)
    assert len(told("unreachable")) == 1 and len(told("reachable")) == 1
