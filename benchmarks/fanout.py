"""Many models on one DHIS2: ``chap-scheduler-run`` one after another versus fanned out.

    .venv/bin/python benchmarks/fanout.py [--models 1 20 100] [--limits 1 2 20] [--latency 0.5]
                                          [--job-seconds 1] [--skip 100:1] [--repeat 2]

The sandbox runs in this process (threads) with ``slow_seconds`` = latency on every DHIS2 and chap call;
its chap stand-in gets N copies of setup 1 and "trains" each for ``--job-seconds``. For each model count
and limit, ``chap-scheduler-run <N ids>`` runs in a fresh ``$DAGSTER_HOME`` whose dagster.yaml sets the
run queue's per-DHIS2 limit (which the command line obeys); limit 1 is the sequential path (every model
in the command's own process, one after another, as before the fan-out). Wall time is the whole command;
memory is summed over the command's process tree (it and its children): RSS sampled every 50 ms, and
PSS (proportional set size: a page shared by k processes counts 1/k in each, so the sum is what the tree
really occupies; forked children share the command's pages) every 0.5 s; CPU is the user + system time
of the whole tree. ``--repeat`` runs each combination that many times and ends with min/median per
combination (the ratio column divides by the median of the 1-model runs).
``--skip N:L`` leaves out that combination (e.g. 100 models sequentially, which takes about 30 minutes).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUEUE_YAML = """telemetry:
  enabled: false
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 200
    tag_concurrency_limits:
      - key: chap_scheduler/dhis2
        value:
          applyLimitPerUniqueValue: true
        limit: {limit}
"""


def pss(pid: int) -> int:
    """Proportional set size in bytes (Linux), 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_memory(process: psutil.Process, with_pss: bool) -> tuple[int, int, int]:
    """RSS and (if asked) PSS summed over a process and all its descendants, and how many there are."""
    rss_total, pss_total, count = 0, 0, 0
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    for p in procs:
        try:
            rss_total += p.memory_info().rss
            count += 1
        except psutil.NoSuchProcess:
            continue
        if with_pss:
            pss_total += pss(p.pid)
    return rss_total, pss_total, count


def run_cli(sb, ids: list[str], limit: int, job_seconds: float) -> dict:
    home = tempfile.mkdtemp(prefix="fanout-bench-")
    Path(home, "dagster.yaml").write_text(QUEUE_YAML.format(limit=limit))
    env = os.environ | {"DHIS2_BASE_URL": sb.base_url, "DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district",
                        "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "1", "DAGSTER_HOME": home}
    started, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    # Output to a file: a pipe nobody reads until the end fills up (64 KB, about 75 models' blocks) and stalls it.
    out_file = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
    proc = subprocess.Popen([str(BIN / "chap-scheduler-run"), *ids], env=env, cwd=REPO, stdout=out_file,
                            stderr=subprocess.DEVNULL, text=True)
    ps = psutil.Process(proc.pid)
    peak, peak_pss, most, sample = 0, 0, 0, 0
    while proc.poll() is None:
        rss, pss_now, count = tree_memory(ps, with_pss=sample % 10 == 0)
        peak, peak_pss, most, sample = max(peak, rss), max(peak_pss, pss_now), max(most, count), sample + 1
        time.sleep(0.05)
    out_file.seek(0)
    out = out_file.read()
    out_file.close()
    wall, cpu1 = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    lines = re.findall(r"^configured model (\S+): (\S+)", out, flags=re.M)
    return {"wall": wall, "cpu": cpu, "peak_mb": peak / 2**20, "pss_mb": peak_pss / 2**20, "procs": most,
            "code": proc.returncode,
            "lines": len(lines), "ok": sum(1 for _, s in lines if s == "SUCCEEDED")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 2, 20])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--skip", nargs="*", default=[], help="N:L combinations to leave out")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each combination")
    args = parser.parse_args()
    from dhis2_sandbox import Sandbox, SandboxConfig

    skip = {tuple(int(x) for x in s.split(":")) for s in args.skip}
    print(f"latency {args.latency:g} s on every DHIS2 and chap call, chap trains {args.job_seconds:g} s, "
          f"poll every 1 s, {os.cpu_count()} cores")
    print(f"{'models':>6} | {'limit':>5} | {'wall':>7} | {'per model':>9} | {'vs ceil(N/limit) x one':>22} | "
          f"{'peak RSS (tree)':>15} | {'peak PSS (tree)':>15} | {'processes':>9} | {'CPU':>6} | outcome")
    one_walls: list[float] = []
    results: dict[tuple[int, int], list[dict]] = {}
    with Sandbox(SandboxConfig(port=0, job_seconds=args.job_seconds)) as sb:
        sb.faults.slow_seconds = args.latency
        base = dict(sb.chap.setups[1])
        for n in args.models:
            ids = [str(1000 + i) for i in range(n)]
            for sid in ids:
                sb.chap.add_setup(base, id=int(sid), name=f"Fan-out benchmark model {sid}")
            for limit in args.limits:
                if (n, limit) in skip or (n == 1 and limit > 1):
                    continue
                for _ in range(args.repeat):
                    r = run_cli(sb, ids, limit, args.job_seconds)
                    results.setdefault((n, limit), []).append(r)
                    if n == 1:
                        one_walls.append(r["wall"])
                    one_wall = statistics.median(one_walls) if one_walls else None
                    rounds = math.ceil(n / limit)
                    ratio = f"{r['wall'] / (rounds * one_wall):.2f} of {rounds} x" if one_wall else "-"
                    print(f"{n:>6} | {limit:>5} | {r['wall']:>6.1f}s | {r['wall'] / n:>8.2f}s | {ratio:>22} | "
                          f"{r['peak_mb']:>12.0f} MB | {r['pss_mb']:>12.0f} MB | {r['procs']:>9} | {r['cpu']:>5.0f}s | "
                          f"{r['ok']}/{n} succeeded, {r['lines']} lines, exit {r['code']}", flush=True)
            for sid in ids:
                sb.chap.remove_setup(int(sid))
    if args.repeat > 1:
        one_wall = statistics.median(one_walls) if one_walls else None
        print(f"\nmin / median of {args.repeat} runs (ratio against the median 1-model run):")
        for (n, limit), runs in results.items():
            walls = [r["wall"] for r in runs]
            rounds = math.ceil(n / limit)
            ratios = (f"{min(walls) / (rounds * one_wall):.2f} / {statistics.median(walls) / (rounds * one_wall):.2f} of "
                      f"{rounds} x") if one_wall else "-"
            print(f"{n:>6} | {limit:>5} | wall {min(walls):.1f} / {statistics.median(walls):.1f} s | {ratios} | "
                  f"peak RSS {max(r['peak_mb'] for r in runs):.0f} MB, PSS {max(r['pss_mb'] for r in runs):.0f} MB | "
                  f"CPU {min(r['cpu'] for r in runs):.0f} / {statistics.median(r['cpu'] for r in runs):.0f} s", flush=True)


if __name__ == "__main__":
    main()
