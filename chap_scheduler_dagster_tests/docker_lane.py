"""The Docker lane's machinery: its own dockerd, a cached local base image, the project image,
and the compose deployment brought up with deploy/test/docker-compose.lane.yml.

Everything is started from Python and stopped by id: the compose project's containers, volumes
and network, any run container left over, the images, then dockerd by its PID. dockerd keeps
its data and exec roots in a temporary directory that is removed at the end, so no image layer
outlives the lane. The only things kept between runs are the base image's root file system, a
tarball in CHAP_DOCKER_LANE_CACHE (default /var/cache/chap-scheduler-docker), made once with
debootstrap, and the wheelhouse the image installs from (one per set of requirements).

Needs root and Debian's docker.io, debootstrap and docker-compose packages (.ci/run installs
them). A missing tool or a daemon that does not come up fails loudly, never skips.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import yaml

from .dagster_stack import instance_with_quick_clocks

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("CHAP_DOCKER_LANE_CACHE", "/var/cache/chap-scheduler-docker"))
BASE_TARBALL = "base-bookworm-rootfs.tar"
BASE_IMAGE = "chap-scheduler-base:bookworm"
IMAGE = "chap-scheduler-dagster:lane"
PROJECT = "chap-lane"
# The 20.10 client from Debian's docker.io: the static 28.2 client first on PATH cannot build
# with BuildKit without the buildx plugin, and the legacy builder has no secret mounts.
DOCKER_BUILD_CLIENT = "/usr/bin/docker"
APT_SOURCES = Path("/etc/apt")
SUITE = "bookworm"  # the base image's Debian release


class LaneError(RuntimeError):
    pass


def require_tools() -> None:
    missing = [t for t in ("dockerd", "debootstrap", "docker-compose") if shutil.which(t) is None]
    if not Path(DOCKER_BUILD_CLIENT).exists():
        missing.append(DOCKER_BUILD_CLIENT)
    if missing:
        raise LaneError(f"the Docker lane needs {', '.join(missing)}: "
                        "apt-get install -y docker.io debootstrap docker-compose (as .ci/run does)")
    if os.geteuid() != 0:
        raise LaneError("the Docker lane starts its own dockerd and must run as root")


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise LaneError(f"{' '.join(argv[:6])} ... exited with {result.returncode}:\n"
                        f"{result.stdout.decode(errors='replace')[-3000:]}\n{result.stderr.decode(errors='replace')[-3000:]}")
    return result


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _kept(target: Path, make: Callable[[Path], Path]) -> bool:
    """``target`` in the cache, made once: ``make`` builds it in a scratch directory of the cache and
    returns it, and it is moved in whole (never half made), all under the cache's lock. True when
    made now."""
    with _locked(CACHE / ".lock"):
        if target.exists():
            return False
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=CACHE))
        try:
            make(work).rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return True


def debian_mirror(apt: Path = APT_SOURCES, suite: str = SUITE) -> str:
    """Where debootstrap gets the base system: ``CHAP_DOCKER_LANE_MIRROR``, else the Debian mirror this
    machine's apt already uses for ``suite`` (no host name is written into the repository: the
    machine's package sources decide). deb822 ``.sources`` files and one-line ``sources.list``."""
    if os.environ.get("CHAP_DOCKER_LANE_MIRROR"):
        return os.environ["CHAP_DOCKER_LANE_MIRROR"]
    files = sorted((apt / "sources.list.d").glob("*.sources")) + [apt / "sources.list"]
    files += sorted((apt / "sources.list.d").glob("*.list"))
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                pairs = (line.split(":", 1) for line in stanza.splitlines()
                         if ":" in line and not line.lstrip().startswith("#"))
                fields = {key.strip().lower(): value.split() for key, value in pairs}
                if suite in fields.get("suites", []) and "deb" in fields.get("types", []) and fields.get("uris"):
                    return fields["uris"][0]
        else:
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()  # without [options]
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    raise LaneError(f"no apt source for Debian {suite} under {apt}, so debootstrap has no mirror: "
                    "set CHAP_DOCKER_LANE_MIRROR to a Debian mirror's URL (the one apt uses)")


def base_rootfs_tarball(log) -> Path:
    """The cached root file system of the local base image; made with debootstrap on first use."""

    def debootstrap(work: Path) -> Path:
        run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             SUITE, str(work / "root"), debian_mirror()], timeout=1200)
        # Downloaded .debs and package lists are not part of the base.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (work / "root" / leftover).glob("*"):
                if p.is_file():
                    p.unlink()
        run(["tar", "-C", str(work / "root"), "-cf", str(work / "rootfs.tar"), "."], timeout=600)
        return work / "rootfs.tar"

    tarball = CACHE / BASE_TARBALL
    t0 = time.monotonic()
    if _kept(tarball, debootstrap):
        log(f"base rootfs made with debootstrap in {time.monotonic() - t0:.0f} s: {tarball}")
    return tarball


def lane_daemon_instance() -> dict:
    """The image's dagster.yaml with the daemon's two clocks shortened, so a killed run container
    is noticed in seconds and queued runs start at once; every other setting as shipped."""
    return instance_with_quick_clocks(REPO / "deploy" / "docker" / "dagster.yaml", monitoring_poll_seconds=5)


def wheelhouse() -> Path:
    """Wheels of the project's dependencies (and its build backend) for the image build, made with
    the host's pip configuration and kept in the cache while pyproject.toml asks for the same
    packages (a changed requirement makes a new one)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # setuptools and wheel: the build backend of `pip install --no-deps .`
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    key = hashlib.sha256("\n".join([sys.version, *wanted]).encode()).hexdigest()[:16]
    wheels = CACHE / f"wheelhouse-{key}"

    def pip_wheel(work: Path) -> Path:
        (work / "requirements.txt").write_text("\n".join(wanted) + "\n")
        run([str(BIN / "python"), "-m", "pip", "wheel", "--quiet", "-w", str(work / "wheels"),
             "-r", str(work / "requirements.txt")], timeout=1200)
        return work / "wheels"

    _kept(wheels, pip_wheel)
    return wheels


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


@contextmanager
def wheelhouse_server(directory: Path) -> Iterator[str]:
    """Serve the wheelhouse on loopback for the build's `pip install --no-index`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class DockerLane:
    tmp: Path
    log: object = print
    dockerd: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)
    compose_env: dict[str, str] = field(default_factory=dict)
    compose_dir: Path | None = None

    @property
    def root(self) -> Path:
        return self.tmp / "d"

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        return env | {"DOCKER_HOST": f"unix://{self.socket}"}

    def docker(self, *args: str, timeout: float = 600, check: bool = True, input: bytes | None = None):
        return run(["docker", *args], env=self.env, timeout=timeout, check=check, input=input)

    # ---- dockerd -----------------------------------------------------------------------
    def start_dockerd(self) -> None:
        t0 = time.monotonic()
        self.root.mkdir(parents=True)
        log = open(self.tmp / "dockerd.log", "wb")
        self.dockerd = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "-H", f"unix://{self.socket}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise LaneError(f"dockerd exited with {self.dockerd.returncode}:\n{self.dockerd_log()}")
            if self.socket.exists() and self.docker("version", check=False, timeout=20).returncode == 0:
                self.timings["dockerd_start_s"] = time.monotonic() - t0
                return
            time.sleep(0.3)
        raise LaneError(f"dockerd did not answer on {self.socket} within 60 s:\n{self.dockerd_log()}")

    def dockerd_log(self) -> str:
        path = self.tmp / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # ---- images ------------------------------------------------------------------------
    def import_base(self) -> None:
        t0 = time.monotonic()
        tarball = base_rootfs_tarball(self.log)
        self.timings["base_rootfs_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        with open(tarball, "rb") as handle:
            result = subprocess.run(
                ["docker", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', "-", BASE_IMAGE],
                stdin=handle, env=self.env, capture_output=True, timeout=600,
            )
        if result.returncode != 0:
            raise LaneError(f"docker import failed: {result.stderr.decode(errors='replace')}")
        self.timings["base_import_s"] = time.monotonic() - t0

    def build(self) -> None:
        """Build the project image from the local base, with BuildKit and the 20.10 client.

        The machine's pip configuration and CA bundle are used on the host only, to build a
        wheelhouse; the build installs from it with --no-index over loopback. The pip config that
        says so reaches the build as a secret (mounted for the two pip commands only)."""
        t0 = time.monotonic()
        wheels = wheelhouse()
        self.timings["wheelhouse_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        with wheelhouse_server(wheels) as url:
            pip_conf = self.tmp / "pip.conf"
            pip_conf.write_text(f"[global]\nno-index = true\nfind-links = {url}\n")
            pip_conf.chmod(0o600)
            self.build_log = self.tmp / "build.log"
            result = subprocess.run(
                [DOCKER_BUILD_CLIENT, "build", "--progress=plain", "--network", "host",
                 "--secret", f"id=pip.conf,src={pip_conf}",
                 "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "-t", IMAGE, str(REPO)],
                env=self.env | {"DOCKER_BUILDKIT": "1"}, capture_output=True, timeout=1800,
            )
            self.build_log.write_bytes(result.stdout + result.stderr)
            self.pip_conf_text = pip_conf.read_text()
            self.wheelhouse_url = url
        if result.returncode != 0:
            raise LaneError(f"docker build failed:\n{self.build_log.read_text(errors='replace')[-5000:]}")
        self.timings["build_s"] = time.monotonic() - t0

    # ---- compose -----------------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 600, check: bool = True,
                files: tuple[Path, ...] | None = None) -> subprocess.CompletedProcess:
        assert self.compose_dir is not None
        files = files or (self.compose_dir / "effective.yml",)
        return run(["docker-compose", "--project-directory", str(self.compose_dir), "-p", PROJECT,
                    *[a for f in files for a in ("-f", str(f))], *args],
                   env=self.env | self.compose_env, timeout=timeout, check=check)

    def compose_up(self, dotenv: dict[str, str], grpc_port: int, ui_port: int) -> None:
        """`docker-compose up -d` of the repository's compose file plus the lane override, with a
        project directory of the lane's own, so that the .env it needs is not written into the
        checkout (Compose reads .env and resolves `env_file: .env` there)."""
        t0 = time.monotonic()
        self.compose_dir = self.tmp / "compose"
        self.compose_dir.mkdir()
        env_file = self.compose_dir / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
        env_file.chmod(0o600)
        workspace = self.compose_dir / "lane-workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {grpc_port}\n      location_name: dhis2\n"
        )
        workspace.chmod(0o644)
        daemon_instance = self.compose_dir / "lane-daemon-dagster.yaml"
        daemon_instance.write_text(yaml.safe_dump(lane_daemon_instance(), sort_keys=False))
        daemon_instance.chmod(0o644)
        self.compose_env = {
            "CHAP_SCHEDULER_IMAGE": IMAGE,
            "CHAP_LANE_GRPC_PORT": str(grpc_port),
            "CHAP_LANE_UI_PORT": str(ui_port),
            "CHAP_LANE_DOCKER_SOCKET": str(self.socket),
            "CHAP_LANE_WORKSPACE": str(workspace),
            "CHAP_LANE_DAEMON_INSTANCE": str(daemon_instance),
        }
        # The merged configuration, as Compose itself computes it. One change on top: a service on
        # host networking loses its `ports` (the webserver's loopback publication), because an
        # override cannot remove a list entry in Compose v1 and docker-py refuses port bindings
        # with network_mode host. Nothing else is touched.
        merged = self.compose("config", files=(REPO / "docker-compose.yml",
                                               REPO / "deploy" / "test" / "docker-compose.lane.yml")).stdout
        config = yaml.safe_load(merged)
        for service in config["services"].values():
            if service.get("network_mode") == "host":
                service.pop("ports", None)
        effective = self.compose_dir / "effective.yml"
        effective.write_text(yaml.safe_dump(config, sort_keys=False))
        effective.chmod(0o600)
        self.effective_config = config
        self.compose("up", "-d", "--no-build", timeout=900)
        self.timings["compose_up_s"] = time.monotonic() - t0

    def container(self, service: str) -> str:
        """The service's container id, asked of compose once (each `docker-compose ps` is a new
        Python process of 0.4 CPU-s; the services are never recreated during the lane)."""
        if service not in self.containers:
            out = self.compose("ps", "-q", service).stdout.decode().split()
            if not out:
                raise LaneError(f"no container for service {service}")
            self.containers[service] = out[0]
        return self.containers[service]

    def service_logs(self) -> str:
        if self.compose_dir is None:
            return ""
        result = self.compose("logs", "--no-color", "--tail", "60", check=False, timeout=60)
        return result.stdout.decode(errors="replace")[-12000:]

    # ---- the end -----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop and remove, by id, everything the lane started; then dockerd; then its roots."""
        t0 = time.monotonic()
        if self.dockerd is not None and self.dockerd.poll() is None:
            try:
                if self.compose_dir is not None:
                    self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False, timeout=300)
                self.timings["stop_compose_down_s"] = time.monotonic() - t0
                # Run containers (not part of the compose project) and anything else left.
                ids = self.docker("ps", "-aq", check=False).stdout.decode().split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
                volumes = self.docker("volume", "ls", "-q", check=False).stdout.decode().split()
                if volumes:
                    self.docker("volume", "rm", "-f", *volumes, check=False)
                # Images and build cache live in the data root, removed below with dockerd's roots.
            finally:
                self.timings["stop_containers_s"] = time.monotonic() - t0
                self.dockerd.send_signal(signal.SIGTERM)
                try:
                    self.dockerd.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.dockerd.kill()
                    self.dockerd.wait()
        self.timings["stop_dockerd_s"] = time.monotonic() - t0
        self._unmount_leftovers()
        shutil.rmtree(self.root, ignore_errors=True)
        self.timings["stop_s"] = time.monotonic() - t0
        if self.root.exists() or self._mounts():
            raise LaneError(f"the lane left {self.root} or mounts under it: {self._mounts()}")

    def _mounts(self) -> list[str]:
        prefix = str(self.root)
        return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[1].startswith(prefix)]

    def _unmount_leftovers(self) -> None:
        for mount in sorted(self._mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
