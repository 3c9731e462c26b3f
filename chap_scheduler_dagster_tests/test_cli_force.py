"""``chap-scheduler-run``: an unchanged model is skipped, ``--force`` predicts anyway (sandbox over loopback)."""

from __future__ import annotations

import pytest

from chap_scheduler_dagster import cli
from dhis2_sandbox import Sandbox, SandboxConfig

from .test_unchanged_inputs import chap_posts

ARGS = ["1", "--end-mode", "offset", "--end-period-offset", "3"]


@pytest.fixture
def sandbox(monkeypatch, dagster_home):
    with Sandbox(SandboxConfig(port=0, job_seconds=0.1)) as sb:
        monkeypatch.setenv("DHIS2_BASE_URL", sb.base_url)
        monkeypatch.setenv("DHIS2_USERNAME", "admin")
        monkeypatch.setenv("DHIS2_PASSWORD", "district")
        yield sb


def test_cli_skips_unchanged_and_force_predicts(sandbox, capsys):
    assert cli.main(ARGS) == 0
    assert "configured model 1: SUCCEEDED WITH WARNINGS\n" in capsys.readouterr().out
    assert chap_posts(sandbox) == 1

    assert cli.main(ARGS) == 0, "a skip is not a failure"
    out = capsys.readouterr().out
    assert "configured model 1: SKIPPED: inputs unchanged since prediction 1 (run " in out
    assert chap_posts(sandbox) == 1

    assert cli.main([*ARGS, "--force"]) == 0
    assert "configured model 1: SUCCEEDED WITH WARNINGS\n" in capsys.readouterr().out
    assert chap_posts(sandbox) == 2
