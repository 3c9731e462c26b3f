"""End to end: chap's cron sensor and the operator schedule both fire every minute; each model runs once a minute.

Real dagster-webserver + dagster-daemon on Postgres, the sandbox DHIS2 with its chap route.
The operator schedule runs every minute with CHAP_SCHEDULER_OPERATOR_SCHEDULE_COVERS=all, and
model 61's chap cron also fires every minute: that minute belongs to chap's cron, so model 61
gets exactly one run per minute (from the sensor), models 1 and 2 one per minute (from the schedule).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from chap_scheduler_dagster.defs.tags import MODEL_TICK_TAG
from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import LOCATION, add_every_minute_setup, running_stack

pytestmark = pytest.mark.e2e

EVERY_MINUTE = 61
SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message }
  }
}
"""

OVERVIEW = """
query Overview($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status tags { key value } } } }
}
"""


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        for setup_id in (3, 4, 5):  # fewer models, fewer runs on a shared machine
            sb.chap.remove_setup(setup_id)
        add_every_minute_setup(sb, EVERY_MINUTE)
        yield sb


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    env = {"DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district",
           "CHAP_SCHEDULER_OPERATOR_SCHEDULE_CRON": "* * * * *", "CHAP_SCHEDULER_OPERATOR_SCHEDULE_COVERS": "all"}
    with running_stack(tmp_path_factory.mktemp("e2e_double"), sandbox.base_url, env) as stack:
        yield stack


def scheduled_runs(stack) -> list[dict]:
    runs = stack.graphql(RUNS, {"filter": {"pipelineName": "dhis2_chap_prediction"}})["runsOrError"]["results"]
    out = []
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if MODEL_TICK_TAG in tags:
            out.append({"id": run["runId"], "status": run["status"], "tick": tags[MODEL_TICK_TAG],
                        "trigger": tags.get("chap_scheduler/trigger", ""), "partition": tags.get("dagster/partition")})
    return out


def test_sensor_and_schedule_at_the_same_minute_launch_one_run_per_model(stack):
    answer = stack.graphql(START_SCHEDULE, {"selector": SELECTOR | {"scheduleName": "dhis2_chap_prediction_schedule"}})
    assert answer["startSchedule"]["__typename"] == "ScheduleStateResult", answer

    # Wait until two minutes have seen both instigators fire (the sensor for 61, the schedule for 1 and 2).
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = scheduled_runs(stack)
        minutes_with_both = {r["tick"].split("@")[1] for r in runs if r["trigger"] == "chap-cron"} & {
            r["tick"].split("@")[1] for r in runs if r["trigger"].startswith("schedule:")}
        if len(minutes_with_both) >= 2:
            break
        time.sleep(3)
    else:
        raise AssertionError(f"the sensor and the schedule did not both fire in two minutes: {runs}\n{stack.log_tail()}")

    runs = scheduled_runs(stack)
    per_tick = Counter(r["tick"] for r in runs)
    assert max(per_tick.values()) == 1, f"a model ran twice at one minute: {per_tick}"
    by_model = {key: {r["trigger"] for r in runs if r["partition"] == key} for key in ("1", "2", str(EVERY_MINUTE))}
    assert by_model[str(EVERY_MINUTE)] == {"chap-cron"}, "that minute belongs to chap's cron"
    assert by_model["1"] == by_model["2"] == {"schedule:dhis2_chap_prediction_schedule"}
    for minute in sorted(minutes_with_both)[:2]:
        assert {r["partition"] for r in runs if r["tick"].endswith(minute)} == {"1", "2", str(EVERY_MINUTE)}
    for run in runs:  # the launched runs themselves work (later ones skip as unchanged)
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            assert run["status"] == "SUCCESS", stack.log_tail()

    # What is due next: the overview (refreshed after each run) names each model's next run and what fires it.
    def overview() -> str:
        data = stack.graphql(OVERVIEW, {"path": ["chap_predictions_overview"]})["assetOrError"]
        entries = data["assetMaterializations"][0]["metadataEntries"] if data.get("assetMaterializations") else []
        return next((e["mdStr"] for e in entries if e["label"] == "overview"), "")

    deadline = time.monotonic() + 60
    while "chap cron '* * * * *'" not in overview() and time.monotonic() < deadline:
        time.sleep(2)
    text = overview()
    assert "| next run (UTC) |" in text
    row = {line.split(" ")[1]: line for line in text.splitlines() if line.startswith("| ")}
    assert "(chap cron '* * * * *') |" in row[str(EVERY_MINUTE)], text
    assert "(schedule dhis2_chap_prediction_schedule '* * * * *') |" in row["1"], text
