"""National-scale benchmark: the real job against the sandbox at 12 / 1,000 / 3,000 / 10,000 org units.

    .venv/bin/python benchmarks/national_scale.py [--org-units 12 1000 3000 10000] [--months 60]

The 12-org-unit row is the fixed cost of one in-process run (Dagster's own overhead).

For each size it starts the sandbox (its own process, not measured), then runs the job in
a fresh process and samples that process tree's RSS every 10 ms. It prints wall time,
peak RSS, RSS over idle (peak minus the RSS after the code location is loaded) and the
time from the first DHIS2 analytics request of the fetch to the chap POST. It prints
figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable
BENCH_SETUP = "5"  # the sandbox's 5-covariate benchmark configured model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_size(org_units: int, months: int) -> dict:
    port = free_port()
    sandbox = subprocess.Popen(
        [PY, "-m", "dhis2_sandbox", "--port", str(port), "--org-units", str(org_units), "--months", str(months + 14)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{base}/api/system/ping", auth=("admin", "district"), timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        setup = httpx.get(f"{base}/__sandbox/chap/v1/crud/prediction-setups/{BENCH_SETUP}", timeout=30).json()
        env = os.environ | {
            "DHIS2_BASE_URL": base, "DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district",
            "CHAP_SCHEDULER_POLL_INTERVAL_SECONDS": "0.2", "CHAP_SCHEDULER_ROW_BUDGET": "100000000",
        }
        env.pop("DAGSTER_HOME", None)
        # Offset 3 ends the window two months before the lagging covariate's freshest data: 60 periods.
        child = subprocess.Popen(
            [PY, str(HERE / "run_one.py"), BENCH_SETUP, "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        proc = psutil.Process(child.pid)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append((time.time(), tree_rss(proc)))
                except psutil.NoSuchProcess:
                    return
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        events = {}
        for line in child.stdout:
            if line.startswith("{"):
                event = json.loads(line)
                events[event["event"]] = event
        child.wait()
        stop.set()
        sampler.join()
        idle, done = events["idle"], events["done"]
        run_samples = [rss for t, rss in samples if t >= idle["t"]]
        peak = max(run_samples) if run_samples else 0
        return {
            "org_units": org_units,
            "covariates": len(setup["covariateSources"]),
            "rows": done["analytics_rows"],
            "success": done["success"],
            "error": done["error"],
            "wall_s": done["wall"],
            "peak_rss_mb": peak / 1e6,
            "over_idle_mb": (peak - idle["rss"]) / 1e6,
            "fetch_to_post_s": (done["post"] - done["first_fetch"]) if done["post"] and done["first_fetch"] else None,
            "longest_url": done["longest_url"],
        }
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--org-units", type=int, nargs="+", default=[12, 1000, 3000, 10000])
    parser.add_argument("--months", type=int, default=60)
    args = parser.parse_args()
    print(f"{'org units':>9} {'covariates':>10} {'rows':>10} {'wall s':>7} {'peak RSS MB':>11} "
          f"{'over idle MB':>12} {'fetch->POST s':>13} {'longest URL':>11}  outcome")
    for n in args.org_units:
        r = run_size(n, args.months)
        f2p = f"{r['fetch_to_post_s']:.2f}" if r["fetch_to_post_s"] is not None else "-"
        outcome = "succeeded" if r["success"] else f"failed: {r['error'][:80]}"
        rows = f"{r['rows']:,}" if r["rows"] is not None else "-"
        print(f"{n:>9,} {r['covariates']:>10} {rows:>10} {r['wall_s']:>7.2f} {r['peak_rss_mb']:>11.0f} "
              f"{r['over_idle_mb']:>12.0f} {f2p:>13} {r['longest_url'] or '-':>11}  {outcome}", flush=True)


if __name__ == "__main__":
    main()
