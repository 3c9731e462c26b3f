"""``python -m dhis2_sandbox``: run the DHIS2 sandbox until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import Sandbox, SandboxConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chap-sandbox", description="Loopback DHIS2 stand-in with a chap route")
    ap.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--org-units", type=int, default=12, help="number of districts")
    ap.add_argument("--months", type=int, default=72, help="months of history")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chap-url", default=None, help="forward the chap route to this chap-core base URL")
    ap.add_argument("--chap-api", choices=["prediction-setups", "legacy"], default="prediction-setups")
    ap.add_argument("--job-seconds", type=float, default=0.6, help="chap job time from PENDING to terminal")
    ap.add_argument("--weekly-setup-weeks", type=int, default=110, help="how far back weekly setup 2 starts")
    args = ap.parse_args(argv)

    cfg = SandboxConfig(port=args.port, org_units=args.org_units, months=args.months, seed=args.seed,
                        chap_url=args.chap_url, chap_api=args.chap_api, job_seconds=args.job_seconds,
                        weekly_setup_weeks=args.weekly_setup_weeks)
    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sb = Sandbox(cfg).start()
    print(f"DHIS2 sandbox listening on {sb.base_url} (user {cfg.username} / password {cfg.password})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
