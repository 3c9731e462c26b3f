"""scripts/quickstart.sh: installs only when pyproject.toml changed; `ui` starts without instance
warnings and stops cleanly, dagster dev and all its children, on SIGINT and on SIGTERM."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .dagster_stack import REPO, free_port

SCRIPT = REPO / "scripts" / "quickstart.sh"
WANTED = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
INSTANCE_WARNINGS = ("Found a dagster instance configuration value", "No dagster instance configuration file")


def fake_venv(tmp_path: Path, intercept_quickstart: bool) -> Path:
    """A venv whose pip only records its calls and whose python is this test's python."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    intercept = 'case "$*" in *scripts/quickstart.py*) echo "quickstart.py $*"; exit 0;; esac\n' if intercept_quickstart else ""
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\n{intercept}exec {sys.executable} \"$@\"\n")
    pip = venv / "bin" / "pip"
    pip.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n")
    for f in (python, pip):
        f.chmod(0o755)
    return venv


def pip_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def quickstart(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=os.environ | {"QUICKSTART_VENV": str(venv)},
                          capture_output=True, text=True, timeout=120)


def test_packages_are_installed_only_when_pyproject_changes(tmp_path):
    venv = fake_venv(tmp_path, intercept_quickstart=True)
    first = quickstart(venv)
    assert first.returncode == 0, first.stderr
    assert "Installing into" in first.stdout
    assert pip_calls(tmp_path) == ["install --quiet --upgrade pip", "install --quiet -e .[test]"]
    assert (venv / ".quickstart-installed").read_text().strip() == WANTED
    assert "quickstart.py scripts/quickstart.py run" in first.stdout

    again = quickstart(venv, "ui")
    assert again.returncode == 0, again.stderr
    assert "Installing" not in again.stdout and len(pip_calls(tmp_path)) == 2
    assert "quickstart.py scripts/quickstart.py ui" in again.stdout

    (venv / ".quickstart-installed").write_text("hash of an older pyproject.toml\n")
    changed = quickstart(venv)
    assert "Installing into" in changed.stdout and len(pip_calls(tmp_path)) == 4


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_starts_without_instance_warnings_and_stops_cleanly(tmp_path, signum):
    venv = fake_venv(tmp_path, intercept_quickstart=False)
    (venv / ".quickstart-installed").write_text(WANTED + "\n")
    home, port = tmp_path / "dagster_home", free_port()
    output = tmp_path / "quickstart.out"
    env = os.environ | {"QUICKSTART_VENV": str(venv), "QUICKSTART_DAGSTER_HOME": str(home),
                        "QUICKSTART_UI_PORT": str(port)}
    with open(output, "wb") as out:
        # Its own session, like a service manager's child: the signal goes to the script alone.
        script = subprocess.Popen([str(SCRIPT), "ui"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert script.poll() is None, output.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"the UI did not answer within 120 s\n{output.read_text()[-3000:]}")
        assert _processes_mentioning(str(home)), "dagster dev's processes should be running"

        started = time.monotonic()
        script.send_signal(signum)
        assert script.wait(timeout=60) == 0, output.read_text()[-3000:]
        stopped_in = time.monotonic() - started
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    text = output.read_text()
    assert not [w for w in INSTANCE_WARNINGS if w in text], text[-3000:]
    assert "stopping dagster dev" in text and "stopped." in text
    assert stopped_in < 45
    time.sleep(1)
    assert _processes_mentioning(str(home)) == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens on the UI port any more
