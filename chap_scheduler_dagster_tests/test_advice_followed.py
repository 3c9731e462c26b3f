"""Every "What to do" that can be followed in the sandbox, followed: the failure is induced, its advice is
shown, the advice is carried out as written (the setting, the environment variable, the launchpad config,
chap's configured model or DHIS2's metadata it names), and the next run gets past the failure.

The inventory of all advice, with the ones that cannot be followed here and why, is docs/advice.md.
Runs are in process against the sandbox, with the dhis2 resource the code location builds from its
environment (so "set DHIS2_PASSWORD" is followed by setting DHIS2_PASSWORD).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import httpx
import pytest
import yaml

from chap_scheduler_dagster.core.preflight import ERROR, OK, WARNING, default_dotenv, run_preflight
from chap_scheduler_dagster.defs.assets import report_asset_key
from chap_scheduler_dagster.defs.health import open_chap, open_reader
from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
from chap_scheduler_dagster.defs.partitions import configured_models_partitions
from chap_scheduler_dagster.defs.resources import dhis2_resource_definition
from chap_scheduler_dagster.settings import get_settings
from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox.world import (
    DE_CASES,
    DE_PRED_HIGH,
    DE_PRED_INTEGER,
    DE_PRED_MEDIAN,
    DE_PRED_NOZERO,
    DE_PRED_SHORT,
    DE_PRED_WEEKLY_MEDIAN,
    DE_RAIN,
    DE_TEMP,
    DS_SHORT,
    ROOT_OU,
)

PASSWORD = "district"


@pytest.fixture
def instance(memory_instance):  # conftest's in-memory one, one per module
    memory_instance.wipe()
    return memory_instance


@pytest.fixture
def sb():
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sandbox:
        yield sandbox


@pytest.fixture
def env(monkeypatch, sb, tmp_path):
    """The code location's environment, pointing at the sandbox (in a folder without a .env)."""
    for name in list(os.environ):
        if name.startswith("DHIS2_") or (
            name.startswith("CHAP_SCHEDULER_")
            and name not in ("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "CHAP_SCHEDULER_RETRY_BACKOFF_SECONDS")
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DHIS2_BASE_URL", sb.base_url)
    monkeypatch.setenv("DHIS2_USERNAME", "admin")
    monkeypatch.setenv("DHIS2_PASSWORD", PASSWORD)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    return monkeypatch


@dataclass
class Outcome:
    success: bool
    failed_step: str | None
    error: str
    hint: str  # the report's "What to do" (or the fix Dagster shows for a resource that could not start)
    report: str = ""
    meta: dict = field(default_factory=dict)


def launch(instance, key: str | None = "1", window: dict | None = None, *, config: dict | None = None) -> Outcome:
    """One run as the code location makes it (resource from the environment), and what the operator reads."""
    get_settings.cache_clear()  # settings are read when a run starts
    if key is not None:
        instance.add_dynamic_partitions(configured_models_partitions.name, [key])
    result = dhis2_chap_prediction.execute_in_process(
        partition_key=key, instance=instance,
        resources={"dhis2": dhis2_resource_definition()},
        run_config=config if config is not None else {"ops": {"probe_covariates": {"config": window or {}}}},
        raise_on_error=False,
    )
    [init_failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RESOURCE_INIT_FAILURE) or [None]
    if init_failure is not None:  # no step ran: the run's own error carries the fix (core/run_cause.py reads it)
        text = init_failure.dagster_event.event_specific_data.error.to_string()
        error, _, hint = text.partition("What to do: ")
        return Outcome(result.success, None, error, hint)
    records = [r for r in instance.fetch_materializations(report_asset_key, limit=1).records
               if r.run_id == result.run_id]
    if not records:  # a run without a partition writes no report: the step's failure carries the fix
        [failure] = [e for e in result.all_events if e.is_step_failure]
        facts = failure.step_failure_data.user_failure_data.metadata
        return Outcome(result.success, failure.step_key, facts["error"].value, facts["hint"].value)
    meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    assert PASSWORD not in meta["report"]
    return Outcome(result.success, meta.get("failed_step") or None, meta.get("error") or "", meta.get("hint") or "",
                   meta["report"], meta)


def healthy_setup(sb: Sandbox, **fields) -> int:
    """A configured model with fresh covariates and org units that all have geometry."""
    units = [u for u in sb.world.ou_ids if u != sb.world.no_geometry_ou]
    base = dict(name="Healthy", periodType="month", orgUnits=units,
                covariateSources=sources(),
                scheduleCronExpression="0 6 * * 1", scheduleEnabled=True,
                quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_MEDIAN}])
    return sb.chap.add_setup(base | fields)["id"]


def sources(cases: str = DE_CASES, rain: str = DE_RAIN) -> list[dict]:
    """A configured model's covariates: its data elements for disease_cases and rainfall."""
    return [{"covariate": "disease_cases", "dataElementId": cases}, {"covariate": "rainfall", "dataElementId": rain}]


def change_setup(sb: Sandbox, setup_id: int, **fields) -> None:
    """An edit of the configured model in chap (the advice's "fix … in chap")."""
    sb.chap.add_setup(sb.chap.setups[setup_id] | fields)


# ---- runs: the failure, its advice, the advice followed ------------------------------------------------------


@dataclass(frozen=True)
class RunCase:
    """``induce`` sets the failure up and returns the launch arguments; ``follow`` carries out the advice
    (given the failed outcome) and returns the launch arguments of the next run."""

    id: str
    induce: Callable[[Sandbox, pytest.MonkeyPatch], dict]
    step: str | None  # where the run fails (None: before any step, at resource start)
    advice: str  # words of the advice the operator must see
    follow: Callable[[Sandbox, pytest.MonkeyPatch, Outcome], dict]


def _stale_rain(sb, env):
    sb.make_stale(DE_RAIN, 20)  # no rainfall within LAST_12_MONTHS
    return {}


def _import_rain(sb, env, failed):
    sb.make_stale(DE_RAIN, -20)  # the missing values imported into DHIS2
    return {}


def _end_where_rain_ends(sb, env, failed):
    """end_mode offset, back to the last month with rainfall (as DHIS2's data entry shows it)."""
    from dhis2_sandbox import periods as P

    back = P.index_of("month", sb.world.today) - sb.world.data_elements[DE_RAIN].last
    return {"window": {"end_mode": "offset", "end_period_offset": back}}


def _closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _raise_to_the_estimate(sb, env, failed):
    [estimate] = re.findall(r"fetch up to ([\d,]+) analytics rows", failed.error)
    env.setenv("CHAP_SCHEDULER_ROW_BUDGET", estimate.replace(",", ""))  # raised just enough
    return {}


def _slow_model(sb, env):
    # 3 s against a 0.3 s timeout: on a loaded machine the steps between the POST and the first look
    # took over a second, and a 1 s job had already ended.
    sb.chap.job_seconds = 3.0
    env.setenv("CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS", "0.3")
    return {}


def _short_fixed_window(sb, env):
    start = sb.chap.setups[1]["startPeriod"]
    end = f"{int(start[:4]) + 1}-{start[4:]}-01"  # 13 months from the start: chap's job refuses to train
    return {"window": {"end_mode": "fixed", "end_date": end}}


def _the_yaml_of_the_advice(sb, env, failed):
    [snippet] = re.findall(r"```yaml\n(.*?)\n```", failed.hint, re.S)
    return {"config": yaml.safe_load(snippet)}


# Cases and rainfall only (both up to last month): the forecast reaches two months ahead.
SHORT_RUN = {"key": "9", "window": {"end_mode": "offset", "end_period_offset": 1}}


def _forecast_into_a_short_data_set(sb, env):
    sb.chap.add_setup(id=9, name="short", periodType="month",
                      quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_SHORT}])
    return SHORT_RUN


def _open_future_periods(sb, data_set: str, periods: int) -> None:
    """The data set's openFuturePeriods, as set in DHIS2's maintenance app."""
    [ds] = [d for d in sb.world.data_sets if d["id"] == data_set]
    ds["openFuturePeriods"] = periods


def _remember_start(sb) -> bool:
    sb.start_before = sb.chap.setups[1]["startPeriod"]
    return True


class _DeletedBeforeRead(dict):
    """chap's prediction values, where the first prediction read is deleted in chap just before (once)."""

    def __init__(self, chap, entries):
        super().__init__(entries)
        self.chap, self.armed = chap, True

    def get(self, pid, default=None):
        if self.armed and pid in self:
            self.armed = False
            del self[pid], self.chap.predictions[pid]  # deleted in chap's Modeling app
        return super().get(pid, default)


def _delete_the_prediction_before_its_values_are_read(sb, env):
    env.setattr(sb.chap, "_prediction_entries", _DeletedBeforeRead(sb.chap, sb.chap._prediction_entries))
    return {}


def _window_before_the_start(sb, env):
    return {"window": {"end_mode": "fixed", "end_date": "2001-01-01"}}


RUN_CASES = [
    RunCase("invalid launch config (InvalidRunConfig)",
            lambda sb, env: {"window": {"end_mode": "offset"}},
            "probe_covariates", "Fix ops.probe_covariates.config in the launchpad",
            lambda sb, env, f: {"window": {"end_mode": "offset", "end_period_offset": 3}}),
    RunCase("window that ends before the model's start (run_window)",
            _window_before_the_start,
            "probe_covariates", "Choose another end (end_mode fixed/offset)",
            lambda sb, env, f: {"window": {"end_mode": "offset", "end_period_offset": 3}}),
    RunCase("wrong DHIS2 password (Dhis2AuthFailed)",
            lambda sb, env: env.setenv("DHIS2_PASSWORD", "not-the-password") or {},
            "probe_covariates", "Check DHIS2_USERNAME and DHIS2_PASSWORD",
            lambda sb, env, f: env.setenv("DHIS2_PASSWORD", PASSWORD) or {}),
    RunCase("DHIS2 not reachable (Dhis2Unreachable)",
            lambda sb, env: env.setenv("DHIS2_BASE_URL", _closed_port()) or {},
            "probe_covariates", "Check DHIS2_BASE_URL and that DHIS2 is up",
            lambda sb, env, f: env.setenv("DHIS2_BASE_URL", sb.base_url) or {}),
    RunCase("DHIS2_BASE_URL not the DHIS2 root (dhis2 404 system_info)",
            lambda sb, env: env.setenv("DHIS2_BASE_URL", sb.base_url + "/dhis") or {},
            "probe_covariates", "Set DHIS2_BASE_URL to the DHIS2 root",
            lambda sb, env, f: env.setenv("DHIS2_BASE_URL", sb.base_url) or {}),
    RunCase("DHIS2 variable missing (MissingVariable)",
            lambda sb, env: env.delenv("DHIS2_PASSWORD") or {},
            None, "Set DHIS2_PASSWORD in the environment of the code location",
            lambda sb, env, f: env.setenv("DHIS2_PASSWORD", PASSWORD) or {}),
    RunCase("{env: …} in the launch config (CredentialsRefused)",
            lambda sb, env: {"config": {"ops": {"probe_covariates": {"config": {
                "end_mode": "fixed", "end_date": {"env": "DHIS2_PASSWORD"}}}}}},
            None, "Remove the {env: ...} entries from the launch config",
            lambda sb, env, f: {"config": {"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}}}),
    RunCase("chap-core down behind the route (chap 502)",
            lambda sb, env: setattr(sb.faults, "route_down", True) or {},
            "probe_covariates", "Check that chap-core is running",
            lambda sb, env, f: setattr(sb.faults, "route_down", False) or {}),
    RunCase("no route 'chap' in DHIS2 (ChapRouteMissing)",
            lambda sb, env: setattr(sb, "route_present", False) or {},
            "probe_covariates", "Create a DHIS2 route with code 'chap'",
            lambda sb, env, f: setattr(sb, "route_present", True) or {}),
    RunCase("user may not run the route (dhis2 403 on the route)",
            lambda sb, env: (setattr(sb, "route_authorities", ["M_chap_route"]),
                             setattr(sb, "user_authorities", ["F_VIEW_EVENT_ANALYTICS"])) and {},
            "probe_covariates", "Add one of the route's authorities to the DHIS2 user",
            lambda sb, env, f: sb.user_authorities.append("M_chap_route") or {}),
    RunCase("no covariate data in the last periods (CovariateDataMissing)",
            _stale_rain, "probe_covariates", "import the data into DHIS2",
            _import_rain),
    RunCase("no covariate data in the last periods, the end chosen (CovariateDataMissing)",
            _stale_rain, "probe_covariates", "ending at or before the last period that has data for it",
            _end_where_rain_ends),
    RunCase("over the row budget (RowBudgetExceeded)",
            lambda sb, env: env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "100") or {},
            "fetch_analytics", "Raise CHAP_SCHEDULER_ROW_BUDGET",
            _raise_to_the_estimate),
    RunCase("a slow model (ChapJobTimeout)",
            _slow_model, "await_prediction", "Raise CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS if the model is slow",
            lambda sb, env, f: env.setenv("CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS", "30") or {}),
    RunCase("POST answer lost, nothing created (ChapPredictionNotCreated)",
            lambda sb, env: (env.setenv("CHAP_SCHEDULER_RECONCILE_SECONDS", "0.3"),
                             sb.faults.update({"chap_post": "not_created"})) and {},
            "submit_prediction", "Launching again is safe",
            lambda sb, env, f: {}),
    RunCase("a fixed window too short to train on (job failure, end_mode fixed)",
            _short_fixed_window, "await_prediction", "launch with the latest end instead",
            _the_yaml_of_the_advice),
    RunCase("DHIS2 overloaded: every attempt answers 503 (dhis2 503)",
            lambda sb, env: setattr(sb.faults, "fail_next", 4) or {},  # CHAP_SCHEDULER_HTTP_GET_ATTEMPTS
            "probe_covariates", "Try again later",
            lambda sb, env, f: {}),  # later: the fault has passed
    RunCase("DHIS2 slower than the HTTP timeout (Dhis2Unreachable, timeout)",
            lambda sb, env: (setattr(sb.faults, "slow_seconds", 0.1),
                             env.setenv("CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS", "0.03")) and {},
            "probe_covariates", "raise CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS",
            lambda sb, env, f: env.setenv("CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS", "10") or {}),
    RunCase("one covariate's data element DHIS2 does not have (CovariateDataMissing)",
            lambda sb, env: change_setup(sb, 1, covariateSources=sources(rain="deNoSuchEl1")) or {},
            "probe_covariates", "fix the covariate's data element in chap's configured model",
            lambda sb, env, f: change_setup(sb, 1, covariateSources=sources()) or {}),
    RunCase("publishing: org units outside the user's capture org units (target preflight)",
            lambda sb, env: setattr(sb, "capture_roots", ["SomewhereEl"]) or {},
            "publish_forecasts", "Give the scheduler's DHIS2 user a data capture org unit above them",
            lambda sb, env, f: setattr(sb, "capture_roots", [ROOT_OU]) or {}),
    RunCase("publishing: a target data element DHIS2 does not have (target preflight)",
            lambda sb, env: change_setup(sb, 1, quantileTargets={"median": DE_PRED_MEDIAN,
                                                                 "quantile_high": "deNotThere"}) or {},
            "publish_forecasts", "fix the target in chap",
            lambda sb, env, f: change_setup(sb, 1, quantileTargets={"median": DE_PRED_MEDIAN,
                                                                    "quantile_high": DE_PRED_HIGH}) or {}),
    RunCase("publishing: periods past the data set's open future periods (conflict E7641)",
            _forecast_into_a_short_data_set,
            "publish_forecasts", "set the data set's openFuturePeriods to at least the horizon",
            lambda sb, env, f: _open_future_periods(sb, DS_SHORT, get_settings().horizon_month) or SHORT_RUN),
    RunCase("no covariate's data element exists in DHIS2 (dhis2 409 E7124 on analytics)",
            lambda sb, env: change_setup(sb, 1, covariateSources=sources("deNoSuchEl2", "deNoSuchEl1")) or {},
            "probe_covariates", "check the configured model's data element ids in chap against DHIS2",
            lambda sb, env, f: change_setup(sb, 1, covariateSources=sources()) or {}),
    RunCase("org units that all lack geometry (no usable values)",
            lambda sb, env: change_setup(sb, 1, orgUnits=[sb.world.no_geometry_ou]) or {},
            "fetch_analytics", "geometry",
            lambda sb, env, f: sb.world.import_geometry(sb.world.no_geometry_ou) or {}),
    RunCase("a period type chap's model has that cannot be scheduled",
            lambda sb, env: change_setup(sb, 1, periodType="fortnight") or {},
            "probe_covariates", "recreate the configured model in chap with one of these period types",
            lambda sb, env, f: change_setup(sb, 1, periodType="month") or {}),
    RunCase("a configured model without a start period",
            lambda sb, env: _remember_start(sb) and change_setup(sb, 1, startPeriod=None) or {},
            "probe_covariates", "Recreate the configured model in chap from a dataset that has periods",
            lambda sb, env, f: change_setup(sb, 1, startPeriod=sb.start_before) or {}),
    RunCase("a configured model with an unusable start period",
            lambda sb, env: _remember_start(sb) and change_setup(sb, 1, startPeriod="the start") or {},
            "probe_covariates", "Fix the configured model in chap",
            lambda sb, env, f: change_setup(sb, 1, startPeriod=sb.start_before) or {}),
    RunCase("a partition key that is no chap id",
            lambda sb, env: {"key": "malaria"},
            "probe_covariates", "pick one the discovery sensor added",
            lambda sb, env, f: {"key": "1"}),
    RunCase("a configured model chap does not have (PredictionSetupNotFound)",
            lambda sb, env: {"key": "77"},
            "probe_covariates", "launch a partition chap has",
            lambda sb, env, f: {"key": "1"}),
    RunCase("the prediction deleted in chap before its values are read (chap 404 on prediction_values)",
            _delete_the_prediction_before_its_values_are_read,
            "await_prediction", "launch the run again",
            lambda sb, env, f: {}),
    RunCase("no partition (run without a configured model)",
            lambda sb, env: {"key": None},
            "probe_covariates", "Pick a configured model (partition) in the launchpad",
            lambda sb, env, f: {"key": "1"}),
]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c.id for c in RUN_CASES])
def test_the_advice_followed_gets_the_run_past_the_failure(case: RunCase, env, sb, instance):
    failed = launch(instance, **case.induce(sb, env))
    assert not failed.success and failed.failed_step == case.step, (failed.error, failed.report)
    assert case.advice in failed.hint, failed.hint
    assert PASSWORD not in failed.error + failed.hint

    followed = launch(instance, **case.follow(sb, env, failed))
    assert followed.success, (followed.error, followed.hint, followed.report)
    assert followed.meta["status"] in ("succeeded", "succeeded with warnings")


def test_after_a_lost_post_launching_again_makes_one_prediction(env, sb, instance):
    """"Launching again is safe: it cannot make a duplicate": the sandbox's chap really has one job after it."""
    env.setenv("CHAP_SCHEDULER_RECONCILE_SECONDS", "0.3")
    sb.faults.update({"chap_post": "not_created"})
    failed = launch(instance)
    assert "Launching again is safe" in failed.hint and sb.chap.jobs == {}
    assert launch(instance).success and len(sb.chap.jobs) == 1



def test_a_failed_publish_is_republished_as_its_advice_says(env, sb, instance):
    """"… republish when DHIS2 is healthy. Then publish prediction N again without predicting: launch job
    publish_chap_forecast for partition P with ops.republish_forecast.config.prediction_id: N"."""
    from chap_scheduler_dagster.definitions import defs

    sb.faults.datavalues_fail_next = 1  # DHIS2 fails the write once
    failed = launch(instance)
    assert failed.failed_step == "publish_forecasts" and "republish when DHIS2 is healthy" in failed.hint
    [(job, key, field_path, prediction)] = re.findall(
        r"launch job (\w+) for partition (\w+) with ([\w.]+): (\d+)", failed.hint)
    ops, op, _, name = field_path.split(".")
    result = defs.resolve_job_def(job).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False,
        run_config={ops: {op: {"config": {name: int(prediction)}}}},
    )
    assert result.success
    assert sb.data_values.values and len(sb.chap.jobs) == 1  # written, without a second prediction

def test_republishing_another_models_prediction_is_launched_for_its_partition_as_its_advice_says(env, sb, instance):
    """"Launch publish_chap_forecast for partition P, or give a prediction of M": the partition it names."""
    from chap_scheduler_dagster.definitions import defs

    made = launch(instance, "1")
    prediction = int(made.meta["prediction_id"])
    sb.data_values.values.clear()
    job = defs.resolve_job_def("publish_chap_forecast")
    config = {"ops": {"republish_forecast": {"config": {"prediction_id": prediction}}}}
    instance.add_dynamic_partitions(configured_models_partitions.name, ["2"])
    wrong = job.execute_in_process(partition_key="2", instance=instance, raise_on_error=False, run_config=config)
    assert not wrong.success and not sb.data_values.values
    [failure] = [e for e in wrong.all_events if e.is_step_failure]
    hint = failure.step_failure_data.user_failure_data.metadata["hint"].value
    [(named_job, key)] = re.findall(r"Launch (\w+) for partition (\w+)", hint)

    right = defs.resolve_job_def(named_job).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False, run_config=config)
    assert right.success and key == "1"
    assert sb.data_values.values and len(sb.chap.jobs) == 1  # published, without a second prediction


def test_a_run_terminated_before_chap_was_asked_is_launched_again_as_its_advice_says(env, sb, instance):
    """"Nothing is running in chap for this run. Launch it again when ready": chap has no job; the plain
    relaunch makes the one prediction."""
    from chap_scheduler_dagster.core import prediction_steps

    fetch_data = prediction_steps.fetch_data

    def terminated_once(*args, **kwargs):  # what Dagster raises in the step when the run is terminated
        env.setattr(prediction_steps, "fetch_data", fetch_data)
        raise dg.DagsterExecutionInterruptedError()

    env.setattr(prediction_steps, "fetch_data", terminated_once)
    stopped = launch(instance)
    assert stopped.meta["status"] == "canceled" and stopped.failed_step == "fetch_analytics", stopped.report
    assert "Launch it again when ready" in stopped.hint and "Nothing is running in chap" in stopped.hint
    assert sb.chap.jobs == {}

    again = launch(instance)
    assert again.success and again.meta["status"] in ("succeeded", "succeeded with warnings")
    assert len(sb.chap.jobs) == 1


def test_a_timed_out_write_names_the_wait_to_exceed_and_a_longer_wait_gets_through(sb):
    """The write-timeout advice, in part: "raise … above N (the seconds this write waited)". Production writes
    wait at least 120 s, too long for a test, so the writer's own wait stands in for the setting here."""
    from chap_scheduler_dagster.core.dhis2_import import Dhis2Writer
    from chap_scheduler_dagster.core.errors import Dhis2Unreachable

    body = b'{"dataValues": []}'
    sb.faults.slow_seconds = 0.2  # DHIS2 slow on dataValueSets
    with Dhis2Writer(sb.base_url, username="admin", password=PASSWORD, timeout_seconds=0.05) as writer:
        with pytest.raises(Dhis2Unreachable) as failed:
            writer.post_data_values(body, dry_run=False)
    [wait] = re.findall(r"raise CHAP_SCHEDULER_HTTP_TIMEOUT_SECONDS above ([\d.]+)", failed.value.hint)
    assert float(wait) == 0.05 and "then republish" in failed.value.hint
    with Dhis2Writer(sb.base_url, username="admin", password=PASSWORD, timeout_seconds=float(wait) * 20) as writer:
        assert writer.post_data_values(body, dry_run=False) is not None


# ---- preflight (`chap-scheduler-run check`): the finding, its fix, the fix carried out --------------------------


@dataclass(frozen=True)
class CheckCase:
    """``induce`` returns the configured model to check (or None); the check named ``check`` (``{m}``: that
    model) then has ``status`` and a fix containing ``fix``; after ``follow`` it is OK."""

    id: str
    induce: Callable[[Sandbox, pytest.MonkeyPatch], int | None]
    check: str
    status: str
    fix: str
    follow: Callable[[Sandbox, pytest.MonkeyPatch, int | None], None]


def checks_of(model: int | None) -> list:
    """`chap-scheduler-run check [model]` (which also reads the .env of the current folder)."""
    get_settings.cache_clear()
    return run_preflight(os.environ, open_reader=open_reader, open_chap=open_chap,
                         model_ids=[str(model)] if model is not None else [], dotenv=default_dotenv()).checks


def fix_of(model: int | None, name: str) -> str:
    return " ".join(c.fix for c in checks_of(model) if c.name == name)


def _route_with(sb, env, **fields):
    """The route 'chap' as DHIS2's Route Manager leaves it after editing these fields."""
    route = sb.route_object() | fields
    env.setattr(sb, "route_object", lambda: route)


def _no_models(sb, env):
    for sid in list(sb.chap.setups):
        sb.chap.remove_setup(sid)


def _advised_timeout(sb, env, model):
    [seconds] = re.findall(r"responseTimeoutSeconds to (\d+)", fix_of(model, "route chap"))
    _route_with(sb, env, responseTimeoutSeconds=int(seconds))


def _target(sb, model, element):
    change_setup(sb, model, quantileTargets=[{"quantile": "0.5", "dataElementId": element}])


def bad_target(id: str, quantile: str, element: str, fix: str, good: str = DE_PRED_MEDIAN) -> CheckCase:
    """A model whose one quantile target is wrong; the fix, followed, points it at ``good``."""
    return CheckCase(id, lambda sb, env: healthy_setup(sb, quantileTargets=[
                         {"quantile": quantile, "dataElementId": element}]),
                     "model {m}: quantile targets", ERROR, fix, lambda sb, env, m: _target(sb, m, good))


def _export_dotenv(sb, env, model):
    """`set -a; . ./.env; set +a`."""
    for line in open(".env").read().splitlines():
        name, _, value = line.partition("=")
        env.setenv(name, value)


def _dotenv_beside_the_environment(sb, env):
    """DHIS2 variables in the environment, and one more only in .env."""
    open(".env", "w").write(f"DHIS2_ALLOWED_ORIGINS={sb.base_url}\n")


def _remove_dotenv_lines(sb, env, model):
    """Remove them from .env (here: its only line)."""
    os.remove(".env")


CHECK_CASES = [
    CheckCase("DHIS2 variables in the environment and .env, exported", _dotenv_beside_the_environment,
              "DHIS2 environment", WARNING, "Export them too", _export_dotenv),
    CheckCase("DHIS2 variables in the environment and .env, removed from .env", _dotenv_beside_the_environment,
              "DHIS2 environment", WARNING, "or remove them from .env", _remove_dotenv_lines),
    CheckCase("DHIS2 variables only in .env",
              lambda sb, env: (env.delenv("DHIS2_PASSWORD"), open(".env", "w").write(f"DHIS2_PASSWORD={PASSWORD}\n"))
              and None,
              "DHIS2 environment", ERROR, "export them (set -a; . ./.env; set +a)", _export_dotenv),
    CheckCase("a configured model that maps no covariate", lambda sb, env: healthy_setup(sb, covariateSources=[]),
              "model {m}: data elements", ERROR, "Recreate the configured model in chap with its covariates",
              lambda sb, env, m: change_setup(sb, m, covariateSources=sources())),
    CheckCase("a configured model without org units", lambda sb, env: healthy_setup(sb, orgUnits=[]),
              "model {m}: org units", ERROR, "Recreate the configured model in chap with org units",
              lambda sb, env, m: change_setup(sb, m, orgUnits=sb.world.ou_ids[:3])),
    CheckCase("a quantile target without a data element", lambda sb, env: healthy_setup(sb, quantileTargets={
                  "median": ""}),
              "model {m}: quantile targets", ERROR, "Edit the prediction setup's quantileTargets in chap",
              lambda sb, env, m: _target(sb, m, DE_PRED_MEDIAN)),
    bad_target("a quantile outside 0..1", "50", DE_PRED_MEDIAN, "Quantiles are fractions: 0.5 is the median"),
    CheckCase("a weekly model's target in a monthly data set",
              lambda sb, env: change_setup(sb, 2, quantileTargets=[
                  {"quantile": "0.5", "dataElementId": DE_PRED_MEDIAN}]) or 2,
              "model {m}: quantile targets", ERROR, "Use a data element whose data sets have the configured model's "
              "period type", lambda sb, env, m: _target(sb, m, DE_PRED_WEEKLY_MEDIAN)),
    CheckCase("a setting that does not parse", lambda sb, env: env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "lots"),
              "settings", ERROR, "an empty value means the default",
              lambda sb, env, m: env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "")),
    CheckCase("a time zone that is not one",
              lambda sb, env: env.setenv("CHAP_SCHEDULER_SCHEDULE_TIMEZONE", "Mars/Base"),
              "settings", ERROR, "Use an IANA time zone name such as UTC",
              lambda sb, env, m: env.setenv("CHAP_SCHEDULER_SCHEDULE_TIMEZONE", "Africa/Freetown")),
    CheckCase("DHIS2 variables not set", lambda sb, env: env.delenv("DHIS2_PASSWORD"),
              "DHIS2 environment", ERROR, "Set them in the environment of the code location",
              lambda sb, env, m: env.setenv("DHIS2_PASSWORD", PASSWORD)),
    CheckCase("wrong password", lambda sb, env: env.setenv("DHIS2_PASSWORD", "not-the-password"),
              "DHIS2 credentials", ERROR, "Check DHIS2_USERNAME and DHIS2_PASSWORD",
              lambda sb, env, m: env.setenv("DHIS2_PASSWORD", PASSWORD)),
    CheckCase("DHIS2 not reachable", lambda sb, env: env.setenv("DHIS2_BASE_URL", _closed_port()),
              "DHIS2", ERROR, "Check DHIS2_BASE_URL",
              lambda sb, env, m: env.setenv("DHIS2_BASE_URL", sb.base_url)),
    CheckCase("no route 'chap'", lambda sb, env: setattr(sb, "route_present", False),
              "route chap", ERROR, "Create a DHIS2 route with code 'chap'",
              lambda sb, env, m: setattr(sb, "route_present", True)),
    CheckCase("route disabled", lambda sb, env: _route_with(sb, env, disabled=True),
              "route chap", ERROR, "Enable it in DHIS2 (disabled: false)",
              lambda sb, env, m: _route_with(sb, env, disabled=False)),
    CheckCase("user may not run the route",
              lambda sb, env: (setattr(sb, "route_authorities", ["M_chap_route"]),
                               setattr(sb, "user_authorities", ["F_VIEW_EVENT_ANALYTICS"])) and None,
              "route chap", ERROR, "Give the DHIS2 user a role with one of these authorities",
              lambda sb, env, m: sb.user_authorities.append("M_chap_route")),
    CheckCase("route timeout short", lambda sb, env: _route_with(sb, env, responseTimeoutSeconds=5),
              "route chap", WARNING, "Raise the route's responseTimeoutSeconds to", _advised_timeout),
    CheckCase("chap-core down behind the route", lambda sb, env: setattr(sb.faults, "route_down", True),
              "chap-core", ERROR, "Check that chap-core is running",
              lambda sb, env, m: setattr(sb.faults, "route_down", False)),
    CheckCase("chap has no configured models", _no_models,
              "configured models", ERROR, "Create one in chap",
              lambda sb, env, m: healthy_setup(sb) and None),
    CheckCase("a covariate's data element DHIS2 does not have",
              lambda sb, env: healthy_setup(sb, covariateSources=sources(rain="deNoSuchEl1")),
              "model {m}: data elements", ERROR, "Fix the covariate's data element in chap's configured model",
              lambda sb, env, m: change_setup(sb, m, covariateSources=sources())),
    CheckCase("a covariate without recent data", lambda sb, env: sb.make_stale(DE_RAIN, 20) or healthy_setup(sb),
              "model {m}: covariate freshness", ERROR, "import the data into DHIS2",
              lambda sb, env, m: sb.make_stale(DE_RAIN, -20)),
    CheckCase("a covariate that lags", lambda sb, env: healthy_setup(sb, covariateSources=[
                  {"covariate": "disease_cases", "dataElementId": DE_CASES},
                  {"covariate": "mean_temperature", "dataElementId": DE_TEMP}]),  # lags 2 months by design
              "model {m}: covariate freshness", WARNING, "Import the newer values into DHIS2",
              lambda sb, env, m: sb.make_stale(DE_TEMP, -2)),
    CheckCase("org units DHIS2 does not have", lambda sb, env: healthy_setup(sb, orgUnits=[
                  *sb.world.ou_ids[:2], "ouGhost0001"]),
              "model {m}: org units", ERROR, "Fix the org units of the configured model in chap",
              lambda sb, env, m: change_setup(sb, m, orgUnits=[
                  u for u in sb.world.ou_ids[:3] if u != sb.world.no_geometry_ou])),
    CheckCase("no org unit has geometry", lambda sb, env: healthy_setup(sb, orgUnits=[sb.world.no_geometry_ou]),
              "model {m}: org units", ERROR, "Import org-unit boundaries into DHIS2",
              lambda sb, env, m: sb.world.import_geometry(sb.world.no_geometry_ou)),
    CheckCase("some org units without geometry, boundaries added",
              lambda sb, env: healthy_setup(sb, orgUnits=list(sb.world.ou_ids)),
              "model {m}: org units", WARNING, "Add their boundaries in DHIS2",
              lambda sb, env, m: sb.world.import_geometry(sb.world.no_geometry_ou)),
    CheckCase("some org units without geometry, removed",
              lambda sb, env: healthy_setup(sb, orgUnits=list(sb.world.ou_ids)),
              "model {m}: org units", WARNING, "or remove them from the configured model",
              lambda sb, env, m: change_setup(sb, m, orgUnits=[
                  u for u in sb.world.ou_ids if u != sb.world.no_geometry_ou])),
    CheckCase("window over the row budget", lambda sb, env: env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "100") or 1,
              "model {m}: window", ERROR, "raise CHAP_SCHEDULER_ROW_BUDGET if intended",
              lambda sb, env, m: env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "5000000")),
    CheckCase("window over the period cap", lambda sb, env: env.setenv("CHAP_SCHEDULER_PERIOD_CAP", "12") or 1,
              "model {m}: window", ERROR, "raise CHAP_SCHEDULER_PERIOD_CAP",
              lambda sb, env, m: env.setenv("CHAP_SCHEDULER_PERIOD_CAP", "120")),
    CheckCase("a cron chap cannot use", lambda sb, env: healthy_setup(sb, scheduleCronExpression="61 * * * *"),
              "model {m}: chap schedule", ERROR, "Fix scheduleCronExpression in chap",
              lambda sb, env, m: change_setup(sb, m, scheduleCronExpression="0 6 * * 1")),
    bad_target("a quantile target DHIS2 does not have", "0.9", "deNoTarget1", "fix the target in chap", DE_PRED_HIGH),
    bad_target("a quantile target that takes no decimals", "0.5", DE_PRED_INTEGER,
               "Use a data element of value type NUMBER"),
    bad_target("a quantile label chap's vocabulary does not have", "middle", DE_PRED_MEDIAN,
               "set the target's quantile to a number between 0 and 1"),
    CheckCase("two targets on one data element", lambda sb, env: healthy_setup(sb, quantileTargets=[
                  {"quantile": "0.5", "dataElementId": DE_PRED_MEDIAN},
                  {"quantile": "0.9", "dataElementId": DE_PRED_MEDIAN}]),
              "model {m}: quantile targets", ERROR, "Give each quantile its own data element",
              lambda sb, env, m: change_setup(sb, m, quantileTargets=[
                  {"quantile": "0.5", "dataElementId": DE_PRED_MEDIAN},
                  {"quantile": "0.9", "dataElementId": DE_PRED_HIGH}])),
    CheckCase("a target data set with too few open future periods",
              lambda sb, env: healthy_setup(sb, quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_SHORT}]),
              "model {m}: quantile targets", WARNING, "to at least",
              lambda sb, env, m: _open_future_periods(sb, DS_SHORT, int(re.findall(
                  r"to at least (\d+)", fix_of(m, f"model {m}: quantile targets"))[0]))),
    CheckCase("a target that does not store zeros",
              lambda sb, env: healthy_setup(sb, quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_NOZERO}]),
              "model {m}: quantile targets", WARNING, "Set 'Store zero data values' (zeroIsSignificant)",
              lambda sb, env, m: setattr(sb.world.data_elements[DE_PRED_NOZERO], "zero_is_significant", True)),
    CheckCase("org units outside the user's capture org units",
              lambda sb, env: setattr(sb, "capture_roots", ["noSuchRoot1"]) or healthy_setup(sb),
              "model {m}: quantile targets", ERROR,
              "Give the scheduler's DHIS2 user a data capture org unit above them",
              lambda sb, env, m: setattr(sb, "capture_roots", [ROOT_OU])),
]


@pytest.mark.parametrize("case", CHECK_CASES, ids=[c.id for c in CHECK_CASES])
def test_the_fix_followed_passes_the_check(case: CheckCase, env, sb):
    model = case.induce(sb, env)
    name = case.check.format(m=model)
    [found] = [c for c in checks_of(model) if c.name == name and case.fix in c.fix]
    assert found.status == case.status, (found.finding, found.fix)

    case.follow(sb, env, model)
    after = checks_of(model)
    # A check that only speaks up on a problem ("configured models") is gone; the others are OK.
    assert all(c.status == OK for c in after if c.name == name), [c for c in after if c.name == name]
    assert all(c.status != ERROR for c in after), [c for c in after if c.status == ERROR]


# ---- a run stopped while chap works: "check the job first, then re-execute from await_prediction" ---------------


def prediction_job():
    """The job as the code location defines it (for re-execution, which rebuilds it by reference)."""
    from chap_scheduler_dagster.definitions import defs

    return defs.resolve_job_def("dhis2_chap_prediction")


def test_the_canceled_runs_advice_checks_the_job_and_reexecution_keeps_the_prediction(env, sb, tmp_path):
    from chap_scheduler_dagster.core.cancellation import cancellation_facts

    env.setenv("CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS", "0.5")
    sb.faults.chap_job = "hang"  # the run stops while chap still works on the job
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        stopped = launch(instance)
        job_id = stopped.meta["job_id"]
        assert stopped.failed_step == "await_prediction" and job_id and len(sb.chap.jobs) == 1
        _, hint = cancellation_facts("await_prediction", job_id, sb.base_url)  # what a terminated run says

        # "Check the job first: GET … shows its status" — as the code location's DHIS2 user.
        [url] = re.findall(r"GET (\S+/v1/jobs/\S+) \(as the DHIS2 user", hint)
        answer = httpx.get(url, auth=("admin", PASSWORD), timeout=10)
        assert answer.status_code == 200 and "STARTED" in answer.text

        # chap finishes it; "re-execute this run from await_prediction … it waits on the same job".
        assert "re-execute this run from await_prediction" in hint
        sb.chap.jobs[job_id].outcome = "ok"
        parent = instance.get_run_by_id(stopped.meta["run_id"])
        child = dg.execute_job(  # the UI's Re-execute → From failure carries the parent's tags (its partition)
            dg.reconstructable(prediction_job), instance=instance, raise_on_error=False, tags=parent.tags,
            reexecution_options=dg.ReexecutionOptions.from_failure(stopped.meta["run_id"], instance),
        )
        assert child.success
        assert len(sb.chap.jobs) == 1  # "sends nothing to chap": still the one job
        [record] = [r for r in instance.fetch_materializations(report_asset_key, limit=10).records
                    if r.run_id == child.run_id]
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        assert meta["job_id"] == job_id and meta["prediction_id"] != ""
