"""The real chap-core lane's session fixture: a real chap-core 2.5.1 on loopback behind the sandbox's route.

One fixture for the whole session (registered in conftest.py), so every ``realchap`` test module
shares one chap: ``scripts/real_chap.py install`` (a no-op when the venv is complete), ``start`` (own
Redis, Celery worker and API, state in a pytest tmp dir) and ``seed`` (mirrors the sandbox's monthly
prediction setup 1 into the real chap). Nothing skips: if the lane cannot be brought up the test
fails with the script's output, which carries the chap log tails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "real_chap.py"
AUTH = ("admin", "district")
SETUP_TO_MIRROR = 1
QUANTILES = (0.1, 0.5, 0.9)
N_PERIODS = 3


def _load_script():
    spec = importlib.util.spec_from_file_location("real_chap_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


rc = _load_script()


@dataclass
class Lane:
    chap_url: str
    sandbox_url: str
    seed: dict
    run_dir: Path
    timings: dict = field(default_factory=dict)

    @property
    def route(self) -> str:
        return f"{self.sandbox_url}/api/routes/chap/run"

    def run_job(self, instance) -> tuple[Any, dict[str, Any]]:
        """The scheduler's job, in process, on the mirrored configured model (calculated window), through the
        sandbox's route to the real chap: the result and its report's metadata values."""
        from chap_scheduler_dagster.defs.assets import report_asset_key
        from chap_scheduler_dagster.defs.jobs import dhis2_chap_prediction
        from chap_scheduler_dagster.defs.partitions import configured_models_partitions
        from chap_scheduler_dagster.defs.resources import Dhis2Resource

        key = str(self.seed["prediction_setup_id"])
        if not instance.has_dynamic_partition(configured_models_partitions.name, key):
            instance.add_dynamic_partitions(configured_models_partitions.name, [key])
        result = dhis2_chap_prediction.execute_in_process(
            partition_key=key, instance=instance,
            resources={"dhis2": Dhis2Resource(base_url=self.sandbox_url, username=AUTH[0], password=AUTH[1])},
            run_config={"ops": {"probe_covariates": {"config": {"end_mode": "calculated"}}}}, raise_on_error=False,
        )
        [record] = instance.fetch_materializations(report_asset_key, limit=1).records
        assert record.run_id == result.run_id, "every run writes its report"
        return result, {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _script(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`real_chap.py {' '.join(args)}` timed out after {timeout}s\n"
                    f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"`real_chap.py {' '.join(args)}` failed ({proc.returncode})\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}", pytrace=False)
    return proc


def _log_tails(run_dir: Path) -> str:
    out = []
    for name in ("api", "worker"):
        p = run_dir / "logs" / f"{name}.log"
        if p.exists():
            out.append(f"--- {p} (tail) ---\n{rc.tail(p, 30)}")
    return "\n".join(out)


@pytest.fixture(scope="session")
def real_chap_lane(tmp_path_factory):
    from dhis2_sandbox import Sandbox, SandboxConfig  # a missing sandbox is a failure, not a skip

    run_dir = tmp_path_factory.mktemp("real-chap-run")
    env = dict(os.environ, CHAP_REAL_RUN=str(run_dir))
    timings: dict[str, float] = {}

    t = time.monotonic()
    _script(["install"], env, timeout=1800)
    timings["install"] = round(time.monotonic() - t, 1)
    started = False
    try:
        t = time.monotonic()
        chap_url = _script(["start"], env, timeout=240).stdout.strip().splitlines()[-1]
        started = True
        timings["start"] = round(time.monotonic() - t, 1)
        assert chap_url.startswith("http://127.0.0.1:"), chap_url
        with Sandbox(SandboxConfig(port=0, chap_url=chap_url)) as sandbox:
            t = time.monotonic()
            out = _script(["seed", "--dhis2-url", sandbox.base_url, "--user", AUTH[0], "--password", AUTH[1],
                           "--from-setup", str(SETUP_TO_MIRROR)], env, timeout=600)
            timings["seed"] = round(time.monotonic() - t, 1)
            seed = json.loads(out.stdout.strip().splitlines()[-1])
            yield Lane(chap_url=chap_url, sandbox_url=sandbox.base_url, seed=seed, run_dir=run_dir,
                       timings=timings)
    finally:
        if started or (run_dir / "state.json").exists():
            subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        print(f"\n[real chap lane] timings: {timings}", file=sys.stderr)
