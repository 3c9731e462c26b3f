"""Preflight (``chap-scheduler-run check``, ``info``, ``--version``, job ``check_connections``) against the sandbox.

Every check has a pass and a fail path here, over real loopback HTTP. The sandbox's user has
a password and a token that must never appear in any output; the last tests scan for them.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

import dagster as dg
import jsonschema
import pytest

from chap_scheduler_dagster import cli
from chap_scheduler_dagster.core.preflight import ERROR, OK, WARNING, Preflight, render_text, run_preflight
from chap_scheduler_dagster.defs.health import (
    check_connections,
    health_asset_key,
    instance_checks,
    open_chap,
    open_reader,
)
from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox.world import DE_CASES, DE_PRED_MEDIAN, DE_RAIN, DE_TEMP, DataElement

PASSWORD = "Pw-9f3kq-preflight-SECRET"
TOKEN = "d2pat_PreflightSecretToken000000000000"
WRONG_PASSWORD = "Wrong-7xq2-preflight-SECRET"
SECRETS = (PASSWORD, TOKEN, WRONG_PASSWORD)

# What `check --json` promises monitoring: one document, these fields, these words.
CHECK_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "status", "ok", "exit_code", "dhis2_url", "checked_at", "duration_seconds", "counts",
                 "model_seconds", "checks"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "status": {"enum": ["passed", "passed with warnings", "failed"]},
        "ok": {"type": "boolean"},
        "exit_code": {"enum": [0, 1]},
        "dhis2_url": {"type": "string"},
        "checked_at": {"type": "string", "format": "date-time"},
        "duration_seconds": {"type": "number", "minimum": 0},
        "counts": {
            "type": "object",
            "required": ["ok", "warning", "error"],
            "additionalProperties": False,
            "properties": {k: {"type": "integer", "minimum": 0} for k in ("ok", "warning", "error")},
        },
        "model_seconds": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
        "checks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "status", "finding", "fix", "model", "seconds"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "status": {"enum": ["ok", "warning", "error"]},
                    "finding": {"type": "string", "minLength": 1},
                    "fix": {"type": "string"},
                    "model": {"type": "string"},
                    "seconds": {"type": "number", "minimum": 0},
                },
            },
        },
    },
}


@pytest.fixture
def sandbox():
    with Sandbox(SandboxConfig(port=0, password=PASSWORD, token=TOKEN, job_seconds=0.2)) as sb:
        yield sb


@pytest.fixture
def env(monkeypatch, sandbox, tmp_path):
    """A clean environment pointing at the sandbox, in a folder without a .env."""
    for name in list(os.environ):
        if name.startswith(("DHIS2_", "DAGSTER_HOME")) or (
            name.startswith("CHAP_SCHEDULER_") and name != "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS"
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DHIS2_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("DHIS2_USERNAME", "admin")
    monkeypatch.setenv("DHIS2_PASSWORD", PASSWORD)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def preflight(*model_ids: str, instance: dg.DagsterInstance | None = None, daemon: bool = False) -> Preflight:
    return run_preflight(
        os.environ,
        open_reader=open_reader,
        open_chap=open_chap,
        model_ids=model_ids,
        instance_checks=(lambda: instance_checks(instance)) if daemon else None,
    )


def by_name(result: Preflight) -> dict[str, object]:
    return {c.name: c for c in result.checks}


def healthy_setup(sandbox: Sandbox, **fields) -> int:
    """A configured model that passes every check: fresh covariates, org units with geometry, a valid cron."""
    units = [u for u in sandbox.world.ou_ids if u != sandbox.world.no_geometry_ou]
    base = dict(name="Healthy", periodType="month", orgUnits=units,
                startPeriod=sandbox.chap.setups[1]["startPeriod"],
                covariateSources=[{"covariate": "disease_cases", "dataElementId": DE_CASES},
                                  {"covariate": "rainfall", "dataElementId": DE_RAIN}],
                scheduleCronExpression="0 6 * * 1", scheduleEnabled=True,
                quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_MEDIAN}])
    return sandbox.chap.add_setup(base | fields)["id"]


# ---- the whole preflight passes ---------------------------------------------------------------


def test_everything_passes_for_a_healthy_model(env, sandbox):
    model = str(healthy_setup(sandbox))
    result = preflight(model)
    checks = by_name(result)
    assert [c.status for c in result.checks] == [OK] * len(result.checks), render_text(result, unicode=False)
    assert result.exit_code == 0 and result.status_word == "passed"
    assert list(checks) == [
        "settings", "DHIS2 environment", "DHIS2", "DHIS2 credentials", "route chap", "chap-core", "chap-core health",
        *(f"model {model}: {n}" for n in ("loads", "data elements", "covariate freshness", "org units", "window",
                                          "chap schedule", "quantile targets")),
    ]
    assert "DHIS2 2.41.4" in checks["DHIS2"].finding and "clock skew" in checks["DHIS2"].finding
    assert "basic auth works: user 'admin'" in checks["DHIS2 credentials"].finding
    assert "ALL (superuser)" in checks["DHIS2 credentials"].finding
    assert "chap-core 2.5.1" in checks["chap-core"].finding and "prediction-setups" in checks["chap-core"].finding
    assert "db ok" in checks["chap-core health"].finding
    assert "11 org units exist, all with geometry" in checks[f"model {model}: org units"].finding
    window = checks[f"model {model}: window"].finding
    assert "calculated window" in window and "of the budget 5,000,000" in window
    assert "next due" in checks[f"model {model}: chap schedule"].finding
    assert "1 ready to publish: 0.5 -> dePredMed01" in checks[f"model {model}: quantile targets"].finding
    # Reads only: the preflight sends no POST, PUT, PATCH or DELETE.
    assert {method for method, _, _ in sandbox.requests} == {"GET"}


def test_a_token_works_as_well(env, sandbox):
    env.delenv("DHIS2_USERNAME")
    env.delenv("DHIS2_PASSWORD")
    env.setenv("DHIS2_TOKEN", TOKEN)
    checks = by_name(preflight("1"))
    assert checks["DHIS2 credentials"].status == OK
    assert "personal access token works" in checks["DHIS2 credentials"].finding


def test_time_per_model_is_a_fraction_of_a_second_on_the_sandbox(env, sandbox):
    started = time.perf_counter()
    result = preflight()
    total = time.perf_counter() - started
    assert sorted(result.model_seconds) == ["1", "2", "3", "4", "5"]
    assert max(result.model_seconds.values()) < 3.0, result.model_seconds
    assert total < 10.0


# ---- settings and environment -------------------------------------------------------------------


def test_missing_dhis2_variables_and_a_bad_setting_fail_by_name(env, sandbox):
    env.delenv("DHIS2_BASE_URL")
    env.setenv("CHAP_SCHEDULER_PERIOD_CAP", "lots")
    result = preflight()
    checks = by_name(result)
    assert checks["settings"].status == ERROR
    assert "CHAP_SCHEDULER_PERIOD_CAP" in checks["settings"].finding and "lots" not in checks["settings"].finding
    assert checks["DHIS2 environment"].status == ERROR and "DHIS2_BASE_URL" in checks["DHIS2 environment"].finding
    assert "DHIS2" not in checks  # nothing to connect to
    assert result.exit_code == 1


def test_settings_name_the_variables_that_are_set_but_never_their_values(env, sandbox):
    env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "4000000")
    finding = by_name(preflight("1"))["settings"].finding
    assert "CHAP_SCHEDULER_ROW_BUDGET" in finding and "DHIS2_PASSWORD" in finding
    assert "4000000" not in finding and PASSWORD not in finding


def test_a_bad_time_zone_fails_the_settings(env, sandbox):
    env.setenv("CHAP_SCHEDULER_SCHEDULE_TIMEZONE", "Mars/Olympus")
    check = by_name(preflight("1"))["settings"]
    assert check.status == ERROR and "Mars/Olympus" in check.finding


# ---- DHIS2 ----------------------------------------------------------------------------------------


def test_dhis2_not_reachable(env, sandbox):
    sandbox.stop()
    result = preflight()
    check = by_name(result)["DHIS2"]
    assert check.status == ERROR and "could not reach DHIS2" in check.finding and "not run" in check.finding
    assert check.fix and "DHIS2 credentials" not in by_name(result)


def test_wrong_password(env, sandbox):
    env.setenv("DHIS2_PASSWORD", WRONG_PASSWORD)
    result = preflight()
    checks = by_name(result)
    assert checks["DHIS2"].status == OK  # something answers ...
    assert checks["DHIS2 credentials"].status == ERROR  # ... but not to us
    assert "authentication failed for user 'admin'" in checks["DHIS2 credentials"].finding
    assert "DHIS2_PASSWORD" in checks["DHIS2 credentials"].fix
    assert "route chap" not in checks and result.exit_code == 1


def test_login_page(env, sandbox):
    sandbox.faults.html_next = 1  # DHIS2 (or a proxy) answers with its HTML login page
    checks = by_name(preflight())
    assert checks["DHIS2 credentials"].status == ERROR
    assert "login page" in checks["DHIS2 credentials"].finding


def test_clock_skew_warns(env, sandbox, monkeypatch):
    from datetime import datetime, timedelta

    info = sandbox.system_info()
    ahead = datetime.fromisoformat(info["serverDate"]) + timedelta(hours=1)
    monkeypatch.setattr(sandbox, "system_info", lambda: info | {"serverDate": ahead.isoformat(timespec="milliseconds")})
    check = by_name(preflight("4"))["DHIS2"]
    # an hour ahead when served; a loaded machine may take a few seconds to compare it
    assert check.status == WARNING and re.search(r"clock skew \+(3600|35[5-9]\d) s", check.finding), check.finding
    assert "NTP" in check.fix


def test_dhis2_variables_only_in_dotenv_are_named(env, sandbox, tmp_path):
    env.delenv("DHIS2_PASSWORD")
    (tmp_path / ".env").write_text(f"DHIS2_PASSWORD={PASSWORD}\n")
    result = run_preflight(os.environ, open_reader=open_reader, open_chap=open_chap, model_ids=["4"],
                           dotenv={"DHIS2_PASSWORD": PASSWORD})
    check = by_name(result)["DHIS2 environment"]
    assert check.status == ERROR and "DHIS2_PASSWORD are in .env only: export them" in check.fix
    assert PASSWORD not in check.finding + check.fix


def test_user_authorities_are_listed(env, sandbox):
    sandbox.user_authorities = ["F_VIEW_EVENT_ANALYTICS", "M_dhis-web-maintenance"]
    finding = by_name(preflight("1"))["DHIS2 credentials"].finding
    assert "2 authorities: F_VIEW_EVENT_ANALYTICS, M_dhis-web-maintenance" in finding


# ---- the route and chap-core ------------------------------------------------------------------------


def test_route_missing(env, sandbox):
    sandbox.route_present = False
    result = preflight()
    checks = by_name(result)
    assert checks["route chap"].status == ERROR
    assert checks["route chap"].finding == "DHIS2 has no route with code 'chap' (none this user can see)"
    assert "'/**'" in checks["route chap"].fix
    assert checks["chap-core"].status == ERROR and "no usable route 'chap'" in checks["chap-core"].finding
    assert not any(name.startswith("model ") for name in checks)
    assert result.exit_code == 1


def test_route_the_user_may_not_run(env, sandbox):
    sandbox.route_authorities = ["M_chap_route"]
    sandbox.user_authorities = ["F_VIEW_EVENT_ANALYTICS"]
    checks = by_name(preflight())
    assert checks["route chap"].status == ERROR and "M_chap_route" in checks["route chap"].finding
    assert checks["chap-core"].status == ERROR and "may not run the route 'chap'" in checks["chap-core"].finding


def test_route_the_user_may_run_through_an_authority(env, sandbox):
    sandbox.route_authorities = ["M_chap_route"]
    sandbox.user_authorities = ["M_chap_route"]
    checks = by_name(preflight("1"))
    assert checks["route chap"].status == OK and "the user may run it" in checks["route chap"].finding
    assert checks["chap-core"].status == OK


def test_a_short_route_timeout_warns(env, sandbox, monkeypatch):
    route = sandbox.route_object()
    monkeypatch.setattr(sandbox, "route_object", lambda: route | {"responseTimeoutSeconds": 5})
    check = by_name(preflight("4"))["route chap"]
    assert check.status == WARNING and "response timeout 5 s" in check.finding and "30" in check.fix


def test_chap_core_down_behind_the_route(env, sandbox):
    sandbox.faults.route_down = True
    checks = by_name(preflight())
    assert checks["route chap"].status == OK
    assert checks["chap-core"].status == ERROR and "did not answer" in checks["chap-core"].finding


def test_chap_core_health_not_ready_and_older_builds_without_readiness():
    import respx

    from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
    from chap_scheduler_dagster.core.preflight import check_chap_health

    base = "http://dhis2.test"
    with respx.mock(assert_all_called=False) as mock, Dhis2Reader(base, username="u", password="p",
                                                                    get_attempts=1) as reader:
        ready = mock.get(f"{base}/api/routes/chap/run/health/ready")
        ready.respond(503, json={"status": "unhealthy", "checks": {"db": "ok", "celery": "error: no workers responded"}})
        check = check_chap_health(reader)
        assert check.status == ERROR and check.finding == (
            "chap-core is not ready: HTTP 503 on /health/ready: db ok, celery error: no workers responded")
        ready.respond(404, json={"detail": "Not Found"})
        mock.get(f"{base}/api/routes/chap/run/health").respond(200, json={"status": "success", "message": "healthy"})
        check = check_chap_health(reader)
        assert check.status == OK and check.finding == "/health: success"


# ---- per configured model -----------------------------------------------------------------------------


def test_unknown_model_id(env, sandbox):
    check = by_name(preflight("99"))["model 99: loads"]
    assert check.status == ERROR and "no configured model with id 99" in check.finding


def test_missing_data_element(env, sandbox):
    model = healthy_setup(sandbox, covariateSources=[
        {"covariate": "disease_cases", "dataElementId": DE_CASES},
        {"covariate": "rainfall", "dataElementId": "deNoSuchEl1"},
    ])
    result = preflight(str(model))
    check = by_name(result)[f"model {model}: data elements"]
    assert check.status == ERROR and "rainfall (deNoSuchEl1)" in check.finding
    assert result.exit_code == 1


def test_stale_covariate_fails_and_a_lagging_one_warns(env, sandbox):
    checks = by_name(preflight("1"))
    lagging = checks["model 1: covariate freshness"]  # the sandbox's temperature lags 2 months by design
    assert lagging.status == WARNING and lagging.finding.startswith("mean_temperature lags 2 period(s)")
    assert checks["model 1: window"].status == OK

    sandbox.make_stale(DE_RAIN, 20)  # no rainfall within LAST_12_MONTHS at all
    checks = by_name(preflight("1"))
    stale = checks["model 1: covariate freshness"]
    assert stale.status == ERROR and "no data within LAST_12_MONTHS for covariate(s): rainfall" in stale.finding
    assert "model 1: window" not in checks  # no end to compute a window from
    assert checks["model 1: org units"].status == WARNING  # the other checks still ran


def test_org_units_without_geometry_or_missing(env, sandbox):
    no_geometry = sandbox.world.no_geometry_ou
    check = by_name(preflight("1"))["model 1: org units"]
    assert check.status == WARNING and f"1 without geometry (their data is not sent): {no_geometry}" in check.finding

    only = healthy_setup(sandbox, orgUnits=[no_geometry])
    check = by_name(preflight(str(only)))[f"model {only}: org units"]
    assert check.status == ERROR and "none of the 1 org units has geometry" in check.finding

    ghost = healthy_setup(sandbox, orgUnits=[*sandbox.world.ou_ids[:2], "ouGhost0001"])
    check = by_name(preflight(str(ghost)))[f"model {ghost}: org units"]
    assert check.status == ERROR and "1 of 3 org units do not exist" in check.finding and "ouGhost0001" in check.finding


def test_window_over_the_row_budget(env, sandbox):
    env.setenv("CHAP_SCHEDULER_ROW_BUDGET", "100")
    check = by_name(preflight("1"))["model 1: window"]
    assert check.status == ERROR and "over the budget" in check.finding and "CHAP_SCHEDULER_ROW_BUDGET" in check.fix


def test_bad_cron(env, sandbox):
    bad = healthy_setup(sandbox, scheduleCronExpression="61 * * * *")
    result = preflight(str(bad))
    check = by_name(result)[f"model {bad}: chap schedule"]
    assert check.status == ERROR and "'61 * * * *' is not usable" in check.finding and "five fields" in check.fix
    assert result.exit_code == 1
    off = healthy_setup(sandbox, scheduleCronExpression="every monday", scheduleEnabled=False)
    assert by_name(preflight(str(off)))[f"model {off}: chap schedule"].status == WARNING


def test_quantile_targets_exist_and_take_numbers(env, sandbox):
    @dataclass
    class TextElement(DataElement):
        @property
        def value_type(self) -> str:
            return "TEXT"

    sandbox.world.data_elements["deTextTarg1"] = TextElement("deTextTarg1", "A comment", "month", "none", "sum",
                                                             False, 0, 1, 0)
    missing = healthy_setup(sandbox, quantileTargets=[{"quantile": "0.9", "dataElementId": "deNoTarget1"}])
    text = healthy_setup(sandbox, quantileTargets=[{"quantile": "0.5", "dataElementId": "deTextTarg1"}])
    result = preflight(str(missing), str(text))
    of = lambda model: [c for c in result.checks if c.name == f"model {model}: quantile targets"]  # noqa: E731
    assert [c.status for c in of(missing)] == [ERROR] and "deNoTarget1 does not exist" in of(missing)[0].finding
    [wrong_type] = [c for c in of(text) if c.status == ERROR]
    assert "deTextTarg1" in wrong_type.finding and "value type TEXT" in wrong_type.finding and wrong_type.fix


def test_quantile_targets_get_the_publishing_preflight_warnings_and_the_capture_check(env, sandbox):
    """The same preflight publish_forecasts runs: openFuturePeriods and zeroIsSignificant warnings, and
    org units outside the user's data capture hierarchy (the user could not write there) as an error."""
    from dhis2_sandbox.world import DE_PRED_NOZERO, DE_PRED_SHORT

    short = healthy_setup(sandbox, quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_SHORT}])
    nozero = healthy_setup(sandbox, quantileTargets=[{"quantile": "0.5", "dataElementId": DE_PRED_NOZERO}])
    result = preflight(str(short), str(nozero))
    short_checks = [c for c in result.checks if c.name == f"model {short}: quantile targets"]
    assert any(c.status == WARNING and "openFuturePeriods" in c.finding for c in short_checks), short_checks
    assert all(c.fix for c in short_checks if c.status != OK)
    nozero_checks = [c for c in result.checks if c.name == f"model {nozero}: quantile targets"]
    assert any(c.status == WARNING and "zeroIsSignificant" in (c.finding + c.fix) for c in nozero_checks), nozero_checks
    assert result.exit_code == 0  # warnings only

    sandbox.capture_roots = ["noSuchRoot1"]  # the user may capture data nowhere in the setup's tree
    model = healthy_setup(sandbox)
    result = preflight(str(model))
    checks = [c for c in result.checks if c.name == f"model {model}: quantile targets"]
    assert any(c.status == ERROR and "capture" in c.finding for c in checks), checks
    assert result.exit_code == 1
    assert {method for method, _, _ in sandbox.requests} == {"GET"}  # still nothing written


def test_publishing_preflight_plugs_in_as_target_checks(env, sandbox):
    from chap_scheduler_dagster.core.preflight import Check

    seen = []

    def publishing(reader, setup):
        seen.append(setup.id)
        return [Check("quantile targets writable", WARNING, "openFuturePeriods is 0", "raise it")]

    result = run_preflight(os.environ, open_reader=open_reader, open_chap=open_chap, model_ids=["1"],
                           target_checks=publishing)
    assert seen == [1]
    assert by_name(result)["model 1: quantile targets writable"].status == WARNING


# ---- the Dagster instance and its daemon ---------------------------------------------------------------


def test_daemon_absent_stale_and_present_through_the_instance_api(persistent_instance, env, sandbox):
    from dagster._daemon.types import DaemonHeartbeat

    instance = persistent_instance  # the daemon check asks for an instance another process could open

    checks = by_name(preflight("4", instance=instance, daemon=True))
    assert checks["Dagster instance"].status == OK
    assert checks["dagster-daemon"].status == WARNING and "no dagster-daemon has ever heartbeated" in checks["dagster-daemon"].finding

    required = instance.get_required_daemon_types()
    for daemon_type in required:
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - 600, daemon_type, "d1", None))
    check = by_name(preflight("4", instance=instance, daemon=True))["dagster-daemon"]
    # 600 s old when written; a loaded machine may take a few seconds to read it back
    assert check.status == ERROR and "not heartbeating" in check.finding
    assert re.search(r"\b60\d s ago", check.finding), check.finding

    for daemon_type in required:
        instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), daemon_type, "d1", None))
    check = by_name(preflight("4", instance=instance, daemon=True))["dagster-daemon"]
    assert check.status == OK and f"{len(required)} daemons" in check.finding


def test_no_dagster_home_is_a_warning():
    (check,) = instance_checks(None)
    assert check.status == WARNING and "DAGSTER_HOME" in check.fix


# ---- the command line ------------------------------------------------------------------------------------


def test_check_json_is_one_document_that_matches_the_schema(env, sandbox, capsys):
    assert cli.main(["check", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, CHECK_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert document["status"] == "passed with warnings" and document["counts"]["error"] == 0

    sandbox.route_present = False
    assert cli.main(["check", "--json", "1"]) == 1
    document = json.loads(capsys.readouterr().out)
    jsonschema.validate(document, CHECK_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert document["status"] == "failed" and document["exit_code"] == 1
    assert any(c["name"] == "route chap" and c["status"] == "error" for c in document["checks"])


def test_check_text_is_ascii_when_not_a_terminal_and_marks_on_one(env, sandbox, capsys):
    sandbox.route_present = False
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert out.isascii()
    assert "FAIL route chap: DHIS2 has no route with code 'chap'" in out
    assert "     fix: Create a DHIS2 route with code 'chap'" in out
    assert out.rstrip().splitlines()[-1].startswith("FAILED - ")

    result = preflight()
    text = render_text(result, unicode=True)
    assert "✗ route chap: DHIS2 has no route with code 'chap'" in text and "✓ DHIS2 credentials" in text


def test_ascii_output_transliterates_what_dhis2_or_chap_said():
    from chap_scheduler_dagster.core.preflight import Check

    result = Preflight(checks=[Check("chap-core", ERROR, "chap said: Région “Bo” — 3 × 4…", "fix → it")])
    text = render_text(result, unicode=False)
    assert text.isascii()
    assert "FAIL chap-core: chap said: R?gion \"Bo\" - 3 x 4..." in text and "fix: fix -> it" in text


def test_info_shows_every_setting_with_its_source_and_secrets_as_set(env, sandbox, capsys, tmp_path):
    env.setenv("CHAP_SCHEDULER_PERIOD_CAP", "100")
    (tmp_path / ".env").write_text("CHAP_SCHEDULER_ROW_BUDGET=123456\nDHIS2_TOKEN=" + TOKEN + "\n")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line.startswith(("CHAP_", "DHIS2_"))}
    assert rows["CHAP_SCHEDULER_PERIOD_CAP"].split() == ["100", "env"]
    assert rows["CHAP_SCHEDULER_ROW_BUDGET"].split() == ["123456", ".env"]
    assert rows["CHAP_SCHEDULER_HORIZON_WEEK"].split() == ["12", "default"]
    assert rows["DHIS2_PASSWORD"].split() == ["set", "env"]
    assert rows["DHIS2_TOKEN"].startswith("set") and ".env" in rows["DHIS2_TOKEN"]
    assert rows["DHIS2_BASE_URL"].split() == [sandbox.base_url, "env"]
    from chap_scheduler_dagster.settings import SchedulerSettings

    assert {f"CHAP_SCHEDULER_{n.upper()}" for n in SchedulerSettings.model_fields} <= set(rows)
    assert f"dagster {dg.__version__}" in out and "chap_scheduler_dagster.definitions" in out
    assert out.splitlines()[0].startswith("chap-scheduler-run ")


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("chap-scheduler-run 0.") and f"(dagster {dg.__version__})" in out


# ---- the Dagster job ---------------------------------------------------------------------------------------


def run_job(instance: dg.DagsterInstance):
    result = check_connections.execute_in_process(instance=instance, raise_on_error=False)
    record = instance.fetch_materializations(health_asset_key, limit=1).records[0]
    return result, record.asset_materialization.metadata


def test_check_connections_job_writes_the_health_table(instance, env, sandbox):
    result, meta = run_job(instance)
    assert result.success
    rows = meta["checks"].value.records
    names = [r.data["check"] for r in rows]
    assert names[:3] == ["settings", "DHIS2 environment", "DHIS2"] and "model 5: window" in names
    assert names[-1] == "dagster-daemon"
    assert meta["status"].value == "passed with warnings" and meta["failed"].value == 0
    assert "| status | check | finding | fix |" in meta["report"].value

    sandbox.route_present = False
    result, meta = run_job(instance)
    assert not result.success  # the run is red, and still leaves its table
    assert meta["status"].value == "failed"
    failed = [r.data for r in meta["checks"].value.records if r.data["status"] == ERROR]
    assert [f["check"] for f in failed] == ["route chap", "chap-core"]
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "route chap, chap-core" in failure.step_failure_data.error.message


def test_check_connections_is_in_the_code_location_and_the_overview_links_it():
    from chap_scheduler_dagster.core.overview import render_overview
    from chap_scheduler_dagster.definitions import defs

    job = defs.resolve_job_def("check_connections")
    assert job.partitions_def is None and "chap_scheduler/dhis2" not in job.tags
    assert health_asset_key in {s.key for s in defs.resolve_all_asset_specs()}
    assert "[chap_scheduler_health](/assets/chap_scheduler_health)" in render_overview([])
    assert "(/assets/sierra_leone/chap_scheduler_health)" in render_overview([], location="sierra_leone")


# ---- secrets ---------------------------------------------------------------------------------------------


def test_no_secret_value_in_any_output(instance, env, sandbox, capsys, tmp_path):
    """Every output of check/info/--version and the job, in the failing and passing cases, scanned."""
    outputs: list[str] = []

    def grab(argv: list[str]) -> None:
        cli.main(argv)
        captured = capsys.readouterr()
        outputs.extend([captured.out, captured.err])

    (tmp_path / ".env").write_text(f"DHIS2_TOKEN={TOKEN}\nCHAP_SCHEDULER_NOTIFY_WEBHOOK_URL=https://hook/{TOKEN}\n")
    env.setenv("DAGSTER_PG_PASSWORD", PASSWORD)
    for argv in (["check"], ["check", "--json"], ["info"], ["--version"], ["check", "1", "99"]):
        grab(argv)
    env.setenv("DHIS2_PASSWORD", WRONG_PASSWORD)  # the failure path quotes the user, never the password
    grab(["check"])
    grab(["check", "--json"])
    env.delenv("DHIS2_USERNAME")
    env.delenv("DHIS2_PASSWORD")
    env.setenv("DHIS2_TOKEN", TOKEN)
    env.setenv("DHIS2_BASE_URL", sandbox.base_url.replace("http://", f"http://admin:{PASSWORD}@"))
    grab(["check"])
    grab(["info"])
    env.setenv("DHIS2_BASE_URL", sandbox.base_url)
    result, meta = run_job(instance)
    outputs.append(json.dumps({k: str(v.value) for k, v in meta.items()}))
    outputs.extend(str(r.data) for r in meta["checks"].value.records)
    outputs.extend(str(e.user_message) + str(e.dagster_event) for e in instance.all_logs(result.run_id))
    text = "\n".join(outputs)
    assert "DHIS2 credentials" in text and "personal access token works" in text  # the scan saw real output
    for secret in SECRETS:
        assert secret not in text
