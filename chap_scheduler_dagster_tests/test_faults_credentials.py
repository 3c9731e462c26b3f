"""Point 7 (credentials only to the configured DHIS2) and point 8 (sensors skip on missing config), in process.

The launch through GraphQL with a loopback listener is in test_faults_e2e.py.
"""

from __future__ import annotations

import dagster as dg
import pytest
import respx

from chap_scheduler_dagster.core.credential_scope import (
    CredentialsRefused,
    MissingVariable,
    allowed_origins,
    check_destination,
    credentials_from_env,
    env_references,
    origin_of,
    refuse_env_references,
)
from chap_scheduler_dagster.core.errors import SchedulerError
from chap_scheduler_dagster.definitions import defs
from chap_scheduler_dagster.defs.resources import (
    Dhis2Resource,
    UnavailableDhis2,
    dhis2_from_environment,
    dhis2_resource_definition,
)
from chap_scheduler_dagster.defs.sensors import chap_schedule_sensor, configured_models_sensor

from dhis2_sandbox import Sandbox, SandboxConfig

BASE = "http://dhis2.test"
USER, PASSWORD = "admin", "district-secret"

EVIL = "http://collector.invalid:8080/dhis"


@pytest.fixture
def dhis2_env(monkeypatch):
    for name in ("DHIS2_TOKEN", "DHIS2_ALLOWED_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DHIS2_BASE_URL", BASE)
    monkeypatch.setenv("DHIS2_USERNAME", USER)
    monkeypatch.setenv("DHIS2_PASSWORD", PASSWORD)


def test_origin_is_scheme_host_and_port():
    assert origin_of("https://Play.DHIS2.org/dev/api") == "https://play.dhis2.org:443"
    assert origin_of("http://h:8080") == "http://h:8080"
    assert origin_of("http://h") != origin_of("https://h")
    assert origin_of("not a url") == ""
    assert allowed_origins({"DHIS2_BASE_URL": "https://a.org/dhis", "DHIS2_ALLOWED_ORIGINS": "https://b.org, http://c:81"}) == {
        "https://a.org:443", "https://b.org:443", "http://c:81"}


def test_credentials_only_to_the_configured_origin():
    env = {"DHIS2_BASE_URL": "https://dhis2.example.org/dhis"}
    check_destination("https://dhis2.example.org/other-context", env)  # same origin, other path: fine
    for bad in ("https://dhis2.example.org.evil.net/dhis", "http://dhis2.example.org/dhis",
                "https://dhis2.example.org:8443/dhis", "https://user:pw@evil.net/"):
        with pytest.raises(CredentialsRefused, match="refused to send DHIS2 credentials") as err:
            check_destination(bad, env)
        assert "pw" not in str(err.value) and "DHIS2_BASE_URL" in err.value.hint
    check_destination("https://mirror.example.org/dhis", env | {"DHIS2_ALLOWED_ORIGINS": "https://mirror.example.org"})
    check_destination(EVIL, {})  # nothing configured to compare with: a resource built in code


def test_resource_refuses_another_origin_before_any_request(dhis2_env):
    stray = Dhis2Resource(base_url=EVIL, username=USER, password=PASSWORD)
    with respx.mock(assert_all_called=False) as router:
        catch_all = router.route().respond(200, json={})
        for use in (stray.reader, stray.chap):
            with pytest.raises(CredentialsRefused, match="collector.invalid") as err:
                use()
            assert PASSWORD not in str(err.value)
        assert not catch_all.called, "nothing may be sent"


def test_launch_config_for_the_resource_is_refused_at_launch(dhis2_env):
    job = defs.resolve_job_def("dhis2_chap_prediction")
    attack = {"resources": {"dhis2": {"config": {
        "base_url": EVIL, "username": {"env": "DHIS2_USERNAME"}, "password": {"env": "DHIS2_PASSWORD"}}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="base_url"):
        dg.validate_run_config(job, attack)
    dg.validate_run_config(job, {"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}})


def test_env_references_in_run_config_fail_the_run_before_any_request(instance, dhis2_env):
    config = {"ops": {"probe_covariates": {"config": {"end_mode": "fixed", "end_date": {"env": "DHIS2_PASSWORD"}}}}}
    assert list(env_references(config)) == [("ops.probe_covariates.config.end_date", "DHIS2_PASSWORD")]
    with pytest.raises(CredentialsRefused, match=r"\{env: DHIS2_PASSWORD\} at ops.probe_covariates"):
        refuse_env_references(config)
    job = defs.resolve_job_def("dhis2_chap_prediction")
    with respx.mock(assert_all_called=False) as router:
        instance.add_dynamic_partitions("chap_configured_models", ["7"])
        catch_all = router.route().respond(200, json={})
        result = job.execute_in_process(run_config=config, instance=instance, partition_key="7", raise_on_error=False)
        assert not result.success and not catch_all.called
        [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RESOURCE_INIT_FAILURE)
        text = failure.dagster_event.event_specific_data.error.to_string()
        assert "reads environment variables" in text and PASSWORD not in text


def test_missing_variable_is_named(monkeypatch, dhis2_env):
    monkeypatch.delenv("DHIS2_PASSWORD")
    with pytest.raises(MissingVariable, match="DHIS2_PASSWORD is not set") as err:
        dhis2_from_environment()
    assert "reload the code location" in err.value.hint
    monkeypatch.setenv("DHIS2_TOKEN", "d2pat_x")
    assert credentials_from_env({"DHIS2_BASE_URL": BASE, "DHIS2_TOKEN": "d2pat_x"}).token == "d2pat_x"
    assert "d2pat_x" not in repr(credentials_from_env({"DHIS2_BASE_URL": BASE, "DHIS2_TOKEN": "d2pat_x"}))


def test_preflight_reads_the_same_credentials_and_never_prints_the_secret():
    from chap_scheduler_dagster.core.preflight import connection_from_env

    conn = connection_from_env({"DHIS2_BASE_URL": f" {BASE} ", "DHIS2_USERNAME": USER, "DHIS2_PASSWORD": PASSWORD})
    assert conn == credentials_from_env({"DHIS2_BASE_URL": BASE, "DHIS2_USERNAME": USER, "DHIS2_PASSWORD": PASSWORD})
    assert conn.auth_kind == "basic auth" and PASSWORD not in repr(conn)
    token = connection_from_env({"DHIS2_BASE_URL": BASE, "DHIS2_TOKEN": "d2pat_x"})
    assert token.auth_kind == "personal access token" and "d2pat_x" not in repr(token)
    assert connection_from_env({"DHIS2_USERNAME": USER}) is None  # no address: nothing to check against


def test_the_definition_builds_the_resource_from_the_environment(dhis2_env):
    resource = dg.build_resources({"dhis2": dhis2_resource_definition()})
    with resource as built:
        assert isinstance(built.dhis2, Dhis2Resource) and built.dhis2.base_url == BASE
        assert built.dhis2.username == USER


def test_outside_a_run_a_refused_origin_is_raised_when_used(monkeypatch, dhis2_env):
    """The command line and sensors build the resource without a run: a refusal comes with the first use."""
    monkeypatch.setenv("DHIS2_BASE_URL", "dhis2.test/dhis")  # no scheme: no origin to send credentials to
    monkeypatch.setenv("DHIS2_ALLOWED_ORIGINS", BASE)
    with dg.build_resources({"dhis2": dhis2_resource_definition()}) as built:
        assert built.dhis2.base_url == "dhis2.test/dhis"  # still labels overviews and reports
        with pytest.raises(SchedulerError, match="refused to send DHIS2 credentials") as err:
            built.dhis2.chap()
    assert "DHIS2_BASE_URL" in err.value.hint and PASSWORD not in str(err.value)


@pytest.mark.parametrize("sensor_def", [configured_models_sensor, chap_schedule_sensor])
def test_sensors_skip_with_the_reason_when_a_variable_is_missing(instance, monkeypatch, dhis2_env, sensor_def):
    monkeypatch.delenv("DHIS2_PASSWORD")
    context = dg.build_sensor_context(instance=instance, resources={"dhis2": dhis2_resource_definition()})
    result = sensor_def(context)
    skip = result.skip_message if isinstance(result, dg.SkipReason) else result.skip_reason.skip_message
    assert "DHIS2_PASSWORD is not set" in skip
    assert not getattr(result, "run_requests", None)


def test_sensors_work_with_the_environment_resource(instance, dhis2_env, monkeypatch):
    with Sandbox(SandboxConfig(port=0)) as sandbox:
        monkeypatch.setenv("DHIS2_BASE_URL", sandbox.base_url)
        monkeypatch.setenv("DHIS2_PASSWORD", "district")
        context = dg.build_sensor_context(instance=instance, resources={"dhis2": dhis2_resource_definition()})
        result = configured_models_sensor(context)
    assert isinstance(result, dg.SensorResult) and result.dynamic_partitions_requests


def test_unavailable_resource_raises_its_reason():
    stub = UnavailableDhis2(base_url="", reason="the environment variable DHIS2_BASE_URL is not set", fix="set it")
    with pytest.raises(Exception, match="DHIS2_BASE_URL is not set"):
        stub.chap()
