"""Deployment files: dagster.yaml (host and Docker), workspace files, Dockerfile, docker compose.

These tests need no Docker engine (test_docker_lane.py runs the deployment for real), so the
Docker side is checked here by parsing and validating:
the compose file against the Compose Specification's JSON schema (the copy that the maintained
``check-jsonschema`` package vendors), the instance files by loading real ``DagsterInstance``s
against the local PostgreSQL, the workspace files with Dagster's own loader, and every command
in the Dockerfile and the compose file against the console scripts and click options that the
installed packages really provide. One test starts the user-code server exactly as the compose
service does and checks its health check and the image it reports to Dagster.

PostgreSQL is taken from DAGSTER_TEST_PG_* (defaults: 127.0.0.1:5432, user postgres, trust
auth). The Postgres tests fail, never skip, when the server is not reachable.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import jsonschema
import psycopg2
import pytest
import yaml

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
HOST_INSTANCE_YAML = REPO / "dagster.yaml"
DOCKER_INSTANCE_YAML = REPO / "deploy" / "docker" / "dagster.yaml"
DOCKER_WORKSPACE_YAML = REPO / "deploy" / "docker" / "workspace.yaml"
ROOT_WORKSPACE_YAML = REPO / "workspace.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"

DAGSTER_SERVICES = {"user-code", "webserver", "daemon"}
ALL_SERVICES = {"postgres", *DAGSTER_SERVICES}
DHIS2_TAG = "chap_scheduler/dhis2"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|PRIVATE|API_?KEY|CREDENTIAL", re.IGNORECASE)
PG_ENV = ["DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"]
DHIS2_ENV = ["DHIS2_BASE_URL", "DHIS2_USERNAME", "DHIS2_PASSWORD", "DHIS2_TOKEN"]


# --------------------------------------------------------------------------------------------
# helpers


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(COMPOSE_FILE)


def _uncommented(text: str, marker: str) -> str:
    """Return ``text`` with the commented block that starts at the line containing ``marker``
    uncommented (up to the first line that is not a comment)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    out = lines[:start]
    i = start
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        out.append(re.sub(r"^(\s*)# ?", r"\1", lines[i], count=1))
        i += 1
    out.extend(lines[i:])
    return "\n".join(out) + "\n"


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env.example: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def _service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a continued line"
    return instructions


def _console_scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="console_scripts")}


def _click_command(argv: list[str]) -> tuple[click.Command, list[str]]:
    """Resolve ``argv`` (a command line of a console script) to the click command that would run
    and the remaining arguments."""
    scripts = _console_scripts()
    assert argv[0] in scripts, f"{argv[0]!r} is not a console script installed in this environment"
    module_name = scripts[argv[0]].split(":")[0]
    command = importlib.import_module(module_name).cli
    rest = list(argv[1:])
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{' '.join(argv)}: no sub-command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def _assert_cli_accepts(argv: list[str]) -> None:
    command, rest = _click_command(argv)
    assert not isinstance(command, click.Group), f"{' '.join(argv)}: names a group, not a command"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in rest:
        if token.startswith("-"):
            assert token.split("=")[0] in known, f"{' '.join(argv)}: unknown option {token!r}"


def _pg_params() -> dict[str, str]:
    return {
        "host": os.environ.get("DAGSTER_TEST_PG_HOST", "127.0.0.1"),
        "port": os.environ.get("DAGSTER_TEST_PG_PORT", "5432"),
        "user": os.environ.get("DAGSTER_TEST_PG_USER", "postgres"),
        "password": os.environ.get("DAGSTER_TEST_PG_PASSWORD", ""),
    }


def _admin_connection():
    params = _pg_params()
    try:
        conn = psycopg2.connect(dbname=os.environ.get("DAGSTER_TEST_PG_ADMIN_DB", "postgres"), connect_timeout=5, **params)
    except psycopg2.OperationalError as exc:  # fail loudly: these tests must not be skipped
        pytest.fail(
            f"PostgreSQL is not reachable at {params['host']}:{params['port']} as {params['user']} "
            f"({exc}). The deployment tests need it; set DAGSTER_TEST_PG_* to point at a server."
        )
    conn.autocommit = True
    return conn


@pytest.fixture
def fresh_pg_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty database, with DAGSTER_PG_* pointing at it; dropped afterwards."""
    name = f"chap_sched_deploy_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    params = _pg_params()
    monkeypatch.setenv("DAGSTER_PG_HOST", params["host"])
    monkeypatch.setenv("DAGSTER_PG_PORT", params["port"])
    monkeypatch.setenv("DAGSTER_PG_USER", params["user"])
    # Under trust auth the server ignores it; a non-empty value also proves it is passed through.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", params["password"] or "not-checked-under-trust-auth")
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _instance_from(config_text: str, home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(config_text)
    return dg.DagsterInstance.from_config(str(home))


def _strip_run_launcher(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "run_launcher"}


# --------------------------------------------------------------------------------------------
# docker-compose.yml


def _compose_schema() -> dict[str, Any]:
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:  # pragma: no cover - a missing test dependency
        pytest.fail("check-jsonschema is not installed: install the project's `test` extra")
    return json.loads((vendor / "compose-spec.json").read_text())


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = _compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = _compose_validator()
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_validator_is_strict(compose: dict[str, Any]) -> None:
    """The schema rejects a misspelt key, so the test above really checks something."""
    validator = _compose_validator()
    broken = copy.deepcopy(compose)
    broken["services"]["webserver"]["healthchek"] = broken["services"]["webserver"].pop("healthcheck")
    assert list(validator.iter_errors(broken))
    broken = copy.deepcopy(compose)
    broken["services"]["daemon"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert list(validator.iter_errors(broken))


def test_commented_second_code_location_is_valid(compose: dict[str, Any]) -> None:
    text = _uncommented(COMPOSE_FILE.read_text(), "# user-code-b:")
    second = yaml.safe_load(text)
    errors = list(_compose_validator().iter_errors(second))
    assert not errors, [e.message for e in errors]
    b = second["services"]["user-code-b"]
    assert b["image"] == compose["services"]["user-code"]["image"]
    assert "build" not in b
    assert b["env_file"][0] == ".env" and len(b["env_file"]) == 2
    assert b["command"][-2:] == ["--location-name", "dhis2_b"]
    context = json.loads(_service_env(b)["DAGSTER_CONTAINER_CONTEXT"])
    volumes = context["docker"]["container_kwargs"]["volumes"]
    # container_kwargs are merged shallowly: the location's volumes replace the instance's, so
    # the shared storage volume must be repeated, and the env file dir must match the loader.
    launcher = _yaml(DOCKER_INSTANCE_YAML)["run_launcher"]["config"]
    assert set(launcher["container_kwargs"]["volumes"]) <= set(volumes)
    loader = yaml.safe_load(_uncommented(DOCKER_INSTANCE_YAML.read_text(), "# secrets:"))["secrets"]
    env_dir = loader["custom"]["config"]["location_paths"]["dhis2_b"]
    assert {"bind": env_dir, "mode": "ro"} in volumes.values()


def test_compose_service_graph(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ALL_SERVICES

    def deps(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name].get("depends_on", {}).items()}

    assert deps("postgres") == {}
    assert deps("user-code") == {"postgres": "service_healthy"}
    assert deps("webserver") == {"postgres": "service_healthy", "user-code": "service_healthy"}
    assert deps("daemon") == {"postgres": "service_healthy", "user-code": "service_healthy"}

    assert services["postgres"]["image"].startswith("postgres:17")
    # One image for every Dagster role, built once (by user-code).
    images = {services[name]["image"] for name in DAGSTER_SERVICES}
    assert len(images) == 1
    assert [name for name in services if "build" in services[name]] == ["user-code"]
    assert services["user-code"]["build"]["context"] == "."

    # One network, the project's default, with a fixed name because run containers join it by
    # name. Services do not list `networks:`, so an override can put them on host networking.
    assert set(compose["networks"]) == {"default"}
    for name, service in services.items():
        assert "networks" not in service and "network_mode" not in service, name

    # The Docker socket: daemon (launches runs) and webserver (terminates them) only.
    for name, service in services.items():
        socket_mounted = any("/var/run/docker.sock" in str(v) for v in service.get("volumes", []))
        assert socket_mounted == (name in {"daemon", "webserver"}), name
        assert ("group_add" in service) == socket_mounted, name


def test_compose_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    published = {name: s.get("ports", []) for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"webserver": ["127.0.0.1:3000:3000"]}
    assert "expose" not in compose["services"]["postgres"]


def test_compose_hardening(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["restart"] == "unless-stopped", name
        assert service.get("mem_limit"), name
        assert service["healthcheck"]["test"], name
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert logging["options"]["max-size"] and logging["options"]["max-file"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        if name in DAGSTER_SERVICES:
            assert service["cap_drop"] == ["ALL"], name
            assert service.get("init") is True, name
            assert "privileged" not in service, name
            assert "/opt/dagster/home/storage" in " ".join(map(str, service["volumes"])), name
    assert compose["services"]["postgres"]["healthcheck"]["test"][1].startswith("pg_isready")
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_compose_has_no_secret_literals(compose: dict[str, Any]) -> None:
    """Every secret-looking value is a ${...} interpolation, never a literal."""
    blocks = [compose.get("x-dagster-env", {})]
    blocks += [_service_env(s) for s in compose["services"].values()]
    checked = 0
    for env in blocks:
        for key, value in env.items():
            if SECRET_NAME.search(key):
                checked += 1
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}", str(value)), (key, value)
    assert checked >= 2
    pg = _service_env(compose["services"]["postgres"])
    assert pg["POSTGRES_PASSWORD"].startswith("${DAGSTER_PG_PASSWORD:?")
    # Nothing in the file looks like an inline credential (user:password@host).
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", COMPOSE_FILE.read_text())


def test_compose_variables_are_documented_in_env_example(compose: dict[str, Any]) -> None:
    """Every ${VAR} the compose file interpolates is in .env.example; the required ones
    (${VAR:?...}) are set there."""
    text = COMPOSE_FILE.read_text()
    active = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    example = _env_example()
    commented = {m.group(1) for m in re.finditer(r"^#\s*([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M)}
    for match in re.finditer(r"(?<!\$)\$\{([A-Za-z0-9_]+)(:?[-?])?", active):
        name, op = match.group(1), match.group(2)
        assert name in example or name in commented, f"${{{name}}} is not in .env.example"
        if op == ":?":
            assert example.get(name), f"{name} is required by docker-compose.yml but empty in .env.example"


def test_env_example_has_placeholders_only() -> None:
    example = _env_example()
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert value in {"", "change-me"}, f"{name} in .env.example must be a placeholder"
    for name in (*DHIS2_ENV, "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        assert name in example, name
    # .env (the real one) is git-ignored and kept out of the image.
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore
    assert ".env" in DOCKERIGNORE.read_text().splitlines()


def test_run_containers_get_every_name_the_launcher_passes(compose: dict[str, Any]) -> None:
    """DockerRunLauncher copies each env_vars name from the launching process (the daemon, which
    dequeues every run) and refuses to launch when one is unset: each name must reach the daemon,
    from `environment` or from the .env file. The webserver only queues runs and terminates
    them, so it gets the Dagster wiring but no DHIS2 secrets."""
    launcher = _yaml(DOCKER_INSTANCE_YAML)["run_launcher"]["config"]
    names = launcher["env_vars"]
    assert all("=" not in n for n in names), "pass values by name only"
    assert set(PG_ENV) <= set(names)
    assert set(DHIS2_ENV) <= set(names)
    assert "CHAP_SCHEDULER_LOCATION_NAME" in names
    example = _env_example()
    daemon = compose["services"]["daemon"]
    assert daemon["env_file"] == [".env"]
    assert compose["services"]["user-code"]["env_file"] == [".env"]
    daemon_env = _service_env(daemon)
    for name in names:
        assert name in daemon_env or name in example, f"the daemon lacks {name}"
    webserver = compose["services"]["webserver"]
    assert "env_file" not in webserver
    webserver_env = _service_env(webserver)
    assert not [n for n in webserver_env if n.startswith("DHIS2_")]
    for service_env in (daemon_env, webserver_env):
        # The instance file resolves these when it loads the run launcher, in both services.
        for ref in ("DAGSTER_CURRENT_IMAGE", "DAGSTER_DOCKER_NETWORK", *PG_ENV):
            assert ref in service_env, ref
    assert launcher["image"] == {"env": "DAGSTER_CURRENT_IMAGE"}
    assert launcher["network"] == {"env": "DAGSTER_DOCKER_NETWORK"}
    network_default = _service_env(compose["services"]["daemon"])["DAGSTER_DOCKER_NETWORK"]
    assert compose["networks"]["default"]["name"] == network_default
    user_code_env = _service_env(compose["services"]["user-code"])
    assert user_code_env["DAGSTER_CURRENT_IMAGE"] == compose["services"]["user-code"]["image"]
    # The run containers mount the same named storage volume as the services.
    storage = compose["volumes"]["dagster-storage"]["name"]
    assert storage in launcher["container_kwargs"]["volumes"]
    assert launcher["container_kwargs"]["volumes"][storage]["bind"] == "/opt/dagster/home/storage"


def test_docker_run_launcher_config_is_accepted_by_dagster_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._config import process_config
    from dagster_docker import DockerRunLauncher

    config = _yaml(DOCKER_INSTANCE_YAML)["run_launcher"]
    assert (config["module"], config["class"]) == ("dagster_docker", "DockerRunLauncher")
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "chap-scheduler-dagster:latest")
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "net")
    result = process_config(DockerRunLauncher.config_type(), config["config"])
    assert result.success, result.errors
    launcher = DockerRunLauncher(**result.value)  # type: ignore[arg-type]
    assert launcher.networks == ["net"]
    assert launcher.image == "chap-scheduler-dagster:latest"
    kwargs = launcher.container_kwargs
    assert kwargs["mem_limit"] and kwargs["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in kwargs["security_opt"]


# --------------------------------------------------------------------------------------------
# dagster.yaml files


def test_host_and_docker_instance_files_agree_except_run_launcher() -> None:
    host, docker = _yaml(HOST_INSTANCE_YAML), _yaml(DOCKER_INSTANCE_YAML)
    assert _strip_run_launcher(host) == _strip_run_launcher(docker)
    assert host["run_launcher"] == {"module": "dagster", "class": "DefaultRunLauncher"}
    assert docker["run_launcher"]["class"] == "DockerRunLauncher"


def test_instance_files_hold_no_secrets_and_read_connection_from_env() -> None:
    for path in (HOST_INSTANCE_YAML, DOCKER_INSTANCE_YAML):
        db = _yaml(path)["storage"]["postgres"]["postgres_db"]
        assert db["scheme"] == "postgresql+psycopg2", "SQLAlchemy 2.1 would pick psycopg 3"
        assert {k: v for k, v in db.items() if k != "scheme"} == {
            "hostname": {"env": "DAGSTER_PG_HOST"},
            "port": {"env": "DAGSTER_PG_PORT"},
            "username": {"env": "DAGSTER_PG_USER"},
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "db_name": {"env": "DAGSTER_PG_DB"},
        }
        assert "postgres_url" not in _yaml(path)["storage"]["postgres"]


@pytest.mark.parametrize("instance_yaml", [HOST_INSTANCE_YAML, DOCKER_INSTANCE_YAML], ids=["host", "docker"])
def test_instance_loads_on_postgres(
    instance_yaml: Path, fresh_pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._core.storage.tags import PARTITION_NAME_TAG
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "chap-scheduler-dagster:test")
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "chap-scheduler-dagster")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_storage.postgres_url.startswith("postgresql+psycopg2://")
        assert fresh_pg_database in instance.run_storage.postgres_url

        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.tag_concurrency_limits == [
            {"key": DHIS2_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
        ]
        assert queue.max_concurrent_runs >= 2

        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_max_runtime_seconds > 3600  # > default prediction timeout
        assert not instance.telemetry_enabled

        launcher = instance.run_launcher
        expected = "DockerRunLauncher" if instance_yaml == DOCKER_INSTANCE_YAML else "DefaultRunLauncher"
        assert type(launcher).__name__ == expected
        if expected == "DockerRunLauncher":
            assert launcher.supports_check_run_worker_health  # run monitoring sees dead workers

        # The tables work: a run, a tag, a dynamic partition.
        run = instance.create_run_for_job(
            job_def=_tiny_job(), tags={DHIS2_TAG: "sandbox", PARTITION_NAME_TAG: "3"}
        )
        fetched = instance.get_run_by_id(run.run_id)
        assert fetched is not None and fetched.tags[DHIS2_TAG] == "sandbox"
        instance.add_dynamic_partitions("chap_models", ["3", "7"])
        assert sorted(instance.get_dynamic_partitions("chap_models")) == ["3", "7"]

    with psycopg2.connect(dbname=fresh_pg_database, **_pg_params()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT partition FROM dynamic_partitions ORDER BY partition")
        assert [row[0] for row in cur.fetchall()] == ["3", "7"]
    conn.close()


def _tiny_job() -> dg.JobDefinition:
    @dg.op
    def noop() -> None:
        return None

    @dg.job(name="deployment_probe")
    def deployment_probe() -> None:
        noop()

    return deployment_probe


def test_queued_runs_are_held_per_dhis2(fresh_pg_database: str, tmp_path: Path) -> None:
    """The tag limit does what we want: two runs of one DHIS2 in progress hold back a third of
    the same DHIS2 but not one of another DHIS2. Runs are stored in Postgres and judged with the
    counter that Dagster's queued-run daemon uses to dequeue."""
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    instance = _instance_from(HOST_INSTANCE_YAML.read_text(), tmp_path / "home")
    try:
        job = _tiny_job()
        # (Runs stored as QUEUED need a code-location origin; NOT_STARTED ones stand in.)
        for status, dhis2 in [
            (DagsterRunStatus.STARTED, "a"),
            (DagsterRunStatus.STARTED, "a"),
            (DagsterRunStatus.NOT_STARTED, "a"),
            (DagsterRunStatus.NOT_STARTED, "b"),
        ]:
            instance.create_run_for_job(job_def=job, status=status, tags={DHIS2_TAG: dhis2})
        queued = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.NOT_STARTED]))
        in_progress = list(instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])))
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, in_progress)
        assert sorted(run.tags[DHIS2_TAG] for run in queued if not counter.is_blocked(run)) == ["b"]
    finally:
        instance.dispose()


def test_second_dhis2_secrets_loader_injects_only_its_location(
    fresh_pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commented `secrets:` block of deploy/docker/dagster.yaml, uncommented: a run of
    location dhis2_b gets that location's DHIS2 values; a run of `dhis2` keeps its own."""
    text = _uncommented(DOCKER_INSTANCE_YAML.read_text(), "# secrets:")
    env_dir = tmp_path / "dhis2_b"
    env_dir.mkdir()
    (env_dir / ".env").write_text(
        "DHIS2_BASE_URL=https://b.example.org\nDHIS2_PASSWORD=b-pass\nCHAP_SCHEDULER_LOCATION_NAME=dhis2_b\n"
    )
    text = text.replace("/run/chap-scheduler/dhis2_b", str(env_dir))
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", "chap-scheduler-dagster:test")
    monkeypatch.setenv("DAGSTER_DOCKER_NETWORK", "chap-scheduler-dagster")
    monkeypatch.setenv("DHIS2_BASE_URL", "https://a.example.org")
    monkeypatch.setenv("DHIS2_PASSWORD", "a-pass")
    monkeypatch.setenv("CHAP_SCHEDULER_LOCATION_NAME", "dhis2")
    instance = _instance_from(text, tmp_path / "home")
    try:
        instance.inject_env_vars("dhis2")
        assert os.environ["DHIS2_BASE_URL"] == "https://a.example.org"
        instance.inject_env_vars("dhis2_b")
        assert os.environ["DHIS2_BASE_URL"] == "https://b.example.org"
        assert os.environ["DHIS2_PASSWORD"] == "b-pass"
        assert os.environ["CHAP_SCHEDULER_LOCATION_NAME"] == "dhis2_b"
        # The loader travels to run containers inside the instance ref.
        assert instance.get_ref().secrets_loader_data is not None
    finally:
        instance.dispose()


# --------------------------------------------------------------------------------------------
# workspace files


def test_docker_workspace_loads_with_dagster_loader(compose: dict[str, Any], tmp_path: Path) -> None:
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    (origin,) = location_origins_from_yaml_paths([str(DOCKER_WORKSPACE_YAML)])
    assert isinstance(origin, GrpcServerCodeLocationOrigin)
    assert (origin.host, origin.port, origin.location_name) == ("user-code", 4000, "dhis2")
    # The host is the compose service and the port is the one its command serves.
    command = compose["services"]["user-code"]["command"]
    assert origin.host in compose["services"]
    assert command[command.index("-p") + 1] == str(origin.port)
    assert command[command.index("--location-name") + 1] == origin.location_name

    second = tmp_path / "workspace.yaml"
    second.write_text(_uncommented(DOCKER_WORKSPACE_YAML.read_text(), "# - grpc_server:"))
    origins = location_origins_from_yaml_paths([str(second)])
    assert [(o.host, o.location_name) for o in origins] == [("user-code", "dhis2"), ("user-code-b", "dhis2_b")]


def test_root_workspace_loads_with_dagster_loader() -> None:
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    if not ROOT_WORKSPACE_YAML.exists():
        pytest.skip("workspace.yaml at the repository root is not there yet")
    (origin,) = location_origins_from_yaml_paths([str(ROOT_WORKSPACE_YAML)])
    target = origin.loadable_target_origin  # type: ignore[attr-defined]
    assert target.module_name == "chap_scheduler_dagster.definitions"
    assert Path(target.working_directory).resolve() == REPO
    assert origin.location_name == "chap_scheduler_dagster"


# --------------------------------------------------------------------------------------------
# Dockerfile and commands


def test_dockerfile_shape() -> None:
    instructions = _dockerfile_instructions()
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert [f.split(" AS ")[-1] for f in froms] == ["builder", "runtime"]
    arg_defaults = dict(
        args.split("=", 1) for kw, args in instructions if kw == "ARG" and "=" in args
    )
    assert arg_defaults.get("PYTHON_IMAGE") == "python:3.11-slim"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)

    # Dependency layer before the source layer.
    copies = [args for kw, args in instructions if kw == "COPY"]
    order = [c.split()[0] for c in copies]
    assert order.index("pyproject.toml") < order.index("chap_scheduler_dagster")
    runs = [args for kw, args in instructions if kw == "RUN"]
    dep_install = next(i for i, r in enumerate(runs) if "requirements.txt" in r and "pip install" in r)
    src_install = next(i for i, r in enumerate(runs) if "pip install --no-deps ." in r)
    assert dep_install < src_install

    # Runtime stage: venv copied from the builder, non-root user, DAGSTER_HOME with the
    # Docker instance file.
    runtime = instructions[[i for i, (kw, _) in enumerate(instructions) if kw == "FROM"][1] :]
    runtime_copies = [args for kw, args in runtime if kw == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in runtime_copies
    assert "deploy/docker/dagster.yaml /opt/dagster/home/dagster.yaml" in runtime_copies
    assert "deploy/docker/workspace.yaml /opt/dagster/deploy/workspace.yaml" in runtime_copies
    users = [args for kw, args in runtime if kw == "USER"]
    assert users == ["10001:10001"]
    env_text = " ".join(args for kw, args in runtime if kw == "ENV")
    assert "DAGSTER_HOME=/opt/dagster/home" in env_text
    assert "PATH=/opt/venv/bin:$PATH" in env_text

    # Every source the Dockerfile copies exists and is not excluded by .dockerignore.
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()}
    for args in copies:
        parts = [p for p in args.split() if not p.startswith("--")]
        if args.startswith("--from="):
            continue
        for source in parts[:-1]:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") not in ignored, source


def test_dockerfile_bakes_in_no_secrets() -> None:
    for keyword, args in _dockerfile_instructions():
        if keyword in {"ENV", "ARG", "LABEL"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0].split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"{keyword} {name}: secrets come at run time"
                assert not name.startswith(("DHIS2_", "DAGSTER_PG_")), f"{keyword} {name}"
    text = DOCKERFILE.read_text()
    assert ".env" not in re.sub(r"#.*", "", text)
    # Build secrets: only the optional pip configuration and CA bundle, mounted for pip alone.
    assert set(re.findall(r"--mount=type=secret,id=([\w.-]+)", text)) == {"pip.conf", "pip-cert"}
    for run in (args for kw, args in _dockerfile_instructions() if kw == "RUN"):
        if "type=secret" in run:
            assert "pip install" in run and "/run/secrets/" in run, run


def _commands_in_use(compose: Mapping[str, Any]) -> list[list[str]]:
    commands: list[list[str]] = []
    cmd = next(args for kw, args in _dockerfile_instructions() if kw == "CMD")
    commands.append(json.loads(cmd))
    for service in compose["services"].values():
        if "command" in service:
            command = service["command"]
            commands.append(command if isinstance(command, list) else shlex.split(command))
        test = service["healthcheck"]["test"]
        if test[0] == "CMD":
            commands.append(list(test[1:]))
    # The command DockerRunLauncher runs in each run container: the code server's entry point
    # (`dagster`, checked in test_user_code_server_starts_like_the_compose_service) followed by
    # `api execute_run <serialized args>` (dagster._grpc.types.ExecuteRunArgs.get_command_args).
    commands.append(["dagster", "api", "execute_run"])
    return commands


def test_commands_match_installed_console_scripts(compose: dict[str, Any]) -> None:
    """Each command of the Dockerfile and compose file names a console script that this
    package's environment installs, with sub-commands and options that script accepts."""
    scripts = _console_scripts()
    for name in ("dagster", "dagster-webserver", "dagster-daemon", "chap-scheduler-run", "chap-sandbox"):
        assert name in scripts, f"console script {name} is not installed"
    assert scripts["chap-scheduler-run"] == "chap_scheduler_dagster.cli:main"
    commands = _commands_in_use(compose)
    executables = {c[0] for c in commands}
    assert {"dagster", "dagster-webserver", "dagster-daemon"} <= executables
    for command in commands:
        if command[:2] == ["python", "-c"]:
            compile(command[2], "<healthcheck>", "exec")
            continue
        if command[:2] == ["python", "-m"]:
            # A module of this package; that its options work shows the user-code test below.
            assert command[2].startswith("chap_scheduler_dagster.") and importlib.util.find_spec(command[2]), command
            continue
        _assert_cli_accepts(command)


def test_user_code_command_serves_the_definitions_module(compose: dict[str, Any]) -> None:
    command = compose["services"]["user-code"]["command"]
    assert command[command.index("-m") + 1] == "chap_scheduler_dagster.definitions"
    assert command[command.index("-h") + 1] == "0.0.0.0"
    dockerfile_cmd = json.loads(next(a for k, a in _dockerfile_instructions() if k == "CMD"))
    assert dockerfile_cmd == command[: len(dockerfile_cmd)]
    assert compose["services"]["webserver"]["command"][-1] == "/opt/dagster/deploy/workspace.yaml"
    assert compose["services"]["daemon"]["command"][-1] == "/opt/dagster/deploy/workspace.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e  # starts Dagster processes
def test_user_code_server_starts_like_the_compose_service(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Start the user-code command of docker-compose.yml (on loopback and a free port), wait for
    the compose health check to pass, and check that the location reports the image that
    DAGSTER_CURRENT_IMAGE names (the image DockerRunLauncher starts runs from) and the container
    context that DAGSTER_CONTAINER_CONTEXT holds (how the second DHIS2's runs get their env)."""
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

    service = compose["services"]["user-code"]
    port = _free_port()
    command = list(service["command"])
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(port)
    bindir = Path(sys.executable).parent
    image = "chap-scheduler-dagster:probe"
    # The commented second location's container context, to check the server hands it on.
    second = yaml.safe_load(_uncommented(COMPOSE_FILE.read_text(), "# user-code-b:"))
    container_context = _service_env(second["services"]["user-code-b"])["DAGSTER_CONTAINER_CONTEXT"]
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "DAGSTER_CURRENT_IMAGE": image,
        "DAGSTER_CONTAINER_CONTEXT": container_context,
        "DHIS2_BASE_URL": os.environ.get("DHIS2_BASE_URL", "http://127.0.0.1:9"),
        "DHIS2_USERNAME": os.environ.get("DHIS2_USERNAME", "probe"),
        "DHIS2_PASSWORD": os.environ.get("DHIS2_PASSWORD", "probe"),
    }
    health = list(service["healthcheck"]["test"][1:])
    assert health[0] == "python"
    health[0] = sys.executable
    health[health.index("-p") + 1] = str(port)
    # Before the server listens, the check fails and says why.
    early = subprocess.run(health, env=env, capture_output=True, text=True, timeout=30)
    assert early.returncode == 1 and "UNAVAILABLE" in early.stderr, (early.returncode, early.stderr)
    proc = subprocess.Popen(
        [str(bindir / command[0]), *command[1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"user-code server exited with {proc.returncode}:\n{proc.stdout.read()}")  # type: ignore[union-attr]
            check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"health check never passed: {check.stdout}{check.stderr}")
            time.sleep(0.5)

        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name="dhis2")
        with dg.DagsterInstance.ephemeral() as instance:
            location = origin.create_location(instance)
            try:
                assert location.container_image == image
                assert location.container_context == json.loads(container_context)
                assert location.get_repositories()
                # Run containers are started with `<entry point> api execute_run ...`.
                assert list(location.entry_point or []) == ["dagster"]
            finally:
                location.cleanup()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.e2e  # starts Dagster processes
def test_webserver_and_daemon_health_checks_pass_on_postgres(
    compose: dict[str, Any], fresh_pg_database: str, tmp_path: Path
) -> None:
    """Start dagster-daemon and dagster-webserver on the host instance file (Postgres) and run the
    compose health checks of the `daemon` and `webserver` services against them: both must
    turn healthy, the daemon's only once its heartbeats are in the database."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(HOST_INSTANCE_YAML.read_text())
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DHIS2_BASE_URL": "http://127.0.0.1:9",  # nothing listens: sensors skip, nothing else
        "DHIS2_USERNAME": "probe",
        "DHIS2_PASSWORD": "probe",
    }
    workspace = ROOT_WORKSPACE_YAML if ROOT_WORKSPACE_YAML.exists() else None
    if workspace is None:
        pytest.fail("workspace.yaml at the repository root is missing")
    daemon_cmd = [str(bindir / "dagster-daemon"), "run", "-w", str(workspace)]
    web_cmd = [str(bindir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)]
    daemon_check = list(compose["services"]["daemon"]["healthcheck"]["test"][1:])
    daemon_check[0] = str(bindir / daemon_check[0])
    web_check = list(compose["services"]["webserver"]["healthcheck"]["test"][1:])
    web_check[0] = sys.executable
    web_check[-1] = web_check[-1].replace("127.0.0.1:3000", f"127.0.0.1:{port}")
    assert f":{port}/" in web_check[-1]

    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for cmd in (daemon_cmd, web_cmd)
    ]
    try:
        pending = {"daemon": daemon_check, "webserver": web_check}
        deadline = time.monotonic() + 120
        while pending:
            for name, check in list(pending.items()):
                if subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0:
                    del pending[name]
            if any(p.poll() is not None for p in procs):
                pytest.fail(f"a Dagster service exited early while waiting for {sorted(pending)}")
            if pending and time.monotonic() > deadline:
                pytest.fail(f"health checks never passed: {sorted(pending)}")
            if pending:
                time.sleep(1)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
