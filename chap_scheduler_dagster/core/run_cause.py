"""Why a run ended without writing its own report, read from its engine events.

The backstop (defs/overview.py) hands in the run's events as plain :class:`RunEvent` rows and
its tags; this module names the cause the operator needs: a missing environment variable, a
killed run worker (and by which signal), a run-monitoring timeout, a terminated run; and what
the run had already done with chap (was the prediction request sent? which job?), so that
nobody launches a duplicate of a prediction that is still running.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .reconcile import run_marker

# Run tags written by prediction_steps.submit (kept here too so this module needs no Dagster).
POST_TAG = "chap_scheduler/post"
JOB_TAG = "chap_scheduler/chap_job_id"
FIX_MARKER = "\nWhat to do: "


@dataclass(frozen=True)
class RunEvent:
    kind: str  # the Dagster event type value, e.g. "STEP_START", "ENGINE_EVENT", "PIPELINE_FAILURE"
    message: str = ""
    error: str = ""  # the error text (with causes) when the event carries one
    step: str | None = None


@dataclass(frozen=True)
class RunCause:
    step: str
    error: str
    hint: str
    submission: str  # what the run had done with chap, in plain words

    @property
    def text(self) -> str:
        return f"{self.error} {self.submission}".strip()


_ENV_PATTERNS = (
    re.compile(r"environment variable '?([A-Z0-9_]+)'? (?:which )?is not set"),
    re.compile(r"environment variable ([A-Z0-9_]+) is not set"),
)
_EXIT = re.compile(r"(?:exit code|exitcode|exited with code)\s*(-?\d+)", re.IGNORECASE)
# The code server's words for a run worker that died, e.g. "Run execution process for <id> was
# terminated by signal 9 (SIGKILL)" or "Subprocess for <id> terminated unexpectedly with exit code -9".
_SIGNAL = re.compile(r"terminated by signal (\d+)", re.IGNORECASE)
_MAX_RUNTIME = re.compile(r"maximum runtime of (\d+) seconds", re.IGNORECASE)


def _signal_name(code: int) -> str:
    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number <= 0:
        return f"exit code {code}"
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _running_step(events: Sequence[RunEvent]) -> str | None:
    """The step that had started and not finished when the run ended."""
    open_steps: list[str] = []
    for e in events:
        if e.kind == "STEP_START" and e.step:
            open_steps.append(e.step)
        elif e.kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED") and e.step in open_steps:
            open_steps.remove(e.step)
    return open_steps[-1] if open_steps else None


def _own_message(error: str) -> tuple[str, str]:
    """(error, fix) from a resource start-up error: our message and fix, without Dagster's wrapping."""
    text = error
    for prefix in ("Cause: ",):
        if prefix in text:
            text = text.split(prefix)[-1]  # the innermost cause is ours
    if FIX_MARKER.strip() in text:
        error_part, _, fix = text.partition(FIX_MARKER.strip())
        return error_part.strip(), fix.strip()
    return text.strip(), ""


def submission_state(tags: Mapping[str, str], run_id: str, setup_id: str, chap_status: str | None = None) -> str:
    """What the run had done with chap, from its tags, in plain words."""
    post = tags.get(POST_TAG, "")
    job = tags.get(JOB_TAG, "")
    if job:
        status = f" (chap says {chap_status})" if chap_status else ""
        return (
            f"The prediction request had been sent and chap accepted it as job {job}{status}, which may still be "
            f"running in chap: check it (GET /v1/jobs/{job} through the route) before launching again, or the "
            "new run makes a second prediction."
        )
    if post in ("sending", "answer lost", "uncertain"):
        return (
            f"The prediction request had been sent but its answer was not recorded: chap may have created it. "
            f"Look in chap's jobs of configured model {setup_id} (GET /v1/jobs?predictionSetupId={setup_id}) for "
            f"a name ending with {run_marker(run_id)} before launching again; launch again only if there is none."
        )
    if post in ("not created", "refused"):
        return "chap did not create a prediction for this run, so launching again is safe."
    return "The run had not sent anything to chap, so launching again is safe."


def explain_run(
    events: Sequence[RunEvent],
    tags: Mapping[str, str],
    *,
    run_id: str,
    setup_id: str,
    status: str,
    chap_status: str | None = None,
) -> RunCause:
    """The cause of a run that ended (FAILURE or CANCELED) without a report of its own."""
    submission = submission_state(tags, run_id, setup_id, chap_status)
    running = _running_step(events)
    texts = [(e, f"{e.message} {e.error}") for e in events]

    # A variable missing from the environment, wherever Dagster reported it.
    for e, text in texts:
        for pattern in _ENV_PATTERNS:
            match = pattern.search(text)
            if match:
                name = match.group(1)
                error, fix = _own_message(e.error) if e.kind == "RESOURCE_INIT_FAILURE" and e.error else ("", "")
                return RunCause(
                    step="resource initialization",
                    error=error or f"the environment variable {name} is not set in the code location",
                    hint=fix or f"Set {name} in the code location's environment (under docker compose: `.env`, then "
                    "restart `user-code` and `daemon`) and reload the code location; then launch again.",
                    submission=submission,
                )
    # Any other failure to start the resources (e.g. launch config refused).
    for e in events:
        if e.kind == "RESOURCE_INIT_FAILURE":
            error, fix = _own_message(e.error or e.message)
            return RunCause(
                step="resource initialization",
                error=error or "the dhis2 resource could not be started",
                hint=fix or "Open the run's logs for the resource error; fix the code location's DHIS2_* variables.",
                submission=submission,
            )
    # A step that failed without writing the report (should not happen, but say what it said).
    for e in events:
        if e.kind == "STEP_FAILURE":
            return RunCause(
                step=e.step or "unknown step",
                error=(e.error or e.message).strip(),
                hint="Open the run's logs for details.",
                submission=submission,
            )
    where = f" during {running}" if running else ""
    # Run monitoring's time limit.
    for e, text in texts:
        match = _MAX_RUNTIME.search(text)
        if match:
            return RunCause(
                step=running or "run",
                error=f"run monitoring stopped the run{where}: it ran longer than its limit of "
                f"{int(match.group(1))} s (tag dagster/max_runtime)",
                hint="chap may have been slow or stuck: check chap-core's worker. The limit is "
                "CHAP_SCHEDULER_PREDICTION_TIMEOUT_SECONDS + 30 min; raise that setting if the model needs longer.",
                submission=submission,
            )
    # The run worker died (killed, out of memory, crashed).
    for e, text in texts:
        by_signal, by_code = _SIGNAL.search(text), _EXIT.search(text)
        died = by_signal or ("terminated unexpectedly" in text or "unexpectedly exited" in text)
        if not died:
            continue
        code = -int(by_signal.group(1)) if by_signal else int(by_code.group(1)) if by_code else None
        how = _signal_name(code) if code is not None else "an unknown cause"
        killed = " (killed: `kill -9`, or the out-of-memory killer)" if code in (-9, 137) else ""
        return RunCause(
            step=running or "run",
            error=f"the run worker process died{where}: {how}{killed}",
            hint="Check the host's memory (dmesg, docker stats) and whether something stops Dagster's run "
            "processes; then act on what the run had done with chap (below the error).",
            submission=submission,
        )
    # Terminated from the UI or the command line.
    if status == "CANCELED" or any(e.kind in ("PIPELINE_CANCELING", "RUN_CANCELING") for e in events):
        return RunCause(
            step=running or "run",
            error=f"the run was terminated{where} (from the UI, the command line or run monitoring)",
            hint="Launch again when wanted.",
            submission=submission,
        )
    failure = next((e for e in reversed(events) if e.kind in ("PIPELINE_FAILURE", "RUN_FAILURE")), None)
    message = (failure.error or failure.message).strip() if failure else ""
    engine_errors = [e.error for e in events if e.kind == "ENGINE_EVENT" and e.error]
    return RunCause(
        step=running or "run",
        error=(engine_errors[-1] if engine_errors else "") or message or f"the run ended {status.lower()}",
        hint="The run stopped before it could write its own report. Open the run's logs for details.",
        submission=submission,
    )
