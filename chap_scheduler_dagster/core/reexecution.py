"""What re-executing a run from a step means for the prediction state handed between steps.

A step that runs in a re-execution receives the state its upstream step stored in the parent
run (see ``defs/run_state.py``). That state is the parent's, so before the step works:

- the report becomes this run's: its run id, start time and a note of which run it continues
  (``Re-execution of`` in the report), with no outcome yet;
- from ``await_prediction`` the chap job id is the parent's: the step waits on that same job
  again, never posts a second time;
- from ``submit_prediction`` the spooled request body of the parent is gone (it is removed
  after every POST and on every failure): it is fetched again from DHIS2 for the same window
  before the one POST of this run.

A whole new run (Launchpad, schedule, sensor, command line) starts at ``probe_covariates`` and is
a new prediction.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .prediction_steps import PredictionRun


def continue_in_run(
    run: PredictionRun, run_id: str, step: str, *, parent_run_id: str | None = None, now: datetime | None = None
) -> str | None:
    """Make state received from another run this run's own; a line for the log when it was, else None."""
    report = run.report
    if not report.run_id or report.run_id == run_id:
        return None
    parent = parent_run_id or report.run_id
    report.reexecution_of = f"run {parent}, from step {step}"
    report.run_id = run_id
    report.started_at = now or datetime.now(UTC)
    report.finished_at = None
    report.status = "running"
    report.failed_step = report.error = report.hint = None
    report.rejection = None
    line = f"re-execution of run {parent} from {step}: the report now belongs to run {run_id}"
    if step == "await_prediction" and run.job_id:
        line += f"; waiting again on chap job {run.job_id} (no new request is sent to chap)"
    return line


def body_missing(run: PredictionRun) -> bool:
    """Whether the spooled request body this state points at is gone (removed after the parent's POST)."""
    return run.body_path is None or not run.body_path.exists()
