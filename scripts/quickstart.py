"""Quickstart against the embedded DHIS2 sandbox (run by scripts/quickstart.sh).

``run``: start the sandbox, check it (``chap-scheduler-run check``), run every configured model it lists through the real job on
the local Dagster instance in ``.dagster_home/`` (SQLite), print each outcome, stop.
``ui``: start the sandbox and ``dagster dev``; the discovery sensor lists the sandbox's
configured models as partitions within seconds. Ctrl-C or SIGTERM stops both cleanly.

``QUICKSTART_DAGSTER_HOME`` (default ``.dagster_home``) and ``QUICKSTART_UI_PORT`` (default 3000)
move the instance and the UI, e.g. for a second copy or a test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from dhis2_sandbox import Sandbox, SandboxConfig

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOME = Path(os.environ.get("QUICKSTART_DAGSTER_HOME") or REPO / ".dagster_home").resolve()
# The quickstart instance keeps everything in SQLite under HOME. Writing this file (instead of
# having none) keeps Dagster from warning on every start that it defaults to exactly that.
INSTANCE_YAML = """\
# Written by scripts/quickstart.py. The quickstart's Dagster instance: SQLite files in this folder.
# (Deployments use the repository's dagster.yaml with PostgreSQL instead; see the README.)
telemetry:
  enabled: false
nux:
  enabled: false
"""
# What each sandbox configured model is built to show.
EXPECTED = {
    # "with warnings": the sandbox has an org unit without geometry, chap drops two, and its lagging
    # data leaves forecast periods in the past: every prediction says so (core/run_warnings.py).
    "1": ("succeeded with warnings", "monthly model: a full prediction"),
    "2": ("succeeded with warnings", "weekly model: unpadded DHIS2 week ids, padded chap ids"),
    "3": ("failed", "gappy rainfall: chap's 400 rejection, grouped by covariate in the report"),
    "4": ("succeeded with warnings", "yearly model"),
    "5": ("succeeded with warnings", "five covariates: the national benchmark's shape, at sandbox size"),
}
# What publishing to DHIS2 does for each (the "DHIS2 import" section of its report).
EXPECTED_PUBLISH = {
    "1": "published",  # numeric targets "0.1", "0.5", "0.9"
    "2": "published",  # the Modeling app's labels quantile_low, median, quantile_high
    "3": None,  # no prediction, nothing to publish
    "4": "nothing published",  # no quantileTargets
    "5": "nothing published",
}


def main(mode: str) -> int:
    HOME.mkdir(parents=True, exist_ok=True)
    if not (HOME / "dagster.yaml").exists():
        (HOME / "dagster.yaml").write_text(INSTANCE_YAML)
    with Sandbox(SandboxConfig(port=int(os.environ.get("SANDBOX_PORT", "0")))) as sandbox:
        env = os.environ | {
            "DAGSTER_HOME": str(HOME),
            "DHIS2_BASE_URL": sandbox.base_url,
            "DHIS2_USERNAME": "admin",
            "DHIS2_PASSWORD": "district",  # the sandbox's public demo account, not a secret
            "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.5",
        }
        print(f"DHIS2 sandbox with chap route: {sandbox.base_url}")
        if mode == "ui":
            return _ui(env)
        started = time.monotonic()
        # Before anything runs: the operator's preflight, as against a real DHIS2 (model 1 only, to stay short).
        check = subprocess.run([str(BIN / "chap-scheduler-run"), "check", "1"], env=env, cwd=REPO,
                               capture_output=True, text=True)
        print(check.stdout)
        if check.returncode not in (0, 1):
            print(check.stderr[-3000:], file=sys.stderr)
        reports = HOME / "reports"
        answer = subprocess.run(
            [str(BIN / "chap-scheduler-run"), "--all", "--report-dir", str(reports)],
            env=env, cwd=REPO, capture_output=True, text=True,
        )
        print(answer.stdout, end="")
        if answer.returncode not in (0, 1):
            print(answer.stderr[-3000:], file=sys.stderr)
            return answer.returncode
        mismatches = _check(answer.stdout)
        mismatches += _check_publish(reports)
        print(f"\nDone in {time.monotonic() - started:.1f} s. Reports: {reports}/<id>.md, and in the UI "
              f"(scripts/quickstart.sh ui) under Assets > dhis2_chap_prediction_report > Partitions.")
        return 1 if mismatches or check.returncode else 0


def _check(stdout: str) -> list[str]:
    mismatches = []
    for key, (expected, what) in EXPECTED.items():
        line = next((l for l in stdout.splitlines() if l.startswith(f"configured model {key}:")), "")
        ok = re.search(rf": {re.escape(expected.upper())}($|:| at )", line) is not None  # exact status
        print(f"  {'ok  ' if ok else 'FAIL'} model {key} {expected:23} — {what}")
        if not ok:
            mismatches.append(key)
    return mismatches


def _check_publish(reports: Path) -> list[str]:
    """Print what each run wrote into DHIS2, from the report's "DHIS2 import" section."""
    print("\nPublished to DHIS2:")
    mismatches = []
    for key, expected in EXPECTED_PUBLISH.items():
        path = reports / f"{key}.md"
        text = path.read_text() if path.exists() else ""
        section = text.split("## DHIS2 import", 1)[1] if "## DHIS2 import" in text else ""
        outcome = next((l.split(":**", 1)[1].strip() for l in section.splitlines() if l.startswith("- **Outcome:**")), None)
        counts = next((l.split(":**", 1)[1].strip() for l in section.splitlines() if l.startswith("- **Imported:**")), "")
        ok = (outcome is None) if expected is None else bool(outcome and outcome.startswith(expected))
        print(f"  {'ok  ' if ok else 'FAIL'} model {key}: {outcome or 'not reached'}" + (f" — {counts}" if counts else ""))
        if not ok:
            mismatches.append(key)
    return mismatches


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: stop dagster dev and the sandbox."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def _ui(env: dict[str, str]) -> int:
    port = os.environ.get("QUICKSTART_UI_PORT", "3000")
    # Handle both signals before dagster dev starts: a handled signal is reset to the default in the
    # child, whereas an ignored one (a script started with `&`) would stay ignored there, and
    # dagster dev then ignores SIGTERM too.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stop)
    process = None
    try:
        # Started in the instance folder: in the repository folder Dagster would warn that the
        # repository's dagster.yaml (the PostgreSQL one for deployments) is not used.
        # Create the instance's tables first: dagster dev starts the webserver and the daemon at
        # once, and on a fresh SQLite home both may try to create them.
        subprocess.run([str(BIN / "dagster"), "instance", "migrate"], env=env, cwd=HOME, check=True,
                       stdout=subprocess.DEVNULL)
        process = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", port],
            env=env, cwd=HOME,
            # Its own process group: the signal reaches only this script, which stops the whole group.
            start_new_session=True,
        )
        print(f"Dagster UI: http://127.0.0.1:{port} (Ctrl-C to stop)", flush=True)
        return process.wait()
    except _Stop as stop:
        print(f"{stop}: stopping dagster dev ...", flush=True)
        if process is not None:
            _stop_group(process)
        print("stopped.", flush=True)
        return 0


def _stop_group(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to dagster dev and its webserver, daemon and code servers; SIGKILL after the grace period."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not leave the group half-stopped
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    # dagster dev waits for its children; anything left in the group after it exited is killed.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "run"))
