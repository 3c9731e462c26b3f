"""The Docker deployment, run for real (pytest marker ``docker``).

The lane starts its own dockerd, imports the cached local base image (debootstrap, made once
per machine), builds the project image from the repository's Dockerfile, and brings up the
repository's docker-compose.yml with deploy/test/docker-compose.lane.yml: host networking, the
machine's PostgreSQL on 127.0.0.1:5432 (fresh database) instead of the postgres container, the
sandbox DHIS2 on loopback. Runs are launched over GraphQL like the launchpad, and the claims of
the deployment are checked through GraphQL, Postgres and Docker itself. Everything started is
stopped by id at the end (chap_scheduler_dagster_tests/docker_lane.py).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
from contextlib import closing
from pathlib import Path

import docker
import httpx
import psycopg2
import pytest
import yaml

from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import PG, DagsterStack, create_database, drop_database, free_port
from .docker_lane import BASE_IMAGE, IMAGE, REPO, DockerLane, LaneError, debian_mirror, require_tools

pytestmark = pytest.mark.docker

LOCATION = "dhis2"
PARTITIONS = f"{LOCATION}__chap_configured_models"
REPORT_PATH = [LOCATION, "dhis2_chap_prediction_report"]
PASSWORD = "district"
JOB_SECONDS = 4.0
UID = 10001


class Lane:
    """What the tests share: the running deployment and the handles to look at it."""

    def __init__(self, lane: DockerLane, sandbox: Sandbox, database: str, ui_port: int, grpc_port: int, socket_gid: int):
        self.lane = lane
        self.sandbox = sandbox
        self.database = database
        self.ui_port = ui_port
        self.grpc_port = grpc_port
        self.socket_gid = socket_gid
        self.ui = DagsterStack(home=lane.tmp, env={}, port=ui_port)
        self.docker = docker.DockerClient(base_url=f"unix://{lane.socket}", timeout=60)

    def diagnostics(self) -> str:
        return f"\n--- compose logs ---\n{self.lane.service_logs()}\n--- dockerd ---\n{self.lane.dockerd_log()[-2000:]}"

    def launch(self, partition: str, run_config: dict | None = None) -> str:
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                         "pipelineName": "dhis2_chap_prediction"},
            # force: every launch here is meant as a prediction (same sandbox data, else later runs are skipped
            # as unchanged: issue #12's rule)
            "runConfigData": run_config or {"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}},
                                                    "submit_prediction": {"config": {"force": True}}}},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        }
        answer = self.ui.graphql(
            """mutation Launch($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
                 __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
                 ... on RunConfigValidationInvalid { errors { message } } } }""",
            {"params": params},
        )["launchPipelineExecution"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        return answer["run"]["runId"]

    def status(self, run_id: str) -> str:
        return self.ui.graphql("query R($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                               {"id": run_id})["runOrError"]["status"]

    def wait_status(self, run_id: str, wanted: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status in wanted:
                return status
            time.sleep(1)
        raise AssertionError(f"run {run_id} not in {wanted} within {timeout} s (now {status}){self.diagnostics()}")

    def run_containers(self, run_ids: set[str] | None = None) -> list:
        found = self.docker.containers.list(filters={"label": "dagster/run_id"})
        return [c for c in found if run_ids is None or c.labels["dagster/run_id"] in run_ids]

    def wait_container(self, run_id: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.run_containers({run_id})
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no running container for run {run_id} within {timeout} s{self.diagnostics()}")

    def report_events(self, run_id: str) -> list[dict]:
        """The run's report, read straight from Dagster's event log in Postgres."""
        conn = psycopg2.connect(dbname=self.database, **PG)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT event FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                            "AND asset_key = %s", (json.dumps(REPORT_PATH),))
                rows = [json.loads(r[0]) for r in cur.fetchall()]
        finally:
            conn.close()
        return [r for r in rows if run_id in json.dumps(r)]


@pytest.fixture(scope="module")
def lane(request):
    require_tools()
    # Short socket path (unix sockets are limited to 108 bytes): dockerd's roots live here.
    short = Path(tempfile.mkdtemp(prefix="chapdl.", dir="/tmp"))
    docker_lane = DockerLane(tmp=short)
    database = create_database()
    t0 = time.monotonic()
    with Sandbox(SandboxConfig(port=0, job_seconds=JOB_SECONDS)) as sandbox:
        try:
            docker_lane.start_dockerd()
            docker_lane.import_base()
            docker_lane.build()
            socket_gid = os.stat(docker_lane.socket).st_gid
            ui_port, grpc_port = free_port(), free_port()
            dotenv = {
                "DHIS2_BASE_URL": sandbox.base_url,
                "DHIS2_USERNAME": "admin",
                "DHIS2_PASSWORD": PASSWORD,
                "DHIS2_TOKEN": "",
                "CHAP_SCHEDULER_LOCATION_NAME": LOCATION,
                "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS": "600",
                "CHAP_SCHEDULER_SCHEDULE_TIMEZONE": "UTC",
                "CHAP_SCHEDULER_OVERVIEW_INTERVAL_SECONDS": "5",  # the backstop report in 5 s, not 30
                "DAGSTER_PG_USER": PG["user"],
                # The machine's PostgreSQL trusts loopback; compose requires a non-empty value.
                "DAGSTER_PG_PASSWORD": "unused-trust-auth",
                "DAGSTER_PG_DB": database,
                "DOCKER_SOCKET_GID": str(socket_gid),
            }
            docker_lane.compose_up(dotenv, grpc_port=grpc_port, ui_port=ui_port)
            shared = Lane(docker_lane, sandbox, database, ui_port, grpc_port, socket_gid)
            _wait_loaded(shared)
            docker_lane.timings["ready_s"] = time.monotonic() - t0
            with closing(shared.ui.http):  # the GraphQL client of the lane's webserver, closed with the lane
                yield shared
        except LaneError as exc:
            raise AssertionError(f"{exc}\n{docker_lane.service_logs()}") from exc
        finally:
            docker_lane.stop()
            drop_database(database)
            timings = " ".join(f"{k}={v:.1f}" for k, v in docker_lane.timings.items())
            line = f"docker lane timings (s): {timings} total={time.monotonic() - t0:.1f}"
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            if capture is not None:  # shown in CI's output, captured or not
                with capture.global_and_fixture_disabled():
                    print("\n" + line, flush=True)
            else:
                print(line)
            shutil.rmtree(short, ignore_errors=True)


def _wait_loaded(shared: Lane, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            entries = shared.ui.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
            )["workspaceOrError"]["locationEntries"]
            last = entries
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries
                return
        except (httpx.HTTPError, RuntimeError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"the webserver did not load the code location: {last}{shared.diagnostics()}")


def add_partitions(shared: Lane, keys: list[str]) -> None:
    for key in keys:
        answer = shared.ui.graphql(
            """mutation Add($sel: RepositorySelector!, $name: String!, $key: String!) {
                 addDynamicPartition(repositorySelector: $sel, partitionsDefName: $name, partitionKey: $key) { __typename }
               }""",
            {"sel": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}, "name": PARTITIONS, "key": key},
        )
        assert answer["addDynamicPartition"]["__typename"] in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError")


# --------------------------------------------------------------------------------------------
# the base image's mirror: the machine's apt sources, never a host name in the repository


def test_debootstrap_takes_the_mirror_that_apt_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAP_DOCKER_LANE_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://old.example/debian\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n")
    assert debian_mirror(tmp_path) == "http://mirror.test/debian"

    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.test/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://onelist.test/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://onelist.test/debian"

    monkeypatch.setenv("CHAP_DOCKER_LANE_MIRROR", "http://override.test/debian")
    assert debian_mirror(tmp_path) == "http://override.test/debian"


def test_no_bookworm_source_names_the_setting_that_fixes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAP_DOCKER_LANE_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text("deb http://mirror.test/debian trixie main\n")
    with pytest.raises(LaneError, match="CHAP_DOCKER_LANE_MIRROR"):
        debian_mirror(tmp_path)


# --------------------------------------------------------------------------------------------
# the image


def test_image_from_the_local_base_has_the_promised_layout(lane: Lane) -> None:
    config = lane.docker.images.get(IMAGE).attrs["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["WorkingDir"] == "/opt/dagster/app"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["DAGSTER_HOME"] == "/opt/dagster/home"
    assert config["Cmd"][:3] == ["dagster", "code-server", "start"]
    probe = (
        "import os, sys, sysconfig, importlib.metadata as m;"
        "print(os.getuid(), os.getgid(), sys.prefix, sysconfig.get_paths()['purelib'], sys.version_info[:2] >= (3, 11));"
        "print(sorted(e.name for e in m.entry_points(group='console_scripts')))"
    )
    out = lane.docker.containers.run(IMAGE, ["python", "-c", probe], remove=True, network_mode="host").decode()
    first, scripts = out.strip().splitlines()
    uid, gid, prefix, purelib, new_enough = first.split()
    assert (uid, gid, prefix, new_enough) == (str(UID), str(UID), "/opt/venv", "True")
    assert purelib.startswith("/opt/venv/lib/python3.")
    for script in ("dagster", "dagster-webserver", "dagster-daemon", "chap-scheduler-run", "chap-sandbox"):
        assert f"'{script}'" in scripts, script
    # The venv's interpreter is the base's own (Debian's /usr/bin/python3 here; /usr/local/bin in
    # the official image): nothing else differs between the two bases.
    home = lane.docker.containers.run(IMAGE, ["sh", "-c", "grep ^home /opt/venv/pyvenv.cfg"], remove=True).decode()
    assert home.strip() == "home = /usr/bin"


def _machine_ca_fingerprints() -> list[bytes]:
    """Distinctive lines of the CAs this machine adds to its bundle (the TLS proxy's), which pip
    needs on the host and which must never reach an image layer."""
    lines = []
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        body = [ln for ln in crt.read_bytes().splitlines() if ln and not ln.startswith(b"-----")]
        lines += [ln for ln in body[3:-2] if len(ln) >= 60][:2]
    return lines


def test_no_secret_or_pip_configuration_in_any_layer(lane: Lane, tmp_path: Path) -> None:
    """docker save + every file of every layer, and docker history: the build's pip config
    (its wheelhouse URL), the machine's extra CA certificates and any secret mount are absent."""
    needles = {
        "pip config": lane.lane.pip_conf_text.encode(),
        "wheelhouse URL": lane.lane.wheelhouse_url.encode(),
        "DHIS2 password": PASSWORD.encode(),
    } | {f"machine CA line {i}": ln for i, ln in enumerate(_machine_ca_fingerprints())}
    assert any(k.startswith("machine CA") for k in needles), "no machine CA found to look for"
    saved = tmp_path / "image.tar"
    lane.lane.docker("save", "-o", str(saved), IMAGE, timeout=600)
    bad_names = re.compile(r"(^|/)(pip\.conf|pip-cert|\.env)$|^run/secrets/.+")
    found: list[str] = []
    layers = 0
    base_layers = {layer for layer in lane.docker.images.get(BASE_IMAGE).attrs["RootFS"]["Layers"]}
    with tarfile.open(saved) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer_name in manifest[0]["Layers"]:
            layers += 1
            data = outer.extractfile(layer_name).read()
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                for member in layer:
                    if bad_names.search(member.name.lstrip("./")):
                        found.append(f"{layer_name}: file {member.name}")
                    if not member.isfile():
                        continue
                    content = layer.extractfile(member).read()
                    for what, needle in needles.items():
                        if what == "DHIS2 password" and not member.name.endswith((".env", ".yaml", ".yml", ".conf")):
                            continue  # "district" is an ordinary word elsewhere
                        if needle in content:
                            found.append(f"{layer_name}: {what} in {member.name}")
    history = lane.lane.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
    for what, needle in needles.items():
        if needle in history:
            found.append(f"history: {what}")
    # The pip steps (builder stage, not in the final image's history) did use the secret.
    build_log = lane.lane.build_log.read_text(errors="replace")
    assert re.search(r"RUN --mount=type=cache,target=/root/.cache/pip\s+--mount=type=secret,id=pip.conf", build_log)
    assert "Successfully installed" in build_log or "DONE" in build_log
    assert layers > len(base_layers)
    assert not found, found


# --------------------------------------------------------------------------------------------
# the services


def test_user_code_webserver_and_daemon_are_up(lane: Lane) -> None:
    # Each service healthy by its own compose health check (the shipped commands, run every 2-10 s
    # in the lane instead of every 5-30 s).
    deadline = time.monotonic() + 120
    for service in ("postgres", "user-code", "webserver", "daemon"):
        while True:
            state = lane.docker.containers.get(lane.lane.container(service)).attrs["State"]
            assert state["Status"] == "running", (service, state)
            if state["Health"]["Status"] == "healthy":
                break
            assert state["Health"]["Status"] == "starting" and time.monotonic() < deadline, (service, state["Health"])
            time.sleep(1)
    # user-code: Dagster's own gRPC health check agrees with the compose one (code_server_health).
    check = lane.lane.docker("exec", lane.lane.container("user-code"),
                             "dagster", "api", "grpc-health-check", "-p", str(lane.grpc_port), check=False)
    assert check.returncode == 0, check.stderr
    # webserver: the UI itself.
    page = httpx.get(f"http://127.0.0.1:{lane.ui_port}/", timeout=30)
    assert page.status_code == 200 and re.search(r"<title[^>]*>Dagster</title>", page.text), page.text[:300]
    # daemon: every required daemon heartbeats.
    deadline = time.monotonic() + 90
    while True:
        statuses = lane.ui.graphql(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } } }"
        )["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = [s for s in statuses if s["required"]]
        if required and all(s["healthy"] and s["lastHeartbeatTime"] for s in required):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(2)
    types = {s["daemonType"] for s in required}
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= types, types
    # The daemon's instance is the image's dagster.yaml with only the lane's two clocks changed.
    shipped = yaml.safe_load((REPO / "deploy" / "docker" / "dagster.yaml").read_text())
    read = lane.lane.docker("exec", lane.lane.container("daemon"), "cat", "/opt/dagster/home/dagster.yaml").stdout
    daemon_instance = yaml.safe_load(read)
    assert daemon_instance["run_monitoring"].pop("poll_interval_seconds") == 5
    assert daemon_instance["run_coordinator"]["config"].pop("dequeue_interval_seconds") == 1
    del shipped["run_monitoring"]["poll_interval_seconds"], shipped["run_coordinator"]["config"]["dequeue_interval_seconds"]
    assert daemon_instance == shipped


def test_socket_group_log_rotation_and_memory_limits(lane: Lane) -> None:
    assert lane.socket_gid != 0
    assert stat.S_IMODE(os.stat(lane.lane.socket).st_mode) == 0o660  # only root and the group
    for service in ("webserver", "daemon"):
        container = lane.docker.containers.get(lane.lane.container(service))
        # uid 10001 reaches the Docker API only through DOCKER_SOCKET_GID.
        out = container.exec_run(["python", "-c", "import os, docker; print(os.getuid(), os.getgroups(), docker.from_env().ping())"])
        assert out.exit_code == 0, out.output
        uid, rest = out.output.decode().split(" ", 1)
        assert uid == str(UID) and str(lane.socket_gid) in rest and rest.strip().endswith("True"), out.output
    for service in ("user-code",):
        container = lane.docker.containers.get(lane.lane.container(service))
        denied = container.exec_run(["python", "-c", "import os; print(os.path.exists('/var/run/docker.sock'))"])
        assert denied.output.decode().strip() == "False"  # no socket where it is not needed
    for service in ("user-code", "webserver", "daemon"):
        host = lane.docker.containers.get(lane.lane.container(service)).attrs["HostConfig"]
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}, service
        assert host["Memory"] == 1024**3, service
        assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"], service
        assert host["Init"] is True, service


# --------------------------------------------------------------------------------------------
# runs


def test_run_starts_in_its_own_container_succeeds_and_reports_to_postgres(lane: Lane) -> None:
    add_partitions(lane, ["1"])
    posts_before = len(lane.sandbox.chap.jobs)
    run_id = lane.launch("1")
    container = lane.wait_container(run_id)
    attrs = container.attrs
    services = {lane.lane.container(s) for s in ("user-code", "webserver", "daemon", "postgres")}
    assert container.id not in services
    assert attrs["Config"]["Labels"]["dagster/run_id"] == run_id
    assert attrs["Config"]["Labels"]["dagster/job_name"] == "dhis2_chap_prediction"
    assert attrs["Config"]["Image"] == IMAGE
    assert attrs["Config"]["Cmd"][:3] == ["dagster", "api", "execute_run"]
    assert attrs["Config"]["User"] == f"{UID}:{UID}"
    host = attrs["HostConfig"]
    assert host["Memory"] == 1024**3
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
    assert host["NetworkMode"] == "host" and host["AutoRemove"] is True
    assert host["CapDrop"] == ["ALL"] and host["Init"] is True
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env["DAGSTER_PG_DB"] == lane.database and env["CHAP_SCHEDULER_LOCATION_NAME"] == LOCATION

    assert lane.wait_status(run_id, {"SUCCESS", "FAILURE", "CANCELED"}, 180) == "SUCCESS", lane.diagnostics()
    tags = {t["key"]: t["value"] for t in lane.ui.graphql(
        "query R($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } runConfigYaml } } }",
        {"id": run_id})["runOrError"]["tags"]}
    assert tags["docker/container_id"] == container.id and tags["dagster/image"] == IMAGE
    assert tags["chap_scheduler/dhis2"] == LOCATION
    assert len(lane.sandbox.chap.jobs) == posts_before + 1
    events = lane.report_events(run_id)
    assert events, "no report of the run in Postgres"
    text, meta = lane.ui.report("1", REPORT_PATH)
    assert "- **Status:** SUCCEEDED" in text and meta["runId"] == run_id
    assert PASSWORD not in text


def test_per_dhis2_limit_holds_with_several_runs_queued(lane: Lane) -> None:
    add_partitions(lane, ["1"])
    run_ids = [lane.launch("1") for _ in range(4)]
    ids = set(run_ids)
    most_containers = most_started = 0
    saw_queued_while_two_ran = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        # Containers first, then statuses: a container whose run has already ended (its worker
        # exits a moment after reporting success) does not count against the limit.
        containers = lane.run_containers(ids)
        statuses = {r: lane.status(r) for r in run_ids}
        running = [r for r, s in statuses.items() if s in ("STARTING", "STARTED")]
        active = [c for c in containers if statuses[c.labels["dagster/run_id"]] in ("STARTING", "STARTED")]
        most_containers = max(most_containers, len(active))
        most_started = max(most_started, len(running))
        if len(running) == 2 and "QUEUED" in statuses.values():
            saw_queued_while_two_ran = True
        if all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses.values()):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"runs did not finish: {statuses}{lane.diagnostics()}")
    assert most_started <= 2 and most_containers <= 2, (most_started, most_containers)
    assert most_containers == 2 and saw_queued_while_two_ran
    assert set(statuses.values()) == {"SUCCESS"}, statuses


def test_killed_run_container_fails_the_run_and_it_still_gets_its_report(lane: Lane) -> None:
    add_partitions(lane, ["1"])
    lane.sandbox.faults.update({"chap_job": "hang"})  # the prediction never ends: the run waits on chap
    try:
        posts_before = len(lane.sandbox.chap.jobs)
        run_id = lane.launch("1")
        container = lane.wait_container(run_id)
        deadline = time.monotonic() + 120
        while len(lane.sandbox.chap.jobs) == posts_before:  # wait until it has submitted to chap
            assert time.monotonic() < deadline, "the run never submitted its prediction" + lane.diagnostics()
            time.sleep(0.3)
        assert lane.status(run_id) == "STARTED"
        lane.lane.docker("kill", container.id)
        t0 = time.monotonic()
        # Run monitoring (every 60 s as shipped in deploy/docker/dagster.yaml, every 5 s in the
        # lane) finds the container gone and fails the run.
        assert lane.wait_status(run_id, {"SUCCESS", "FAILURE", "CANCELED"}, 240) == "FAILURE"
        failed_after = time.monotonic() - t0
        # The failure sensor's backstop writes the report the run could not write.
        deadline = time.monotonic() + 180
        while not lane.report_events(run_id):
            assert time.monotonic() < deadline, "no backstop report" + lane.diagnostics()
            time.sleep(2)
        text, meta = lane.ui.report("1", REPORT_PATH)
        assert meta["run_id"] == run_id and meta["status"] == "failed", meta
        assert "**Status:** FAILED" in text and container.id in text, text
        messages = lane.ui.graphql(
            """query E($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
                 __typename ... on MessageEvent { message } } } } }""", {"id": run_id})["logsForRun"]["events"]
        failures = [e["message"] for e in messages if e["__typename"] == "RunFailureEvent"]
        assert failures and "run worker status" in failures[0] and container.id in failures[0], messages[-5:]
        time.sleep(5)
        assert len(lane.sandbox.chap.jobs) == posts_before + 1, "a second POST was sent to chap"
        print(f"\nkilled run failed by run monitoring {failed_after:.0f} s after the kill")
    finally:
        lane.sandbox.faults.reset()
