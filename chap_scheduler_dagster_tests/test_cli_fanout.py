"""``chap-scheduler-run`` with several models: fan-out in child processes, at most the per-DHIS2 limit at once.

Real command-line processes against the loopback sandbox; the limit and the overlap are read from the
Dagster instance (each model is its own run, with its start and end time).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import dagster as dg
import pytest

from chap_scheduler_dagster.cli_fanout import limit_for
from chap_scheduler_dagster.core.fan_out import fan_out_limit
from chap_scheduler_dagster.defs.tags import CHAP_JOB_TAG, DHIS2_TAG
from chap_scheduler_dagster.settings import get_settings
from dhis2_sandbox import Sandbox, SandboxConfig

from .dagster_stack import BIN, REPO

QUEUE_YAML = """
telemetry:
  enabled: false
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_runs}
    tag_concurrency_limits:
      - key: chap_scheduler/dhis2
        value:
          applyLimitPerUniqueValue: true
        limit: {limit}
"""


def most_at_once(records) -> int:
    """The most runs that were in progress at the same moment."""
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records],
                   key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def model_lines(out: str) -> list[str]:
    return re.findall(r"^configured model (\S+):", out, flags=re.M)


def cli_env(sb: Sandbox, home, **extra: str) -> dict[str, str]:
    return os.environ | {"DHIS2_BASE_URL": sb.base_url, "DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district",
                         "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.3", "DAGSTER_HOME": str(home), **extra}


def test_the_run_queue_limit_wins_over_the_setting():
    per_value = [{"key": DHIS2_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 3}]
    limit = fan_out_limit(per_value, 10, DHIS2_TAG, "default", 5, "CHAP_SCHEDULER_CLI_CONCURRENCY")
    assert limit.value == 3 and "run queue" in limit.source
    other_dhis2 = [{"key": DHIS2_TAG, "value": "elsewhere", "limit": 1}, {"key": "other", "limit": 1}]
    limit = fan_out_limit(other_dhis2, 10, DHIS2_TAG, "default", 5, "CHAP_SCHEDULER_CLI_CONCURRENCY")
    assert limit.value == 5 and "CHAP_SCHEDULER_CLI_CONCURRENCY" in limit.source
    assert fan_out_limit([{"key": DHIS2_TAG, "value": "default", "limit": 4}], -1, DHIS2_TAG, "default", 2, "x").value == 4
    assert fan_out_limit(per_value, 1, DHIS2_TAG, "default", 5, "x").value == 1  # max_concurrent_runs caps it
    assert fan_out_limit(None, None, DHIS2_TAG, "default", 2, "x").value == 2


def test_limit_read_from_the_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAP_SCHEDULER_CLI_CONCURRENCY", "5")
    get_settings.cache_clear()
    queued, plain = tmp_path / "queued", tmp_path / "plain"
    queued.mkdir(), plain.mkdir()
    (queued / "dagster.yaml").write_text(QUEUE_YAML.format(max_runs=10, limit=3))
    (plain / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(queued)) as instance:
        assert limit_for(instance).value == 3
    with dg.DagsterInstance.from_config(str(plain)) as instance:
        assert limit_for(instance).value == 5
    # The same limit in dagster.yaml's newer `concurrency:` section.
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster\n  class: QueuedRunCoordinator\nconcurrency:\n  runs:\n"
        "    tag_concurrency_limits:\n      - key: chap_scheduler/dhis2\n        value: default\n        limit: 4\n")
    with dg.DagsterInstance.from_config(str(newer)) as instance:
        assert limit_for(instance).value == 4
    # The repository's own dagster.yaml (the deployments') says 2.
    text = (REPO / "dagster.yaml").read_text()
    assert "key: chap_scheduler/dhis2" in text and re.search(r"applyLimitPerUniqueValue: true\n\s+limit: 2\n", text)


@pytest.mark.e2e  # starts chap-scheduler-run processes
def test_fan_out_keeps_the_limit_and_a_slow_or_failing_model_holds_no_one_back(tmp_path):
    (tmp_path / "dagster.yaml").write_text(QUEUE_YAML.format(max_runs=10, limit=2))
    with Sandbox(SandboxConfig(port=0, job_seconds=0.3)) as sb:
        sb.chap.setup_job_seconds[1] = 15.0  # model 1 trains slowly; 3 fails (chap rejects every region)
        started = time.monotonic()
        done = subprocess.run([str(BIN / "chap-scheduler-run"), "1", "3", "2", "4", "--report-dir", str(tmp_path / "r")],
                              env=cli_env(sb, tmp_path, CHAP_SCHEDULER_CLI_CONCURRENCY="9"), cwd=REPO,
                              capture_output=True, text=True, timeout=240)
        wall = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 1, out  # model 3 failed
    assert "at most 2 at once (the run queue's limit" in done.stderr  # dagster.yaml wins over the setting
    assert sorted(model_lines(out)) == ["1", "2", "3", "4"], out  # one line per model
    assert "configured model 3: FAILED at submit_prediction: chap rejected the prediction" in out
    for model in ("1", "2", "4"):
        assert f"configured model {model}: SUCCEEDED" in out
        assert (tmp_path / "r" / f"{model}.md").is_file()
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        records = instance.get_run_records()
        assert len(records) == 4 and all(r.dagster_run.tags[DHIS2_TAG] == "default" for r in records)
        assert most_at_once(records) == 2  # really two at once, never three
        by_model = {r.dagster_run.tags["dagster/partition"]: r for r in records}
    slow_end = by_model["1"].end_time
    # The others went through the second slot while model 1 was still training.
    assert sum(1 for m in ("2", "3", "4") if by_model[m].end_time < slow_end) >= 2
    assert model_lines(out)[-1] == "1"  # printed as it finished: last
    assert wall < 15.0 + 60


@pytest.mark.e2e  # starts chap-scheduler-run processes
def test_ctrl_c_cancels_every_running_model_and_launches_no_more(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with Sandbox(SandboxConfig(port=0, job_seconds=0.2)) as sb:
        sb.faults.update({"chap_job": "hang"})
        cli_process = subprocess.Popen([str(BIN / "chap-scheduler-run"), "1", "2", "4"],
                                       env=cli_env(sb, tmp_path, CHAP_SCHEDULER_CLI_CONCURRENCY="2"), cwd=REPO,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            jobs: dict[str, str] = {}
            deadline = time.monotonic() + 120
            with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
                while len(jobs) < 2 and time.monotonic() < deadline:
                    jobs = {r.tags["dagster/partition"]: r.tags[CHAP_JOB_TAG]
                            for r in instance.get_runs() if r.tags.get(CHAP_JOB_TAG)}
                    time.sleep(0.3)
            assert len(jobs) == 2, "the two runs never reached await_prediction"
            cli_process.send_signal(signal.SIGINT)
            out, _ = cli_process.communicate(timeout=90)
        finally:
            if cli_process.poll() is None:
                cli_process.kill()
    assert cli_process.returncode == 1
    assert sorted(model_lines(out)) == sorted(jobs), out
    for model, job_id in jobs.items():
        assert f"configured model {model}: CANCELED at await_prediction" in out
        assert job_id in out  # the chap job that may still be running is named
    assert out.count("  what to do: Terminating the run does not stop chap") == 2
    [never] = {"1", "2", "4"} - set(jobs)
    assert out.rstrip().endswith(f"interrupted: the remaining configured models were not run: {never}")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.CANCELED for r in runs)



def test_fan_out_pool_limit_crash_and_interrupt(tmp_path):
    """The pool alone, with tiny Python children: never above the limit, a crash is one line, Ctrl-C stops launching."""
    import sys

    from chap_scheduler_dagster.cli_fanout import block
    from chap_scheduler_dagster.core.fan_out import FanOut

    # Each child marks itself alive, waits (at most 10 s: a loaded machine starts Pythons slowly) until it
    # sees a second one, looks again a moment later and says the most it saw; "c" crashes at once.
    script = "\n".join([
        "import sys, time, pathlib",
        "d, k = pathlib.Path(sys.argv[2]), sys.argv[1]",
        "if k == 'c': sys.exit(3)",
        "(d / k).touch(); most, end = 0, time.monotonic() + 10",
        "while most < 2 and time.monotonic() < end:",
        "    most = max(most, len(list(d.iterdir()))); time.sleep(0.02)",
        "time.sleep(0.3); most = max(most, len(list(d.iterdir()))); (d / k).unlink()",
        "print(f'configured model {k}: SUCCEEDED (saw {most})')",
    ])
    live = tmp_path / "live"
    live.mkdir()
    fan = FanOut(["a", "b", "c", "d", "e"], lambda k: [sys.executable, "-c", script, k, str(live)], limit=2)
    blocks, codes = [], {}
    while fan.busy():
        for done in fan.wait():
            blocks.append(block(done))
            codes[done.key] = done.returncode
    assert codes == {"a": 0, "b": 0, "c": 3, "d": 0, "e": 0}  # the crash stopped no one
    saw = [int(n) for n in re.findall(r"\(saw (\d+)\)", "\n".join(blocks))]
    assert len(saw) == 4 and max(saw) == 2, blocks  # two at once, never three
    assert len(blocks) == 5 and sum(b.startswith("configured model c:") for b in blocks) == 1
    assert "configured model c: FAILED: its process ended (exit code 3) before it printed an outcome" in "\n".join(blocks)

    # Each child says it is up (a file) and sleeps; the interrupt comes once both are past Python's start-up
    # (a SIGINT during start-up ends a Python with exit code 1 instead of the signal).
    up = tmp_path / "up"
    up.mkdir()
    sleeper = "import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(30)"
    fan = FanOut(["x", "y", "z"], lambda k: [sys.executable, "-c", sleeper, str(up / k)], limit=2)
    fan._start(fan.pending.pop(0)), fan._start(fan.pending.pop(0))  # noqa: SLF001  (two running, z waits)
    deadline = time.monotonic() + 30
    while len(list(up.iterdir())) < 2:
        assert time.monotonic() < deadline, "the two children never started"
        time.sleep(0.02)
    started = time.monotonic()
    fan.request_interrupt()  # what the command's SIGINT handler does
    finished = []
    while fan.busy():
        finished += fan.wait()
    assert sorted(d.key for d in finished) == ["x", "y"] and fan.never_started == ["z"]
    assert all(d.returncode == -signal.SIGINT for d in finished), [(d.key, d.returncode) for d in finished]  # each got SIGINT
    assert time.monotonic() - started < 10
    assert block(finished[0], interrupted=True).startswith(f"configured model {finished[0].key}: CANCELED (Ctrl-C)")


FORKED_POOL = r'''
import json, os, pathlib, signal, sys, threading, time
from chap_scheduler_dagster.cli_fanout import block
from chap_scheduler_dagster.core.fan_out import FanOut

live, up = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
parent = os.getpid()

def model(k):
    # In the child: its own process and session, stdin from /dev/null; "c" fails, "r" raises.
    if k == "c":
        return 3
    if k == "r":
        raise RuntimeError("boom in the child")
    (live / k).touch(); most, end = 0, time.monotonic() + 10
    while most < 2 and time.monotonic() < end:
        most = max(most, len(list(live.iterdir()))); time.sleep(0.02)
    time.sleep(0.3); most = max(most, len(list(live.iterdir()))); (live / k).unlink()
    alone = os.getpid() != parent and os.getsid(0) == os.getpid() and sys.stdin.read() == ""
    print(f"configured model {k}: SUCCEEDED (saw {most}, alone {alone})")
    return 0

sys.stdout.write("parent text before the fork\n")  # not flushed: a child must not print it again
fan = FanOut(list("abcrde"), lambda k: ["false"], limit=2, forked=model)
assert fan.forked is not None, "did not fork"
blocks, codes = [], {}
while fan.busy():
    for done in fan.wait():
        blocks.append(block(done)); codes[done.key] = done.returncode

def sleeper(k):
    (up / k).touch(); time.sleep(30)
    return 0

# Ctrl-C at once, before the children can have set up their own handler: it must still reach them.
fan2 = FanOut(["x", "y", "z"], lambda k: ["false"], limit=2, forked=sleeper)
started = time.monotonic()
fan2._start(fan2.pending.pop(0)), fan2._start(fan2.pending.pop(0))
fan2.request_interrupt()
finished = []
while fan2.busy():
    finished += fan2.wait()
print(json.dumps({"blocks": blocks, "codes": codes, "interrupted": {d.key: d.returncode for d in finished},
                  "never": fan2.never_started, "seconds": time.monotonic() - started}))
'''


def test_forked_pool_limit_crash_and_interrupt(tmp_path):
    """Children forked from the command (a fresh single-threaded interpreter here): the same pool rules."""
    import json
    import sys

    (tmp_path / "live").mkdir(), (tmp_path / "up").mkdir()
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # so there is a buffer to copy
    done = subprocess.run([sys.executable, "-c", FORKED_POOL, str(tmp_path / "live"), str(tmp_path / "up")],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=buffered)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("parent text before the fork") == 1, done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == {"a": 0, "b": 0, "c": 3, "r": 1, "d": 0, "e": 0}  # a crash stopped no one
    assert "RuntimeError: boom in the child" in done.stderr  # the child's traceback, as an interpreter prints it
    text = "\n".join(result["blocks"])
    saw = [int(n) for n in re.findall(r"\(saw (\d+), alone True\)", text)]
    assert len(saw) == 4 and max(saw) == 2, text  # two at once, never three; each in its own session
    assert "configured model c: FAILED: its process ended (exit code 3)" in text
    assert result["interrupted"] == {"x": -signal.SIGINT, "y": -signal.SIGINT} and result["never"] == ["z"]
    assert result["seconds"] < 10
