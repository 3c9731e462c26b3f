"""The user-code server's health check: ``python -m chap_scheduler_dagster.code_server_health -p 4000``.

It asks the code server what ``dagster api grpc-health-check`` asks (the standard gRPC health
service, for the service ``DagsterApi``), over the same gRPC libraries, and exits 0 when the answer
is SERVING, 1 otherwise with the reason on stderr. It exists because Docker runs a health check
for the whole life of a container: Dagster's command imports all of Dagster for one call, 0.8
CPU-s each time (every 15 s: 5 % of a core, for ever); this imports grpcio alone, 0.1 CPU-s.
Nothing of Dagster is imported (the package's ``__init__`` imports nothing either).
"""

from __future__ import annotations

import argparse
import sys

DAGSTER_SERVICE = "DagsterApi"  # the name dagster's code server registers as SERVING when it starts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chap_scheduler_dagster.code_server_health",
        description="Exit 0 when the Dagster code server on HOST:PORT answers SERVING to a gRPC health check.",
    )
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    args = parser.parse_args(argv)

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{args.host}:{args.port}"
    try:
        with grpc.insecure_channel(target) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=DAGSTER_SERVICE), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"code server {target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if status != "SERVING":
        print(f"code server {target}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
