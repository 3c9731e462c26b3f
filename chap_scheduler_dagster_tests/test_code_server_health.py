"""The user-code container's health check (chap_scheduler_dagster/code_server_health.py) against a
real gRPC server that serves the standard health service, as Dagster's code server does.
That the check passes against a real Dagster code server started as the compose service starts
it is shown by test_deployment.py::test_user_code_server_starts_like_the_compose_service."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chap_scheduler_dagster.code_server_health import DAGSTER_SERVICE, main

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None)


def test_serving_passes_and_every_other_answer_fails_with_its_reason(
    health_server: tuple[int, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    port, servicer = health_server
    # The server is up but has not registered Dagster's service yet.
    assert main(["-p", str(port)]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    servicer.set(DAGSTER_SERVICE, NOT_SERVING)
    assert main(["-p", str(port)]) == 1
    assert f"code server 127.0.0.1:{port}: NOT_SERVING" in capsys.readouterr().err
    servicer.set(DAGSTER_SERVICE, SERVING)
    assert main(["-p", str(port)]) == 0
    assert capsys.readouterr().err == ""


def test_nothing_listening_fails_as_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers
        assert main(["-p", str(port), "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_the_check_does_not_import_dagster(health_server: tuple[int, health.HealthServicer]) -> None:
    # Why the module exists: Dagster's own check imports all of Dagster for each call.
    port, servicer = health_server
    servicer.set(DAGSTER_SERVICE, SERVING)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "chap_scheduler_dagster.code_server_health", "-p", str(port)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = re.findall(r"\|\s+([\w.]+)$", done.stderr, flags=re.MULTILINE)
    assert "grpc" in imported and "grpc_health.v1.health_pb2" in imported
    assert not [m for m in imported if m.split(".")[0] in {"dagster", "dagster_shared", "pydantic", "httpx"}]
