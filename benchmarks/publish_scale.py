"""Publishing at national scale: time and extra peak memory of one publish.

1,000 and 10,000 org units × 3 periods × 5 quantiles (15,000 and 150,000 data values), through
the real publish path (``core.publish.publish_prediction``): preflight of the targets and the
org units, chap's rows read one quantile at a time (served from JSON bytes, parsed like the
client parses chap's answer), spooled in chunks of CHAP_SCHEDULER_PUBLISH_CHUNK_VALUES, a dry
run of every chunk, then the import, into the DHIS2 sandbox running in its own process (so its
store does not count). Extra peak memory = peak RSS during the publish minus RSS just before.

    .venv/bin/python benchmarks/publish_scale.py            # both sizes
    .venv/bin/python benchmarks/publish_scale.py 10000      # one size
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LIMIT_MB = 25.0
QUANTILES = {"0.1": "dePredLow01", "0.25": "dePredMLo01", "0.5": "dePredMed01", "0.75": "dePredMHi01",
             "0.9": "dePredHig01"}


class PeakRss:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 1e6


def start_sandbox(org_units: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dhis2_sandbox", "--port", "0", "--org-units", str(org_units), "--months", "30"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"the sandbox did not start: {line!r}")
    return process, line.split("listening on ", 1)[1].split()[0]


def one(org_units: int) -> tuple[float, float, dict]:
    from chap_scheduler_dagster.core.chap_models import PredictionSetup
    from chap_scheduler_dagster.core.dhis2_http import Dhis2Connection
    from chap_scheduler_dagster.core.forecast_values import prediction_rows
    from chap_scheduler_dagster.core.publish import publish_prediction
    from chap_scheduler_dagster.core.report import RunReport
    from dhis2_sandbox.world import World

    process, base_url = start_sandbox(org_units)
    try:
        world = World(org_units, 30)
        setup = PredictionSetup.model_validate({
            "id": 1, "name": "national", "periodType": "month", "orgUnits": world.ou_ids,
            "quantileTargets": [{"quantile": q, "dataElementId": de} for q, de in QUANTILES.items()],
        })
        del world
        # A finished 3-month prediction for every org unit in the sandbox's chap stand-in.
        prediction_id = httpx.post(f"{base_url}/__sandbox/chap-predictions", json={"n_periods": 3}).json()["id"]
        report = RunReport(setup_id="1", dhis2_url=base_url)
        chunk = int(os.environ.get("CHAP_SCHEDULER_PUBLISH_CHUNK_VALUES", "10000"))
        # One connection for reads, chap and writes, as the publish step opens it.
        with Dhis2Connection(base_url, username="admin", password="district") as conn, conn.writer() as writer:
            reader, chap = conn.reader, conn.chap
            reader.system_info()  # the connection and imports warm before measuring
            chap.system_info()
            started = time.perf_counter()
            with PeakRss() as rss:
                result = publish_prediction(report, setup, prediction_id, rows=prediction_rows(chap, prediction_id),
                                            reader=reader, writer=writer, mode="on", horizon=3, chunk_values=chunk)
            seconds = time.perf_counter() - started
        assert result.outcome == "published" and result.counts is not None
        assert result.counts.imported == org_units * 3 * 5, result.counts
        return seconds, rss.extra_mb, {"values": result.values, "requests": result.chunks_total * 2}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(sizes: list[int]) -> int:
    worst = 0.0
    for n in sizes:
        seconds, extra, info = one(n)
        print(f"{n:>6,} org units × 3 periods × 5 quantiles = {info['values']:>7,} values: {seconds:6.2f} s, "
              f"extra peak memory {extra:5.1f} MB ({info['requests']} dataValueSets requests)", flush=True)
        if n >= 10_000:
            worst = max(worst, extra)
    if worst > LIMIT_MB:
        print(f"FAIL: the 10,000 org-unit publish added {worst:.1f} MB (limit {LIMIT_MB:g} MB)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main([int(a) for a in sys.argv[1:]] or [1_000, 10_000]))
