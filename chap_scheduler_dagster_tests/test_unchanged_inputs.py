"""No needless predictions: the inputs fingerprint and the skip, in process against the sandbox over loopback."""

from __future__ import annotations

import dagster as dg
import pytest

from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import Dhis2Resource
from chap_scheduler_dagster.defs.unchanged import last_successful_prediction
from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox import periods as P
from dhis2_sandbox.world import DE_CASES

WINDOW = {"end_mode": "offset", "end_period_offset": 3}


def chap_posts(sb: Sandbox) -> int:
    """Prediction requests that reached chap through the route (the only POSTs the job sends)."""
    return sum(1 for method, path, _ in sb.requests if method == "POST" and path.startswith("/api/routes/chap/run/"))


def run(instance, sb: Sandbox, key: str = "1", *, force: bool | None = None):
    ops: dict = {"probe_covariates": {"config": WINDOW}}
    if force is not None:
        ops["submit_prediction"] = {"config": {"force": force}}
    result = dhis2_chap_prediction.execute_in_process(
        partition_key=key,
        instance=instance,
        resources={"dhis2": Dhis2Resource(base_url=sb.base_url, username="admin", password="district")},
        run_config={"ops": ops},
        raise_on_error=False,
    )
    record = instance.fetch_materializations(report_asset_key, limit=1).records[0]
    assert record.run_id == result.run_id, "every run writes its report"
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    return result, meta


def step_outcomes(result) -> dict[str, str]:
    return {e.step_key: e.event_type_value for e in result.all_events
            if e.event_type_value in ("STEP_SUCCESS", "STEP_SKIPPED", "STEP_FAILURE")}


@pytest.fixture
def instance(instance):
    """The module's in-memory instance (conftest), wiped, with the two models' partitions."""
    instance.add_dynamic_partitions(configured_models_partitions.name, ["1", "4"])
    return instance


@pytest.fixture
def sandbox():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb:
        yield sb


def test_unchanged_inputs_skip_without_posting_and_keep_the_previous_forecast(instance, sandbox):
    first, meta1 = run(instance, sandbox)
    assert first.success and meta1["status"] == "succeeded with warnings"
    assert meta1["fingerprint"].startswith("sha256:") and len(meta1["fingerprint"]) == 71
    assert f"**Inputs fingerprint:** `{meta1['fingerprint']}`" in meta1["report"]
    assert chap_posts(sandbox) == 1 and len(sandbox.chap.predictions) == 1

    second, meta2 = run(instance, sandbox)
    # Skipping is not a failure: the Dagster run succeeds, waiting (and anything after it) is skipped.
    assert second.success
    assert step_outcomes(second) == {"probe_covariates": "STEP_SUCCESS", "fetch_analytics": "STEP_SUCCESS",
                                     "submit_prediction": "STEP_SUCCESS", "await_prediction": "STEP_SKIPPED",
                                     "publish_forecasts": "STEP_SKIPPED"}
    assert meta2["status"] == "skipped" and meta2["failed_step"] == ""
    reason = f"inputs unchanged since prediction {meta1['prediction_id']} (run {first.run_id})"
    assert meta2["error"] == reason
    assert "- **Status:** SKIPPED" in meta2["report"] and reason in meta2["report"]
    assert meta2["fingerprint"] == meta1["fingerprint"], "same sandbox data, same fingerprint"
    assert meta2["current_prediction_id"] == str(meta1["prediction_id"])
    assert meta2["current_prediction_run_id"] == first.run_id
    assert chap_posts(sandbox) == 1, "no POST reached chap"
    assert len(sandbox.chap.predictions) == 1
    # The previous prediction is still the model's current one.
    last = last_successful_prediction(instance, "1")
    assert (last.prediction_id, last.run_id, last.fingerprint) == (str(meta1["prediction_id"]), first.run_id,
                                                                   meta1["fingerprint"])

    # A third unchanged run still names the prediction that is current, not the skipped run.
    third, meta3 = run(instance, sandbox)
    assert meta3["status"] == "skipped" and meta3["error"] == reason and chap_posts(sandbox) == 1


def test_force_predicts_anyway(instance, sandbox):
    _, meta1 = run(instance, sandbox)
    forced, meta2 = run(instance, sandbox, force=True)
    assert forced.success and meta2["status"] == "succeeded with warnings"
    assert meta2["fingerprint"] == meta1["fingerprint"]
    assert meta2["prediction_id"] != meta1["prediction_id"]
    assert chap_posts(sandbox) == 2
    assert last_successful_prediction(instance, "1").run_id == forced.run_id
    # force: false is the default, spelled out
    _, meta3 = run(instance, sandbox, force=False)
    assert meta3["status"] == "skipped" and meta3["current_prediction_id"] == str(meta2["prediction_id"])


def test_one_changed_value_in_dhis2_changes_the_fingerprint_and_predicts(instance, sandbox):
    _, meta1 = run(instance, sandbox)
    world = sandbox.world
    unit = next(u for u in world.ou_ids if u != world.no_geometry_ou)
    period = P.format_id("month", world.last_month - 6)  # inside the window (offset 3)
    [old] = world.native_values(world.data_elements[DE_CASES], world.last_month - 6, [world.ou_index[unit]])
    sandbox.world.set_value(DE_CASES, period, unit, old + 1)

    again, meta2 = run(instance, sandbox)
    assert again.success and meta2["status"] == "succeeded with warnings", meta2["report"]
    assert meta2["fingerprint"] != meta1["fingerprint"]
    assert chap_posts(sandbox) == 2

    # Putting the value back gives the first fingerprint again: the fingerprint is a function of the data.
    sandbox.world.set_value(DE_CASES, period, unit, old)
    _, meta3 = run(instance, sandbox, force=True)
    assert meta3["fingerprint"] == meta1["fingerprint"]


def test_fingerprint_is_stable_across_sandboxes_and_instances():
    """Same data from a fresh DHIS2 process and a fresh Dagster instance: the same fingerprint."""
    prints = []
    for _ in range(2):
        with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb, dg.DagsterInstance.ephemeral() as inst:
            inst.add_dynamic_partitions(configured_models_partitions.name, ["1"])
            result, meta = run(inst, sb)
            assert result.success and meta["status"] == "succeeded with warnings"
            prints.append(meta["fingerprint"])
    assert prints[0] == prints[1]


def test_models_do_not_share_fingerprints(instance, sandbox):
    _, monthly = run(instance, sandbox, "1")
    _, yearly = run(instance, sandbox, "4")
    assert monthly["status"] == yearly["status"] == "succeeded with warnings"
    assert monthly["fingerprint"] != yearly["fingerprint"]


def test_a_failed_run_after_a_success_does_not_hide_the_current_prediction(instance, sandbox):
    first, meta1 = run(instance, sandbox)
    sandbox.faults.route_down = True
    failed, _ = run(instance, sandbox)
    assert not failed.success
    sandbox.faults.route_down = False
    _, meta3 = run(instance, sandbox)
    assert meta3["status"] == "skipped" and meta3["current_prediction_run_id"] == first.run_id


def test_a_dry_run_publish_is_a_rehearsal_the_next_run_predicts_and_publishes(instance, sandbox):
    """A success whose publishing was only a dry run never put its forecast into DHIS2, so it does not
    count as the forecast to keep: the next run with the same inputs predicts and publishes."""
    result = dhis2_chap_prediction.execute_in_process(
        partition_key="1", instance=instance, raise_on_error=False,
        resources={"dhis2": Dhis2Resource(base_url=sandbox.base_url, username="admin", password="district")},
        run_config={"ops": {"probe_covariates": {"config": WINDOW}, "publish_forecasts": {"config": {"mode": "dry-run"}}}},
    )
    assert result.success
    rehearsal = {k: v.value for k, v in instance.fetch_materializations(report_asset_key, limit=1)
                 .records[0].asset_materialization.metadata.items()}
    assert rehearsal["status"].startswith("succeeded") and rehearsal["publish_outcome"] == "dry run"
    second, meta = run(instance, sandbox)
    assert second.success and meta["status"].startswith("succeeded") and meta["publish_outcome"] == "published"
    assert meta["fingerprint"] == rehearsal["fingerprint"] and chap_posts(sandbox) == 2
    third, skipped = run(instance, sandbox)  # now the published one is current
    assert third.success and skipped["status"] == "skipped" and chap_posts(sandbox) == 2
    assert skipped["current_prediction_id"] == str(meta["prediction_id"])


def test_a_prediction_chap_no_longer_holds_is_not_kept(instance, sandbox):
    """Unchanged inputs skip only while chap holds the prediction: deleted in chap, or a new chap database
    whose prediction 1 is another one (ids start again), the run predicts."""
    _, meta1 = run(instance, sandbox)
    first_id = meta1["prediction_id"]
    del sandbox.chap.predictions[first_id]  # deleted in chap
    again, meta2 = run(instance, sandbox)
    assert again.success and meta2["status"] == "succeeded with warnings", meta2["report"]
    assert chap_posts(sandbox) == 2 and meta2["fingerprint"] == meta1["fingerprint"]
    said = [e.user_message for e in instance.all_logs(again.run_id)]
    assert any(f"inputs unchanged, but chap no longer holds prediction {first_id} (run" in m for m in said), said

    # A new chap database: the id of the current prediction answers, with another run's prediction behind it.
    sandbox.chap.predictions[meta2["prediction_id"]]["name"] = "a prediction made by someone else"
    third, meta3 = run(instance, sandbox)
    assert meta3["status"] == "succeeded with warnings" and chap_posts(sandbox) == 3

    # While chap holds it, the unchanged inputs skip as before.
    _, meta4 = run(instance, sandbox)
    assert meta4["status"] == "skipped" and meta4["current_prediction_id"] == str(meta3["prediction_id"])
    assert chap_posts(sandbox) == 3


def test_when_chap_cannot_say_whether_it_holds_the_prediction_the_run_predicts(instance, sandbox):
    """Uncertain: a needless training costs less than a skip that leaves no forecast in chap."""

    class Unreadable(dict):
        def get(self, *args):  # GET /v1/crud/predictions/{id} is the only caller of get()
            raise RuntimeError("chap's database is unreachable")

    _, meta1 = run(instance, sandbox)
    sandbox.chap.predictions = Unreadable(sandbox.chap.predictions)
    again, meta2 = run(instance, sandbox)
    assert meta2["status"] == "succeeded with warnings" and chap_posts(sandbox) == 2, meta2["report"]
    said = [e.user_message for e in instance.all_logs(again.run_id)]
    assert any(m.startswith(f"could not ask chap for prediction {meta1['prediction_id']} (run") and
               m.endswith("; predicting") for m in said), said
