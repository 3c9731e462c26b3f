"""The real Dagster stack for end-to-end tests: dagster-webserver and dagster-daemon on loopback.

The instance is the repository's own dagster.yaml (Postgres, queued run coordinator), on a
fresh database of the machine's PostgreSQL; the code location is served by one code server that
both use, as in the Docker deployment (or, when asked, as the repository's workspace.yaml serves it
on a host). Processes are started from Python in their own
process groups, so they stop on SIGTERM (a ``dagster dev`` started with ``&`` from a shell
would not; see reference/dagster.md §0.10).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import psycopg2
import yaml

from chap_scheduler_dagster import code_server_health
from dhis2_sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "chap_scheduler_dagster"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
T = TypeVar("T")

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status tags { key value } runConfigYaml } }
}
"""

REPORT = """
query Report($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1, partitions: [$partition]) {
        runId partition
        metadataEntries { label ... on MarkdownMetadataEntry { mdStr } ... on TextMetadataEntry { text } }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_every_minute_setup(sandbox: Sandbox, setup_id: int) -> None:
    """A copy of the sandbox's monthly model whose chap schedule fires every minute, for chap_schedule_sensor."""
    monthly = sandbox.chap.setups[1]
    sandbox.chap.add_setup(
        id=setup_id, name="Every minute (chap cron)", periodType="month",
        startPeriod=monthly["startPeriod"], orgUnits=monthly["orgUnits"],
        covariateSources=monthly["covariateSources"], scheduleCronExpression="* * * * *", scheduleEnabled=True,
    )


def instance_with_quick_clocks(source: Path, *, monitoring_poll_seconds: int | None = None) -> dict:
    """A shipped dagster.yaml with the daemon's clocks shortened for tests, every other setting as
    shipped: the run queue looked at every 1 s instead of 5 (a launched run starts at once instead
    of 2.5 s later on average), and, when asked, run monitoring every few seconds instead of 60."""
    config = yaml.safe_load(source.read_text())
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    if monitoring_poll_seconds is not None:
        config["run_monitoring"]["poll_interval_seconds"] = monitoring_poll_seconds
    return config


def process_group_members(groups: set[int]) -> list[psutil.Process]:
    """Every process in these process groups, including those whose parent has died."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


def create_database() -> str:
    name = f"chap_e2e_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(dbname="postgres", **PG)
    except psycopg2.OperationalError as exc:  # loud, never a skip
        raise RuntimeError(
            f"PostgreSQL on 127.0.0.1:5432 is needed for the end-to-end tests and is not reachable: {exc}. "
            "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        ) from exc
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return name


def drop_database(name: str) -> None:
    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


@dataclass
class DagsterStack:
    home: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    # One client for every GraphQL call: httpx.post() builds a client (and its TLS context) per call,
    # 26 ms of CPU each, and the e2e tests and the Docker lane call it about 900 times a run.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60), repr=False)
    # The command of the one code server: `dagster api grpc`; benchmarks/idle_cost.py also runs
    # `dagster code-server start`, the Docker deployment's, which supervises a `dagster api grpc`.
    code_server: tuple[str, ...] = ("api", "grpc")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, daemon: bool = True, timeout: float = 90, host_workspace: bool = False) -> None:
        """``host_workspace``: the repository's ``workspace.yaml``, as the README's host deployment
        runs it (the webserver and the daemon each start a code server of their own); by default one
        code server serves both, as in the Docker deployment."""
        deadline = time.monotonic() + timeout
        workspace = REPO / "workspace.yaml" if host_workspace else self._start_code_server(deadline)
        self._spawn("webserver", [str(BIN / "dagster-webserver"), "-w", str(workspace),
                                  "-h", "127.0.0.1", "-p", str(self.port)])
        if daemon:
            self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = self.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                      "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
                entries = answer["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    error = entries[0]["locationOrLoadError"]
                    if error["__typename"] == "PythonError":
                        raise RuntimeError(f"code location failed to load: {error['message']}")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"dagster-webserver not ready in {timeout} s\n{self.log_tail()}")

    def _start_code_server(self, deadline: float) -> Path:
        """One code server for the webserver and the daemon, as the Docker deployment runs it (its
        ``user-code`` service), and a workspace that points both at it. With the repository's
        ``workspace.yaml`` (``python_module``) each of them starts its own (the daemon two): about
        1.5 CPU-s more to start a stack, and 2 CPU-s a minute more while it idles."""
        port = free_port()
        self._spawn("code-server", [str(BIN / "dagster"), *self.code_server, "-m", "chap_scheduler_dagster.definitions",
                                    "-h", "127.0.0.1", "-p", str(port)])
        while not _serving(port):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the code server did not serve on port {port}\n{self.log_tail()}")
            time.sleep(0.2)
        workspace = self.home / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [
            {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": LOCATION}}]}))
        return workspace

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.home / f"{name}.log"
        self.logs.append(log)
        handle = open(log, "wb")
        self.processes.append(
            subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _check_alive(self) -> None:
        for p in self.processes:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with {p.returncode}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines() if log.exists() else []
            out.append(f"--- {log.name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the code server, the webserver and the daemon with everything they started (the run
        workers share the code server's process group). Signalling a group only while its leader
        lived, and waiting only for the leader, left processes behind."""
        groups = {p.pid for p in self.processes}
        members = process_group_members(groups)
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # Nothing here tests a graceful stop (test_quickstart.py does): after 3 s the rest is killed.
        _, alive = psutil.wait_procs(members, timeout=3)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for p in self.processes:
            p.wait()
        self.http.close()

    def wait_until(self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 1.0) -> T:
        """The predicate's first truthy answer, asked every ``interval`` s; after ``timeout`` s a
        failure that says what did not happen, with the tails of the logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"{what} did not happen within {timeout} s\n{self.log_tail()}")

    # ---- GraphQL, as the UI does it ----
    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = self.http.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch(self, partition: str, run_config: dict, job: str = "dhis2_chap_prediction") -> dict:
        params = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "pipelineName": job},
            "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        }
        return self.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]

    def wait_for_run(self, run_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.graphql(RUN, {"runId": run_id})["runOrError"]
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            self._check_alive()
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} did not end within {timeout} s\n{self.log_tail()}")

    def report(self, partition: str, asset_path: list[str] | None = None) -> tuple[str, dict[str, str]]:
        data = self.graphql(REPORT, {"path": asset_path or ["dhis2_chap_prediction_report"], "partition": partition})
        materializations = data["assetOrError"]["assetMaterializations"]
        assert materializations, f"no report for partition {partition}"
        entries = {e["label"]: e.get("mdStr") or e.get("text") for e in materializations[0]["metadataEntries"]}
        return entries["report"], entries | {"runId": materializations[0]["runId"]}


def _serving(port: int) -> bool:
    """The code server's health check (the Docker deployment's), its reason for "not yet" kept out of the test's output."""
    with redirect_stderr(io.StringIO()):
        return code_server_health.main(["-p", str(port), "--timeout", "1"]) == 0


@contextmanager
def running_stack(tmp: Path, dhis2_url: str, extra_env: dict[str, str], *, daemon: bool = True,
                  host_workspace: bool = False) -> Iterator[DagsterStack]:
    """A started stack on a fresh database against the DHIS2 at ``dhis2_url``; stopped, with what it
    started, and its database dropped on the way out. Unless overridden, chap is polled every 0.3 s and
    the run-status sensors (overview, backstop reports) look every 5 s instead of 30."""
    database = create_database()
    quick = {"CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.3", "CHAP_SCHEDULER_OVERVIEW_INTERVAL_SECONDS": "5"}
    stack = make_stack(tmp, database, {"DHIS2_BASE_URL": dhis2_url} | quick | extra_env)
    try:
        stack.start(daemon=daemon, host_workspace=host_workspace)
        yield stack
    finally:
        stack.stop()
        drop_database(database)


def make_stack(tmp: Path, database: str, extra_env: dict[str, str]) -> DagsterStack:
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # Run monitoring keeps its 60 s: a killed run worker is failed by its code server, as on a host.
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_with_quick_clocks(REPO / "dagster.yaml"), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DHIS2_", "CHAP_SCHEDULER_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG["host"],
        "DAGSTER_PG_PORT": str(PG["port"]),
        "DAGSTER_PG_USER": PG["user"],
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database,
    } | extra_env
    return DagsterStack(home=home, env=env)
