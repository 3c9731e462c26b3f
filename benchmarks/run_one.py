"""One benchmarked run, in its own process (started by national_scale.py).

Prints one JSON line: idle RSS after loading the code location, the run's wall time, and
the times of the first DHIS2 analytics request and of the chap POST (wall clock, so the
parent can line them up with its RSS samples).
"""

from __future__ import annotations

import json
import os
import sys
import time

import psutil


def main() -> None:
    setup_id, end_offset = sys.argv[1], int(sys.argv[2])
    import dagster as dg

    from chap_scheduler_dagster.core.chap_client import ChapClient
    from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
    from chap_scheduler_dagster.defs.partitions import configured_models_partitions
    from chap_scheduler_dagster.definitions import defs

    marks: dict[str, float] = {}
    analytics, post = Dhis2Reader.analytics, ChapClient._post

    def timed_analytics(self, params):  # noqa: ANN001, ANN202
        if any(v.startswith("ou:") for k, v in params if k == "dimension"):
            marks.setdefault("first_fetch", time.time())
        return analytics(self, params)

    def timed_post(self, path, **kw):  # noqa: ANN001, ANN202
        marks["post"] = time.time()
        return post(self, path, **kw)

    Dhis2Reader.analytics, ChapClient._post = timed_analytics, timed_post
    job = defs.resolve_job_def("dhis2_chap_prediction")
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(configured_models_partitions.name, [setup_id])
        idle = psutil.Process().memory_info().rss
        print(json.dumps({"event": "idle", "rss": idle, "t": time.time()}), flush=True)
        started = time.time()
        result = job.execute_in_process(
            partition_key=setup_id,
            instance=instance,
            run_config={"ops": {"probe_covariates": {"config": {"end_mode": "offset", "end_period_offset": end_offset}}}},
            raise_on_error=False,
        )
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("dhis2_chap_prediction_report"), asset_partitions=[setup_id]), limit=1
        ).records
        meta = records[0].asset_materialization.metadata if records else {}
        print(json.dumps({
            "event": "done",
            "success": result.success,
            "wall": time.time() - started,
            "first_fetch": marks.get("first_fetch"),
            "post": marks.get("post"),
            "analytics_rows": meta["analytics_rows"].value if "analytics_rows" in meta else None,
            "error": meta["error"].value if "error" in meta else "",
            "longest_url": meta["longest_url"].value if "longest_url" in meta else None,
            "rss_end": psutil.Process().memory_info().rss,
            "pid": os.getpid(),
        }), flush=True)


if __name__ == "__main__":
    main()
