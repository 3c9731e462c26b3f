"""``chap-scheduler-run``: an unchanged model is skipped, ``--force`` predicts anyway; a failure prints its fix
(sandbox over loopback)."""

from __future__ import annotations

import re
import shlex

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


def test_a_failure_prints_its_fix_and_the_command_line_advice_followed_gets_past_it(sandbox, capsys):
    """chap rejects model 3 (gappy rainfall): the summary carries the fix, with the command to run, and
    that command, run as printed, predicts."""
    assert cli.main(["3"]) == 1
    out = capsys.readouterr().out
    assert "configured model 3: FAILED at submit_prediction: chap rejected the prediction" in out
    [command] = re.findall(r"\n  fix: .*From the command line: `([^`]+)`", out, re.S)
    argv = shlex.split(command)
    assert argv[:2] == ["chap-scheduler-run", "3"] and "--end-date" in argv

    assert cli.main(argv[1:]) == 0, capsys.readouterr().out
    assert "configured model 3: SUCCEEDED" in capsys.readouterr().out


def test_an_authentication_failure_prints_the_variables_to_check_and_not_the_password(sandbox, capsys, monkeypatch):
    monkeypatch.setenv("DHIS2_PASSWORD", "Wrong-Pass-7731")
    assert cli.main(["1"]) == 1
    out = capsys.readouterr().out
    assert "FAILED at probe_covariates: DHIS2 authentication failed for user 'admin'" in out
    assert "\n  fix: Check DHIS2_USERNAME and DHIS2_PASSWORD (or DHIS2_TOKEN)" in out
    assert "Wrong-Pass-7731" not in out
