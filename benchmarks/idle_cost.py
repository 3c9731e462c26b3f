"""What a deployment costs while no run is going: CPU, memory and PostgreSQL connections.

    .venv/bin/python benchmarks/idle_cost.py [--topology host one-server supervised] [--seconds 120]

Each topology is the real webserver and daemon on a fresh database of the local PostgreSQL, with the
repository's ``dagster.yaml`` as shipped (run queue every 5 s, run monitoring every 60 s) and every
``CHAP_SCHEDULER_*`` setting at its default, against the sandbox as DHIS2 (its own thread here, not
counted); started with the e2e tests' stack helper:

- ``host``: the repository's ``workspace.yaml``, as the README's host deployment: the webserver and
  the daemon start their own code servers;
- ``one-server``: one ``dagster api grpc`` that both use through a ``grpc_server`` workspace;
- ``supervised``: one ``dagster code-server start`` (the Docker deployment's user-code command), which
  supervises a ``dagster api grpc``.

After ``--warmup`` seconds it measures, over ``--seconds``: the CPU (user + system) of every process
of the stack, their memory (RSS, and PSS, which counts a shared page once across processes) and the
connections opened to the stack's database (``pg_stat_database.sessions``: Dagster's PostgreSQL storage
opens a new connection for each query). What one connection costs the machine (client, server backend,
kernel) is measured first, alone: a connect, one query and a close, from this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the e2e tests' stack helper

from chap_scheduler_dagster_tests.dagster_stack import (  # noqa: E402
    PG, create_database, drop_database, make_stack, process_group_members,
)
from dhis2_sandbox import Sandbox, SandboxConfig  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU-seconds the whole machine has spent: user, nice, system, irq and softirq (loopback TCP's share)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / HZ


def connection_cost(n: int = 500) -> float:
    """Machine CPU-ms of one connect + ``select 1`` + close (the machine should be otherwise quiet)."""
    before = machine_cpu()
    for _ in range(n):
        conn = psycopg2.connect(dbname="postgres", **PG)
        with conn.cursor() as cur:
            cur.execute("select 1")
        conn.close()
    return (machine_cpu() - before) / n * 1000


def sessions(database: str) -> int:
    conn = psycopg2.connect(dbname="postgres", **PG)
    with conn.cursor() as cur:
        cur.execute("select sessions from pg_stat_database where datname = %s", (database,))
        (count,) = cur.fetchone()
    conn.close()
    return count


def label(proc: psutil.Process) -> str:
    cmd = " ".join(proc.cmdline())
    if "dagster-webserver" in cmd:
        return "webserver"
    if "dagster-daemon" in cmd:
        return "daemon"
    if "code-server start" in cmd:
        return "code-server start (supervisor)"
    if "api grpc" in cmd:
        parent = " ".join(proc.parent().cmdline()) if proc.parent() else ""
        owner = next((name for key, name in [("dagster-webserver", "the webserver's"), ("dagster-daemon", "the daemon's"),
                                             ("code-server start", "supervised")] if key in parent), "")
        return f"code server ({owner})" if owner else "code server"
    return cmd[:40]


def snapshot(groups: set[int]) -> dict[int, tuple[str, float, int, int]]:
    out = {}
    for proc in process_group_members(groups):
        try:
            cpu, mem = proc.cpu_times(), proc.memory_full_info()
            out[proc.pid] = (label(proc), cpu.user + cpu.system, mem.rss, mem.pss)
        except psutil.NoSuchProcess:
            pass
    return out


def measure(topology: str, warmup: float, seconds: float) -> tuple[dict, int]:
    database = create_database()
    try:
        with Sandbox(SandboxConfig(port=0)) as sandbox, tempfile.TemporaryDirectory() as tmp:
            env = {"DHIS2_BASE_URL": sandbox.base_url, "DHIS2_USERNAME": "admin", "DHIS2_PASSWORD": "district"}
            stack = make_stack(Path(tmp), database, env)
            (stack.home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())  # clocks as shipped
            if topology == "supervised":
                stack.code_server = ("code-server", "start")
            try:
                stack.start(host_workspace=topology == "host")
                groups = {p.pid for p in stack.processes}
                time.sleep(warmup)
                first, opened = snapshot(groups), sessions(database)
                time.sleep(seconds)
                last, opened = snapshot(groups), sessions(database) - opened
            finally:
                stack.stop()
    finally:
        drop_database(database)
    per_minute = 60 / seconds
    rows = {pid: (name, (cpu - first.get(pid, (name, 0.0))[1]) * per_minute, rss, pss)
            for pid, (name, cpu, rss, pss) in last.items()}
    return rows, round(opened * per_minute)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topology", nargs="+", default=["host", "one-server", "supervised"],
                        choices=["host", "one-server", "supervised"])
    parser.add_argument("--warmup", type=float, default=30)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()

    cost = connection_cost()
    print(f"one PostgreSQL connection (connect, one query, close): {cost:.1f} ms of machine CPU")
    print(f"idle, measured over {args.seconds:g} s after {args.warmup:g} s")
    print(f"{'topology':<11} | {'process':<32} | {'CPU-s/min':>9} | {'RSS MB':>6} | {'PSS MB':>6}")
    summary = []
    for topology in args.topology:
        rows, connections = measure(topology, args.warmup, args.seconds)
        for name, cpu, rss, pss in sorted(rows.values()):
            print(f"{topology:<11} | {name:<32} | {cpu:9.2f} | {rss / 2**20:6.0f} | {pss / 2**20:6.0f}")
        cpu = sum(r[1] for r in rows.values())
        pss = sum(r[3] for r in rows.values()) / 2**20
        summary.append((topology, len(rows), cpu, pss, connections, connections * cost / 1000))
    print()
    print(f"{'topology':<11} | {'processes':>9} | {'CPU-s/min':>9} | {'PSS MB':>6} | {'PG connections/min':>18} "
          f"| {'their CPU-s/min':>15}")
    for topology, n, cpu, pss, connections, connection_cpu in summary:
        print(f"{topology:<11} | {n:9d} | {cpu:9.2f} | {pss:6.0f} | {connections:18d} | {connection_cpu:15.2f}")


if __name__ == "__main__":
    main()
