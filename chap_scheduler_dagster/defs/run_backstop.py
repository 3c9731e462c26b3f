"""Reading a finished run's own record for the backstop report (defs/overview.py).

Turns the run's event log into plain :class:`RunEvent` rows for core/run_cause.py, and looks in
chap, briefly and best-effort, for the job a run whose worker died may have left running: by
its recorded job id, or by the run's name when the POST's answer was never recorded.
"""

from __future__ import annotations

import dagster as dg

from ..core.chap_client import ChapClient
from ..core.errors import SchedulerError
from ..core.reconcile import run_marker
from ..core.run_cause import RunCause, RunEvent, explain_run
from ..settings import get_settings
from .resources import Dhis2Resource
from .tags import CHAP_JOB_TAG, POST_TAG

# The lookup runs inside a sensor tick: keep it short whatever the run settings say.
LOOKUP_TIMEOUT_SECONDS = 5.0


def _error_text(error) -> str:  # noqa: ANN001 - SerializableErrorInfo
    if error is None:
        return ""
    parts = [error.message.strip()]
    cause = error.cause
    while cause is not None:
        parts.append(f"Cause: {cause.message.strip()}")
        cause = cause.cause
    return " ".join(p for p in parts if p)


def run_events(instance: dg.DagsterInstance, run_id: str) -> list[RunEvent]:
    rows = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if error is None and event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
        rows.append(
            RunEvent(kind=event.event_type_value, message=event.message or entry.user_message or "",
                     error=_error_text(error), step=event.step_key)
        )
    return rows


def chap_lookup(run: dg.DagsterRun, setup_id: str, dhis2: Dhis2Resource) -> tuple[dict[str, str], str | None]:
    """(tags with the job id filled in when found by name, chap's status of the job); never raises."""
    tags = dict(run.tags)
    post, job_id = tags.get(POST_TAG, ""), tags.get(CHAP_JOB_TAG, "")
    if not job_id and post not in ("sending", "answer lost", "uncertain"):
        return tags, None
    settings = get_settings().model_copy(
        update={"http_timeout_seconds": LOOKUP_TIMEOUT_SECONDS, "http_get_attempts": 1}
    )
    try:
        with dhis2.chap(settings) as chap:
            if not job_id:
                found = chap.find_jobs_by_name(run_marker(run.run_id), int(setup_id))
                if not found:
                    return tags, None
                job_id = tags[CHAP_JOB_TAG] = found[0].id
            return tags, _status(chap, job_id)
    except (SchedulerError, ValueError):
        return tags, None


def _status(chap: ChapClient, job_id: str) -> str | None:
    try:
        return chap.job_status(job_id)
    except SchedulerError:
        return None


def cause_of(instance: dg.DagsterInstance, run: dg.DagsterRun, setup_id: str, dhis2: Dhis2Resource) -> RunCause:
    tags, chap_status = chap_lookup(run, setup_id, dhis2)
    return explain_run(
        run_events(instance, run.run_id), tags, run_id=run.run_id, setup_id=setup_id,
        status=run.status.value, chap_status=chap_status,
    )
