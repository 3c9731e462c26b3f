"""What a skipped run (inputs unchanged) costs, against a predicting run of the same model.

    .venv/bin/python benchmarks/skip_cost.py [--latency 0 0.5] [--job-seconds 5] [--org-units 12]

The sandbox runs in this process (threads) with ``slow_seconds`` = latency on every DHIS2 and
chap call, and its chap stand-in "trains" for ``--job-seconds``. For each latency the job
runs four times on one fresh Dagster instance, window calculated (probe + fetch): predict, unchanged (skip), ``force`` (predict
again), one DHIS2 value changed (predict). Each line gives the run's status, wall time and
the requests it sent: DHIS2 API calls, chap GETs through the route, chap POSTs. A skip must
send no POST and no job poll: it costs the probe and the fetch, never chap's training.
Prints figures; asserts only that the skip sent nothing to chap's prediction endpoint.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--job-seconds", type=float, default=5.0, help="how long the chap stand-in trains")
    parser.add_argument("--org-units", type=int, default=12)
    args = parser.parse_args()
    os.environ.setdefault("CHAP_SCHEDULER_POLL_INTERVAL_SECONDS", "1")

    import dagster as dg

    from chap_scheduler_dagster.defs.assets import report_asset_key
    from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
    from chap_scheduler_dagster.defs.partitions import configured_models_partitions
    from chap_scheduler_dagster.defs.resources import Dhis2Resource
    from dhis2_sandbox import Sandbox, SandboxConfig
    from dhis2_sandbox import periods as P
    from dhis2_sandbox.world import DE_CASES

    window = {"end_mode": "calculated"}  # the probe included: what a scheduled run does
    print(f"org units {args.org_units}, chap stand-in training {args.job_seconds:g} s, poll every "
          f"{os.environ['CHAP_SCHEDULER_POLL_INTERVAL_SECONDS']} s")
    print(f"{'latency':>7} | {'run':<22} | {'status':<9} | {'wall':>6} | {'DHIS2 calls':>11} | {'chap GETs':>9} | "
          f"{'chap POSTs':>10}")
    for latency in args.latency:
        with Sandbox(SandboxConfig(port=0, org_units=args.org_units, job_seconds=args.job_seconds)) as sb, \
                dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(configured_models_partitions.name, ["1"])
            sb.faults.slow_seconds = latency
            resource = Dhis2Resource(base_url=sb.base_url, username="admin", password="district")

            def run(label: str, force: bool = False) -> None:
                before = len(sb.requests)
                ops: dict = {"probe_covariates": {"config": window}}
                if force:
                    ops["submit_prediction"] = {"config": {"force": True}}
                started = time.perf_counter()
                result = dhis2_chap_prediction.execute_in_process(
                    partition_key="1", instance=instance, resources={"dhis2": resource},
                    run_config={"ops": ops}, raise_on_error=False,
                )
                wall = time.perf_counter() - started
                meta = instance.fetch_materializations(report_asset_key, limit=1).records[0].asset_materialization.metadata
                sent = sb.requests[before:]
                route = [(m, p) for m, p, _ in sent if p.startswith("/api/routes/chap/run/")]
                dhis2 = [p for m, p, _ in sent if p.startswith("/api/") and not p.startswith("/api/routes/chap/run/")]
                posts = sum(1 for m, _ in route if m == "POST")
                print(f"{latency:>6g}s | {label:<22} | {meta['status'].value:<9} | {wall:>5.2f}s | {len(dhis2):>11} | "
                      f"{len(route) - posts:>9} | {posts:>10}", flush=True)
                if meta["status"].value == "skipped":
                    assert posts == 0, "a skipped run must not POST to chap"
                assert result.success

            run("predict")
            run("unchanged (skip)")
            run("force", force=True)
            world = sb.world
            unit = next(u for u in world.ou_ids if u != world.no_geometry_ou)
            p = world.last_month - 6
            [old] = world.native_values(world.data_elements[DE_CASES], p, [world.ou_index[unit]])
            world.set_value(DE_CASES, P.format_id("month", p), unit, old + 1)
            run("one value changed")


if __name__ == "__main__":
    main()
