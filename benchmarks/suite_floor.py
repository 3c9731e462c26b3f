"""How fast the test suite can be on this machine: the CPU each part of it needs, run alone.

    .venv/bin/python benchmarks/suite_floor.py [--target 180] [--only test_e2e.py ...]

The suite is CPU-bound (README, Tests), so its wall time on N cores is at least the CPU it needs
divided by N, whatever pytest-xdist does. This measures that CPU without the contention of a full
run: each lane group (an ``e2e``, ``docker`` or ``realchap`` module, as ``conftest.py`` sends it to
one worker; the two real chap-core modules as one) runs alone in one process (``-n 0``), then the
fast lane as the README runs it. Each figure is the machine's CPU (``/proc/stat``: every process,
PostgreSQL's backends, dockerd and the kernel included) over the command, less what collecting the
same tests costs (pytest's start, which a full run pays once per worker, not once per module).

The lanes select with ``-m "e2e or docker or realchap"`` and the fast lane with its negation, so
every test is counted once. Caches should be warm (one run of the suite first) and the machine quiet:
anything else running is counted too. A full pass takes about 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.idle_cost import machine_cpu  # noqa: E402
from chap_scheduler_dagster_tests.conftest import REAL_CHAP_MODULES  # noqa: E402

LANES = "e2e or docker or realchap"
PYTEST = [str(Path(sys.executable).parent / "pytest"), "-q", "-p", "no:cacheprovider"]


def measure(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, machine CPU-seconds and pytest's last line of one command."""
    cpu, start = machine_cpu(), time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall, cpu = time.monotonic() - start, machine_cpu() - cpu
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode not in (0, 5):  # 5: collected nothing (--collect-only prints no "passed")
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {last}\n{done.stdout[-3000:]}")
    return wall, cpu, last


def lane_groups() -> dict[str, list[str]]:
    """The lane modules as pytest-xdist sends them to workers: group name -> test files."""
    listing = subprocess.run([*PYTEST, "-n", "0", "--collect-only", "-m", LANES], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    groups: dict[str, set[str]] = defaultdict(set)
    for line in listing.splitlines():
        if "::" in line:
            path = line.split("::", 1)[0]
            name = Path(path).name
            groups["real chap-core" if name in REAL_CHAP_MODULES else name].add(path)
    return {name: sorted(paths) for name, paths in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=180, help="the suite's goal, wall seconds")
    parser.add_argument("--only", nargs="*", help="measure only these lane groups (file names)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    groups = lane_groups()
    if args.only:
        groups = {name: files for name, files in groups.items() if name in args.only}
    runs = [(name, [*PYTEST, "-n", "0", "-m", LANES, *files]) for name, files in groups.items()]
    if not args.only:
        runs.append(("fast lane (3 workers)", [*PYTEST, "--dist", "load", "-m", f"not ({LANES})"]))

    print(f"{'group':<30} | {'wall s':>7} | {'CPU-s':>6} | {'collect':>7} | {'net CPU-s':>9} | pytest")
    total = 0.0
    for name, argv in runs:
        _, collect, _ = measure([*argv, "--collect-only"])
        wall, cpu, last = measure(argv)
        net = max(cpu - collect, 0.0)
        total += net
        print(f"{name:<30} | {wall:7.1f} | {cpu:6.1f} | {collect:7.1f} | {net:9.1f} | {last}", flush=True)
    if args.only:
        print(f"\nthese groups: {total:.0f} CPU-s")
        return
    floor = total / cores
    print(f"\nCPU needed: {total:.0f} CPU-s; on {cores} cores the suite takes at least {floor:.0f} s "
          f"({floor / 60:.1f} min) with every core busy all the time")
    print(f"the goal of {args.target:.0f} s leaves {args.target * cores:.0f} CPU-s: "
          + ("within reach" if floor <= args.target else f"{total - args.target * cores:.0f} CPU-s too many"))


if __name__ == "__main__":
    main()
