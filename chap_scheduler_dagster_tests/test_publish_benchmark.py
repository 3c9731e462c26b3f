"""benchmarks/publish_scale.py keeps working: the 1,000 org-unit case, through a sandbox in its own process.

It checks what the benchmark measures is right (values, requests, the memory budget), not its time:
times are the benchmark's to print."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "publish_scale.py"


def test_publish_benchmark_at_1000_org_units():
    spec = importlib.util.spec_from_file_location("publish_scale", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seconds, extra_mb, info = bench.one(1_000)
    assert info == {"values": 15_000, "requests": 4}
    assert extra_mb < bench.LIMIT_MB and seconds > 0
