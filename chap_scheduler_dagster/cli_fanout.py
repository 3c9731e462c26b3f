"""``chap-scheduler-run`` with several models: each model in its own child process, at most the per-DHIS2 limit at once.

The limit is the run queue's (``tag_concurrency_limits`` for ``chap_scheduler/dhis2`` in the instance's
dagster.yaml) when the instance sets one, else ``CHAP_SCHEDULER_CLI_CONCURRENCY`` (default 2). Each child
runs ``chap-scheduler-run <id>`` with the same options (forked from this process, which has Dagster and
the code location loaded already; see core/fan_out.py), so each model is its own Dagster run with its
own report, created and executed exactly as for a single id. Each model's block (its status line, report
and report file) is printed in one piece as soon as its run finishes: in the order the runs finish.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

import dagster as dg

from .core.fan_out import FanOut, FanOutLimit, Finished, fan_out_limit
from .defs.tags import DHIS2_TAG
from .settings import get_settings

CHILD_FLAG = "--one-of-many"  # hidden: a child of a fan-out (its parent prints the summary)


def limit_for(instance: dg.DagsterInstance) -> FanOutLimit:
    """The per-DHIS2 run limit the instance's run queue applies, or the CLI setting without one."""
    queue = getattr(instance.run_coordinator, "get_run_queue_config", None)  # only a queued coordinator has one
    # The instance merges dagster.yaml's `concurrency: runs:` section into the coordinator's settings.
    config = (instance.get_concurrency_config().run_queue_config or queue()) if queue else None
    settings = get_settings()
    return fan_out_limit(
        config.tag_concurrency_limits if config else None,
        config.max_concurrent_runs if config else None,
        DHIS2_TAG,
        settings.location_name or "default",
        settings.cli_concurrency,
        "CHAP_SCHEDULER_CLI_CONCURRENCY",
    )


CHILD_ARGS = 3  # what precedes a child's arguments: python -m chap_scheduler_dagster.cli


def child_command(args: argparse.Namespace, location: str, names: dict[str, str]):
    """The command line that runs one model with the parent's options."""

    def command(model_id: str) -> list[str]:
        argv = [sys.executable, "-m", "chap_scheduler_dagster.cli", model_id, CHILD_FLAG,
                "--end-mode", args.end_mode, "--code-location", location]
        if args.end_date:
            argv += ["--end-date", args.end_date]
        if args.end_period_offset is not None:
            argv += ["--end-period-offset", str(args.end_period_offset)]
        if args.report_dir:
            argv += ["--report-dir", str(args.report_dir)]
        if args.force:
            argv.append("--force")
        if names.get(model_id):
            argv += ["--model-name", names[model_id]]
        return argv

    return command


def block(done: Finished, interrupted: bool = False) -> str:
    """What to print for one model: the child's own block, or one line saying why there is none."""
    text = done.output.rstrip("\n")
    if f"configured model {done.key}:" in text:
        return text
    if interrupted:  # Ctrl-C reached the child outside its run (starting up, or after the run ended)
        return (f"configured model {done.key}: CANCELED (Ctrl-C) before it printed an outcome; its latest run "
                f"in the Dagster UI says how far it got")
    return (f"configured model {done.key}: FAILED: its process ended (exit code {done.returncode}) before it "
            f"printed an outcome; see the messages above, and the model's latest run in the Dagster UI")


def run_models(model_ids: Sequence[str], args: argparse.Namespace, location: str, names: dict[str, str],
               limit: FanOutLimit, main: Callable[[list[str]], int] | None = None) -> int:
    """Runs every model, prints one block per model as it finishes; returns the number that failed.

    ``main`` is the command's own entry point: a forked child calls it with the arguments a new child
    process would get.
    """
    print(f"running {len(model_ids)} configured models, at most {limit.value} at once ({limit.source})",
          file=sys.stderr, flush=True)
    command = child_command(args, location, names)
    forked = (lambda model_id: main(command(model_id)[CHILD_ARGS:])) if main else None
    fan = FanOut(model_ids, command, limit.value, forked=forked)
    previous = signal.signal(signal.SIGINT, lambda *_: fan.request_interrupt())
    failures = 0
    try:
        while fan.busy():
            for done in fan.wait():
                print(block(done, fan.interrupted), flush=True)  # one write per model: blocks never interleave
                failures += 0 if done.returncode == 0 else 1
    finally:
        signal.signal(signal.SIGINT, previous)
    if fan.interrupted:
        failures += len(fan.never_started)
        if fan.never_started:
            print(f"  interrupted: the remaining configured models were not run: {', '.join(fan.never_started)}",
                  flush=True)
        else:
            print("  interrupted: every configured model had started; the running ones were canceled", flush=True)
    return failures
