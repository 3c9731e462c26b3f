#!/usr/bin/env python3
"""Run a real chap-core 2.5.1 on loopback as a test peer ("real chap-core lane").

Runs under the project venv (it reuses the package's periods and DHIS2 reader)::

    .venv/bin/python scripts/real_chap.py install
    .venv/bin/python scripts/real_chap.py start [--port P]
    .venv/bin/python scripts/real_chap.py seed --dhis2-url URL [--user admin --password district] [--from-setup 1]
    .venv/bin/python scripts/real_chap.py status
    .venv/bin/python scripts/real_chap.py stop

chap-core 2.5.1 needs Python 3.13, so ``install`` builds a separate venv with pyenv's 3.13
(or ``python3.13`` on PATH) under ``$CHAP_REAL_HOME`` (default ``~/.cache/chap-scheduler-dagster/real-chap/``), pins
SQLAlchemy 2.0.50 and sqlmodel 0.0.39 (the versions of chap-core's own lock file) and adds the
``config/configured_models/default.yaml`` the wheel lacks.  ``start`` runs its own redis-server,
the chap Celery worker and the chap API (uvicorn) on free 127.0.0.1 ports with a SQLite database;
all run state lives in ``$CHAP_REAL_RUN`` (default ``$CHAP_REAL_HOME/run``): state.json, logs,
database, chap runs dir, MPLCONFIGDIR.  ``seed`` creates in that chap a prediction setup that
mirrors one of the DHIS2 sandbox's setups, using only HTTP (the sandbox's chap stand-in and the
standard DHIS2 API), via make-dataset -> create-backtest (naive_model) -> prediction-setups.

See shared/reference/chap-core-api.md sections 8 and 9 for the facts this relies on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
from chap_scheduler_dagster.core.errors import SchedulerError
from chap_scheduler_dagster.core.periods import Period, covering, parse_period, period_range

REPO = Path(__file__).resolve().parent.parent

CHAP_CORE_VERSION = "2.5.1"
PINS = ("SQLAlchemy==2.0.50", "sqlmodel==0.0.39")
INSTALL_SPEC = {
    "chap-core": CHAP_CORE_VERSION,
    "pins": list(PINS),
    "default_yaml_fix": True,
    "layout": 1,
}
MARKER_NAME = ".real-chap-install.json"

READY_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 300.0


class RealChapError(RuntimeError):
    """A loud, user-facing failure."""


# --------------------------------------------------------------------------- paths


def chap_home() -> Path:
    # Outside the checkout by default, so that a fresh clone (CI) reuses an install it finds complete.
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("CHAP_REAL_HOME") or (cache / "chap-scheduler-dagster" / "real-chap")).resolve()


def venv_dir() -> Path:
    return chap_home() / "venv"


def run_dir() -> Path:
    return Path(os.environ.get("CHAP_REAL_RUN") or (chap_home() / "run")).resolve()


def state_path() -> Path:
    return run_dir() / "state.json"


def marker_path() -> Path:
    return venv_dir() / MARKER_NAME


def _log(msg: str) -> None:
    print(f"[real_chap] {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- install


def find_python313() -> str:
    """Return a Python 3.13 interpreter: pyenv's versions/3.13.* first, then python3.13 on PATH."""
    candidates: list[str] = []
    roots: list[str] = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            out = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                roots.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    roots.append(str(Path.home() / ".pyenv"))

    def version_key(p: str) -> tuple[int, ...]:
        m = re.search(r"3\.13\.(\d+)", p)
        return (int(m.group(1)),) if m else (-1,)

    for root in dict.fromkeys(roots):
        found = [p for p in glob.glob(os.path.join(root, "versions", "3.13.*", "bin", "python3"))
                 if re.search(r"/3\.13\.\d+/bin/", p)]
        candidates.extend(sorted(found, key=version_key, reverse=True))
    on_path = shutil.which("python3.13")
    if on_path:
        candidates.append(on_path)
    for cand in candidates:
        try:
            out = subprocess.run(
                [cand, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip() == "3.13":
            return cand
    raise RealChapError(
        "no Python 3.13 found (chap-core 2.5.1 needs Python >=3.13,<3.15). Looked for "
        "`pyenv root`/versions/3.13.*/bin/python3 and python3.13 on PATH. Install one, e.g. "
        "`pyenv install 3.13`."
    )


def require_redis() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise RealChapError(
            "redis-server not found on PATH; chap-core needs Redis (Celery broker + job metadata). "
            "Install it with: apt-get install redis-server"
        )
    return path


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def read_marker() -> dict | None:
    try:
        return json.loads(marker_path().read_text())
    except (OSError, ValueError):
        return None


def install_complete() -> bool:
    m = read_marker()
    return bool(m) and m.get("spec") == INSTALL_SPEC and venv_python().exists()


def _run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> None:
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RealChapError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail(log)}")


def cmd_install(args: argparse.Namespace) -> int:
    redis = require_redis()
    if install_complete() and not args.force:
        m = read_marker() or {}
        _log(f"already installed: {venv_dir()} (chap-core {m.get('versions', {}).get('chap_core')}, "
             f"python {m.get('python')}); nothing to do")
        return 0
    t0 = time.monotonic()
    py313 = find_python313()
    home = chap_home()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "install.log"
    _log(f"installing chap-core {CHAP_CORE_VERSION} into {venv_dir()} with {py313} (log: {log})")
    if marker_path().exists():
        marker_path().unlink()
    vpy = venv_python()
    if vpy.exists():
        ok = subprocess.run([str(vpy), "-c", "import sys; assert sys.version_info[:2] == (3, 13)"],
                            capture_output=True).returncode == 0
        if not ok:
            _log(f"existing {venv_dir()} is not a working Python 3.13 venv; recreating it")
            shutil.rmtree(venv_dir())
    if not vpy.exists():
        _run_logged([py313, "-m", "venv", str(venv_dir())], log, timeout=300)
    pip = [str(vpy), "-m", "pip", "--disable-pip-version-check", "install", "--no-input"]
    env = dict(os.environ, PIP_NO_INPUT="1")
    # One resolve with the pins (they are chap-core's own uv.lock versions); fall back to the
    # two-step recipe of the reference notes if the resolver disagrees.
    try:
        _run_logged(pip + [f"chap-core=={CHAP_CORE_VERSION}", *PINS], log, timeout=1800, env=env)
    except RealChapError as exc:
        _log(f"one-step install failed, trying install-then-pin: {str(exc).splitlines()[0]}")
        _run_logged(pip + [f"chap-core=={CHAP_CORE_VERSION}"], log, timeout=1800, env=env)
        _run_logged(pip + list(PINS), log, timeout=900, env=env)
    purelib = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    default_yaml = Path(purelib) / "config" / "configured_models" / "default.yaml"
    if not default_yaml.exists():
        default_yaml.parent.mkdir(parents=True, exist_ok=True)
        default_yaml.write_text("[]\n")
    check = subprocess.run(
        [str(vpy), "-c",
         "import json, importlib.metadata as md, chap_core.file_io.file_paths as fp, sys;"
         "print(json.dumps({'chap_core': md.version('chap-core'), 'sqlalchemy': md.version('SQLAlchemy'),"
         "'sqlmodel': md.version('sqlmodel'), 'config_path': str(fp.get_config_path()),"
         "'python': sys.version.split()[0]}))"],
        capture_output=True, text=True, env=dict(os.environ, MPLCONFIGDIR=str(home / "mpl-install")),
    )
    if check.returncode != 0:
        raise RealChapError(f"install verification failed:\n{check.stderr[-4000:]}")
    versions = json.loads(check.stdout.strip().splitlines()[-1])
    want = {"chap_core": CHAP_CORE_VERSION, "sqlalchemy": PINS[0].split("==")[1], "sqlmodel": PINS[1].split("==")[1]}
    bad = {k: versions.get(k) for k, v in want.items() if versions.get(k) != v}
    if bad:
        raise RealChapError(f"installed versions differ from the pins: {bad} (wanted {want})")
    marker = {
        "spec": INSTALL_SPEC,
        "python": versions["python"],
        "python_source": py313,
        "versions": versions,
        "default_yaml": str(default_yaml),
        "redis_server": redis,
        "installed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "install_seconds": round(time.monotonic() - t0, 1),
    }
    marker_path().write_text(json.dumps(marker, indent=2) + "\n")
    _log(f"installed in {marker['install_seconds']} s: {versions}")
    return 0


# --------------------------------------------------------------------------- start / stop / status


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_state() -> dict | None:
    try:
        return json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None


def write_state(state: dict) -> None:
    state_path().parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_path())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def chap_env(state: dict) -> dict[str, str]:
    rd = Path(state["run_dir"])
    env = dict(os.environ)
    # Never leak the project venv into the chap processes.
    for k in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(k, None)
    env.update({
        "CHAP_DATABASE_URL": state["database_url"],
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(state["ports"]["redis"]),
        "CELERY_BROKER": f"redis://127.0.0.1:{state['ports']['redis']}",
        "CHAP_LOGS_DIR": str(rd / "chap-logs"),
        "CHAP_RUNS_DIR": str(rd / "runs"),
        "MPLCONFIGDIR": str(rd / "mpl"),
        "C_FORCE_ROOT": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{venv_dir() / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def _spawn(cmd: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    fh = log.open("ab")
    try:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(cwd), start_new_session=True)
    finally:
        fh.close()


def _kill_group(pid: int, name: str, grace: float = 5.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL after `grace` seconds."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        pgid = pid  # leader gone; members may remain in the group
    if pgid in (os.getpgid(0),):  # never signal our own group
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _group_has_live_members(pgid):
            break
        time.sleep(0.1)
    else:
        _log(f"{name} (pgid {pgid}) did not exit after SIGTERM; sending SIGKILL")
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_has_live_members(pgid: int) -> bool:
    return bool(group_members(pgid))


def _owned(pid: int, expect: str) -> bool:
    return pid_alive(pid) and expect in _cmdline(pid)


PROC_MARKERS = {"redis": "redis-server", "worker": "celery", "api": "uvicorn"}


def stop_state(state: dict) -> list[str]:
    stopped = []
    # API first, then worker, then redis (the broker the others talk to).
    for name in ("api", "worker", "redis"):
        pid = (state.get("pids") or {}).get(name)
        if not pid:
            continue
        if pid_alive(pid):
            if not _owned(pid, PROC_MARKERS[name]):
                _log(f"{name}: pid {pid} now belongs to another program; leaving it alone")
                continue
        elif not _group_has_live_members(pid):
            continue  # leader and its group are gone already
        # leader alive and ours, or leader dead with orphans left in its group (e.g. the Celery pool child)
        _kill_group(pid, name)
        stopped.append(f"{name}({pid})")
    return stopped


def http_get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    import httpx

    r = httpx.get(url, timeout=timeout)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def cmd_start(args: argparse.Namespace) -> int:
    redis_bin = require_redis()
    if not install_complete():
        raise RealChapError(f"chap-core venv not installed at {venv_dir()}; run: "
                            f".venv/bin/python scripts/real_chap.py install")
    old = read_state()
    if old:
        api_pid = (old.get("pids") or {}).get("api")
        if api_pid and _owned(api_pid, "uvicorn"):
            try:
                code, _ = http_get_json(old["base_url"] + "/health/ready")
            except Exception:  # noqa: BLE001
                code = 0
            if code == 200:
                if args.port not in (None, old["ports"]["api"]):
                    raise RealChapError(f"already running at {old['base_url']} (not on port {args.port}); "
                                        f"run `stop` first")
                _log(f"already running and ready at {old['base_url']}")
                print(old["base_url"], flush=True)
                return 0
        _log("stale or unhealthy state.json found; stopping what it recorded")
        stop_state(old)
        state_path().unlink(missing_ok=True)

    t0 = time.monotonic()
    rd = run_dir()
    if rd.exists() and not args.keep_db:
        # fresh state every start: the DB is tied to the (non-persistent) Redis job metadata
        for sub in ("chap.sqlite", "runs", "chap-logs", "redis", "logs"):
            p = rd / sub
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    logs = rd / "logs"
    for d in (rd, logs, rd / "runs", rd / "chap-logs", rd / "mpl", rd / "redis"):
        d.mkdir(parents=True, exist_ok=True)
    if args.port:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", args.port))
            except OSError as exc:
                raise RealChapError(f"port 127.0.0.1:{args.port} is not free: {exc}") from None
    api_port = args.port or free_port()
    redis_port = free_port()
    while redis_port == api_port:
        redis_port = free_port()
    state: dict[str, Any] = {
        "chap_core_version": CHAP_CORE_VERSION,
        "home": str(chap_home()),
        "run_dir": str(rd),
        "venv": str(venv_dir()),
        "ports": {"api": api_port, "redis": redis_port},
        "base_url": f"http://127.0.0.1:{api_port}",
        "database_url": f"sqlite:///{rd / 'chap.sqlite'}",
        "logs": {"redis": str(logs / "redis.log"), "schema": str(logs / "schema.log"),
                 "worker": str(logs / "worker.log"), "api": str(logs / "api.log")},
        "pids": {},
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    env = chap_env(state)
    vbin = venv_dir() / "bin"

    def fail(msg: str, log_keys: Iterable[str]) -> RealChapError:
        parts = [msg]
        for k in dict.fromkeys(log_keys):
            parts.append(f"--- {state['logs'][k]} (tail) ---\n{tail(Path(state['logs'][k]))}")
        stop_state(state)
        write_state(dict(state, pids={}, failed=msg))
        return RealChapError("\n".join(parts))

    # 1) redis, no persistence, own dir
    p = _spawn([redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(rd / "redis"),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", ""], logs / "redis.log", env, rd)
    state["pids"]["redis"] = p.pid
    write_state(state)
    deadline = time.monotonic() + 15
    while not redis_ping(redis_port):
        if p.poll() is not None or time.monotonic() > deadline:
            raise fail(f"redis-server did not come up on 127.0.0.1:{redis_port}", ["redis"])
        time.sleep(0.1)

    # 2) schema (what gunicorn.conf.py's on_starting hook does in chap's Docker image)
    try:
        _run_logged([str(vbin / "python"), "-c",
                     "from chap_core.database.database import create_db_and_tables as f; f()"],
                    logs / "schema.log", timeout=180, env=env)
    except (RealChapError, subprocess.TimeoutExpired) as exc:
        raise fail(f"create_db_and_tables failed: {str(exc).splitlines()[0]}", ["schema"]) from None

    # 3) celery worker + 4) API
    w = _spawn([str(vbin / "celery"), "-A", "chap_core.rest_api.celery_tasks", "worker",
                "--loglevel=info", "--concurrency=1", "-n", f"realchap-{api_port}@%h"],
               logs / "worker.log", env, rd)
    state["pids"]["worker"] = w.pid
    write_state(state)
    a = _spawn([str(vbin / "uvicorn"), "chap_core.rest_api.app:app", "--host", "127.0.0.1",
                "--port", str(api_port), "--log-level", "info"], logs / "api.log", env, rd)
    state["pids"]["api"] = a.pid
    write_state(state)

    # 5) wait for readiness
    import httpx

    deadline = time.monotonic() + args.timeout
    last: Any = None
    while True:
        for name, proc in (("worker", w), ("api", a), ("redis", p)):
            if proc.poll() is not None:
                raise fail(f"chap {name} exited with code {proc.returncode} before ready", [name, "api", "worker"])
        try:
            r = httpx.get(state["base_url"] + "/health/ready", timeout=3)
            last = f"{r.status_code} {r.text[:300]}"
            if r.status_code == 200 and r.json().get("status") == "success":
                break
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise fail(f"chap not ready after {args.timeout:.0f} s at {state['base_url']}/health/ready "
                       f"(last answer: {last})", ["api", "worker"])
        time.sleep(0.5)
    state["ready_seconds"] = round(time.monotonic() - t0, 1)
    try:
        state["system_info"] = httpx.get(state["base_url"] + "/system/info", timeout=5).json()
    except Exception:  # noqa: BLE001
        pass
    write_state(state)
    _log(f"chap-core ready at {state['base_url']} in {state['ready_seconds']} s (run dir {rd})")
    print(state["base_url"], flush=True)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    state = read_state()
    if not state:
        _log(f"nothing to stop (no {state_path()})")
        return 0
    stopped = stop_state(state)
    state_path().unlink(missing_ok=True)
    _log("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def group_members(pgid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d))
    return sorted(out)


def cmd_status(args: argparse.Namespace) -> int:
    state = read_state()
    info: dict[str, Any] = {
        "home": str(chap_home()),
        "run_dir": str(run_dir()),
        "installed": install_complete(),
        "install": read_marker(),
        "state": state,
    }
    healthy = False
    if state:
        procs = {}
        for name, pid in (state.get("pids") or {}).items():
            members = group_members(pid)
            procs[name] = {"pid": pid, "alive": _owned(pid, PROC_MARKERS.get(name, "")),
                           "group_rss_mb": {m: rss_mb(m) for m in members}}
        info["processes"] = procs
        try:
            code, body = http_get_json(state["base_url"] + "/health/ready")
            info["health_ready"] = {"status_code": code, "body": body}
            healthy = code == 200
        except Exception as exc:  # noqa: BLE001
            info["health_ready"] = {"error": repr(exc)}
    print(json.dumps(info, indent=2))
    return 0 if healthy else 1


# --------------------------------------------------------------------------- periods (the package's)


def chap_period(period: str) -> str:
    """DHIS2's ids -> chap's (zero-padded weeks)."""
    return parse_period(period).chap_id


def next_periods(last: str, n: int, period_type: str | None = None) -> list[str]:
    """The n chap period ids that follow `last` (chap's forecast periods after the training data)."""
    end = parse_period(last, period_type)
    return [end.shift(k).chap_id for k in range(1, n + 1)]


def run_body(inputs: dict, name: str, n_periods: int = 3) -> dict:
    """Body of POST /v1/crud/prediction-setups/{id}/run from fetch_dhis2_inputs() output."""
    return {"name": name, "geojson": inputs["geojson"], "providedData": inputs["providedData"],
            "nPeriods": n_periods}


def min_training_periods(period_type: str) -> int:
    """chap's naive_model wants >= two whole years (104 weeks fail, 105 work; same for months)."""
    return {"week": 105, "month": 25, "year": 3}.get(period_type, 0)


# --------------------------------------------------------------------------- DHIS2 side of seeding


def fetch_sandbox_setup(client, dhis2_url: str, setup_id: int) -> dict:
    r = client.get(f"{dhis2_url}/__sandbox/chap/v1/crud/prediction-setups/{setup_id}")
    if r.status_code != 200:
        raise RealChapError(f"sandbox chap stand-in: GET prediction-setups/{setup_id} -> {r.status_code} {r.text[:500]}")
    return r.json()


def fetch_dhis2_inputs(client, dhis2_url: str, setup: dict, auth: tuple[str, str],
                       today: dt.date | None = None) -> dict:
    """Read org units (with geometry) and analytics for a setup's covariateSources through the DHIS2 API.

    Returns a dict with geojson, providedData (chap feature names, chap period ids), the period
    window actually used, and the org units kept/dropped. ``client`` is unused (the package's
    DHIS2 reader opens its own connection); it stays for callers that pass one.
    """
    sources = setup.get("covariateSources") or []
    if not sources:
        raise RealChapError("setup has no covariateSources")
    org_units = list(setup.get("orgUnits") or [])
    if not org_units:
        raise RealChapError("setup has no orgUnits")
    if not setup.get("startPeriod"):
        raise RealChapError("setup has no startPeriod")
    start = parse_period(setup["startPeriod"], setup.get("periodType"))
    ptype = start.type.value
    de_to_cov = {s["dataElementId"]: s["covariate"] for s in sources}
    window = period_range(start, covering(today or dt.datetime.now(dt.timezone.utc).date(), start.type),
                          cap=100_000)
    try:
        with Dhis2Reader(dhis2_url, username=auth[0], password=auth[1]) as reader:
            with_geo = {o["id"]: o for o in reader.org_units(org_units) if o.get("geometry")}
            kept = [ou for ou in org_units if ou in with_geo]
            if not kept:
                raise RealChapError(f"none of the setup's org units has a geometry: {org_units}")
            body = reader.analytics([("dimension", "dx:" + ";".join(de_to_cov)),
                                     ("dimension", "pe:" + ";".join(p.id for p in window)),
                                     ("dimension", "ou:" + ";".join(kept))])
    except SchedulerError as exc:
        raise RealChapError(str(exc)) from None
    names = [h["name"] for h in body.get("headers", [])]
    try:
        i_dx, i_pe, i_ou, i_val = (names.index(k) for k in ("dx", "pe", "ou", "value"))
    except ValueError:
        raise RealChapError(f"unexpected analytics headers: {names}") from None
    rows = [(row, parse_period(row[i_pe], start.type)) for row in body.get("rows") or []]
    latest: dict[str, Period] = {}
    for row, period in rows:
        if row[i_dx] not in latest or period > latest[row[i_dx]]:
            latest[row[i_dx]] = period
    missing = [de for de in de_to_cov if de not in latest]
    if missing:
        raise RealChapError(f"analytics returned no data for data elements {missing} "
                            f"(covariates {[de_to_cov[d] for d in missing]})")
    end = min(latest.values())
    used = [p for p in window if p <= end]
    need = min_training_periods(ptype)
    if len(used) < need:
        raise RealChapError(
            f"only {len(used)} {ptype} periods ({used[0]}..{used[-1]}) have data for all covariates; "
            f"chap's naive_model needs at least {need} (two whole years)")
    provided = [{"period": period.chap_id, "orgUnit": row[i_ou], "featureName": de_to_cov[row[i_dx]],
                 "value": None if row[i_val] in (None, "") else float(row[i_val])}
                for row, period in rows if period <= end]
    features = [{"type": "Feature", "id": ou,
                 "properties": {"name": with_geo[ou].get("displayName"), "level": with_geo[ou].get("level"),
                                "parent": (with_geo[ou].get("parent") or {}).get("id")},
                 "geometry": with_geo[ou]["geometry"]} for ou in kept]
    return {
        "period_type": ptype,
        "start_period": used[0].chap_id,
        "end_period": used[-1].chap_id,
        "n_periods": len(used),
        "latest_by_covariate": {de_to_cov[de]: p.chap_id for de, p in latest.items()},
        "org_units": kept,
        "dropped_org_units": [ou for ou in org_units if ou not in with_geo],
        "geojson": {"type": "FeatureCollection", "features": features},
        "providedData": provided,
        "dataSources": [{"covariate": s["covariate"], "dataElementId": s["dataElementId"]} for s in sources],
    }


# --------------------------------------------------------------------------- chap side of seeding


def wait_job(client, base: str, job_id: str, timeout: float = JOB_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        r = client.get(f"{base}/v1/jobs/{job_id}")
        if r.status_code == 200:
            status = r.json()
            if status in ("SUCCESS", "FAILURE", "REVOKED"):
                break
        elif r.status_code != 404:  # job_meta may not be visible for an instant
            raise RealChapError(f"GET /v1/jobs/{job_id} -> {r.status_code} {r.text[:500]}")
        time.sleep(0.5)
    if status != "SUCCESS":
        err = None
        try:
            jobs = client.get(f"{base}/v1/jobs", params={"ids": job_id}).json()
            err = jobs[0].get("error") if jobs else None
        except Exception:  # noqa: BLE001
            pass
        logs = ""
        try:
            logs = client.get(f"{base}/v1/jobs/{job_id}/logs").text[-3000:]
        except Exception:  # noqa: BLE001
            pass
        raise RealChapError(f"chap job {job_id} ended {status!r} (timeout {timeout}s?): {err}\n{logs}")
    return status


def _result_id(body: Any) -> int:
    if isinstance(body, dict) and "id" in body:
        return int(body["id"])
    return int(body)


def seed_real_chap(client, chap_url: str, setup: dict, inputs: dict, name: str | None = None) -> dict:
    base = chap_url.rstrip("/")
    name = name or f"{setup.get('name') or 'setup'} (real chap mirror of sandbox setup {setup.get('id')})"
    t0 = time.monotonic()
    body = {
        "name": name,
        "type": "evaluation",
        "dataSources": inputs["dataSources"],
        "geojson": inputs["geojson"],
        "providedData": inputs["providedData"],
        "dataToBeFetched": [],
    }
    r = client.post(f"{base}/v1/analytics/make-dataset", json=body)
    if r.status_code != 200:
        raise RealChapError(f"make-dataset -> {r.status_code} {r.text[:2000]}")
    summary = r.json()
    if summary.get("rejected"):
        _log(f"make-dataset rejected: {json.dumps(summary['rejected'])[:2000]}")
    job = summary.get("id")
    if not job:
        raise RealChapError(f"make-dataset returned no job id: {summary}")
    wait_job(client, base, job)
    r = client.get(f"{base}/v1/jobs/{job}/database_result")
    if r.status_code != 200:
        raise RealChapError(f"database_result -> {r.status_code} {r.text[:1000]}")
    dataset_id = _result_id(r.json())

    r = client.post(f"{base}/v1/analytics/create-backtest",
                    json={"name": name, "modelId": "naive_model", "datasetId": dataset_id,
                          "nPeriods": 3, "nSplits": 2, "stride": 1})
    if r.status_code != 200:
        raise RealChapError(f"create-backtest -> {r.status_code} {r.text[:2000]}")
    job = r.json()["id"]
    wait_job(client, base, job)
    r = client.get(f"{base}/v1/jobs/{job}/evaluation_result")
    if r.status_code != 200:
        raise RealChapError(f"evaluation_result -> {r.status_code} {r.text[:1000]}")
    backtest_id = _result_id(r.json())

    quantile_targets = [{"quantile": str(q["quantile"]), "dataElementId": q["dataElementId"]}
                        for q in (setup.get("quantileTargets") or [])]
    r = client.post(f"{base}/v1/crud/prediction-setups",
                    json={"backtestId": backtest_id, "name": name,
                          "scheduleCronExpression": setup.get("scheduleCronExpression") or "0 6 * * 1",
                          "scheduleEnabled": True, "quantileTargets": quantile_targets})
    if r.status_code != 200:
        raise RealChapError(f"create prediction-setup -> {r.status_code} {r.text[:2000]}")
    setup_id = _result_id(r.json())
    r = client.get(f"{base}/v1/crud/prediction-setups/{setup_id}")
    created = r.json() if r.status_code == 200 else {}
    return {
        "prediction_setup_id": setup_id,
        "dataset_id": dataset_id,
        "backtest_id": backtest_id,
        "name": name,
        "org_units": created.get("orgUnits", inputs["org_units"]),
        "dropped_org_units": inputs["dropped_org_units"],
        "covariate_sources": created.get("covariateSources", inputs["dataSources"]),
        "start_period": created.get("startPeriod", inputs["start_period"]),
        "period_type": created.get("periodType", inputs["period_type"]),
        "training_window": [inputs["start_period"], inputs["end_period"], inputs["n_periods"]],
        "latest_by_covariate": inputs["latest_by_covariate"],
        "observations": len(inputs["providedData"]),
        "rejected": summary.get("rejected") or [],
        "seconds": round(time.monotonic() - t0, 1),
    }


def cmd_seed(args: argparse.Namespace) -> int:
    import httpx

    state = read_state()
    chap_url = args.chap_url or (state or {}).get("base_url")
    if not chap_url:
        raise RealChapError(f"no running real chap (no {state_path()}); run `start` first or pass --chap-url")
    dhis2 = args.dhis2_url.rstrip("/")
    t0 = time.monotonic()
    with httpx.Client(timeout=60) as client:
        setup = fetch_sandbox_setup(client, dhis2, args.from_setup)
        today = dt.date.fromisoformat(args.today) if args.today else None
        inputs = fetch_dhis2_inputs(client, dhis2, setup, (args.user, args.password), today=today)
        result = seed_real_chap(client, chap_url, setup, inputs, name=args.name)
    result["from_setup"] = args.from_setup
    result["dhis2_url"] = dhis2
    result["chap_url"] = chap_url
    result["seed_seconds"] = round(time.monotonic() - t0, 1)
    if state and state.get("base_url") == chap_url:
        state["prediction_setup_id"] = result["prediction_setup_id"]
        state.setdefault("seeded", []).append(result)
        write_state(state)
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="real_chap.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="create/reuse the chap-core 2.5.1 venv (Python 3.13)")
    p.add_argument("--force", action="store_true", help="re-run pip even if the marker says complete")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("start", help="start redis + chap worker + chap API on loopback")
    p.add_argument("--port", type=int, default=None, help="API port (default: a free one)")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for /health/ready")
    p.add_argument("--keep-db", action="store_true", help="keep the SQLite DB of a previous start")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("seed", help="mirror a sandbox prediction setup into the real chap")
    p.add_argument("--dhis2-url", required=True)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="district")
    p.add_argument("--from-setup", type=int, default=1)
    p.add_argument("--chap-url", default=None, help="default: base_url from state.json")
    p.add_argument("--name", default=None)
    p.add_argument("--today", default=None, metavar="YYYY-MM-DD",
                   help="last day whose period is requested from analytics (default: today, UTC)")
    p.set_defaults(func=cmd_seed)
    p = sub.add_parser("stop", help="stop everything recorded in state.json")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("status", help="print state and health (exit 1 unless ready)")
    p.set_defaults(func=cmd_status)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import httpx

    try:
        return args.func(args)
    except httpx.HTTPError as exc:
        try:
            url = exc.request.url
        except RuntimeError:  # httpx raises this when the error carries no request
            url = "?"
        print(f"real_chap {args.command}: ERROR: HTTP failure ({type(exc).__name__}: {exc}) at {url}",
              file=sys.stderr, flush=True)
        return 1
    except RealChapError as exc:
        print(f"real_chap {args.command}: ERROR: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
