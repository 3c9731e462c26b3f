"""Reconciling a prediction POST whose answer was lost.

A POST to chap is never retried: a second one could create a duplicate prediction. When its
answer is lost (a timeout after sending, HTTP 502/503/504 from DHIS2's route, a dropped
connection), the prediction may or may not exist. Every prediction is named after its Dagster
run (``… [dagster run <run id>]``), and chap gives a job the name of its request (checked
against chap-core 2.5.1), so the run looks for that name in ``GET /v1/jobs?predictionSetupId=``
for a bounded time: found means carry on waiting for that job; not found means nothing was
created and launching again is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .chap_client import ChapClient
from .chap_models import ChapApi, JobDescription
from .errors import ChapError, ChapPredictionNotCreated, ChapSubmitUncertain


def run_marker(run_id: str) -> str:
    """The part of a prediction's name that identifies the Dagster run that made it."""
    return f"[dagster run {run_id}]"


def prediction_name(base: str, run_id: str) -> str:
    return f"{base} {run_marker(run_id)}" if run_id else base


@dataclass(frozen=True)
class Reconciled:
    job: JobDescription
    note: str


def reconcile_submission(
    chap: ChapClient,
    setup_id: int,
    run_id: str,
    lost: ChapSubmitUncertain,
    *,
    window_seconds: float,
    poll_seconds: float,
    api: ChapApi | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda _: None,
) -> Reconciled:
    """Find the job this run's lost POST created, looking for at most ``window_seconds``.

    Raises ChapPredictionNotCreated when chap has no such job by the end of the window, and
    ChapSubmitUncertain (still uncertain) when chap's job list could not be read at all.
    """
    if not run_id:
        raise lost
    marker = run_marker(run_id)
    deadline = clock() + window_seconds
    looks = 0
    last_error: ChapError | None = None
    while True:
        looks += 1
        try:
            jobs = chap.find_jobs_by_name(marker, setup_id, api=api)
            last_error = None
        except ChapError as exc:
            jobs, last_error = [], exc
            log(f"looking for job {marker} in chap failed: {exc}")
        if jobs:
            job = jobs[0]  # newest first; a run makes one POST, so there is one
            note = (
                f"the POST's answer was lost ({lost.what}); found job {job.id} by name "
                f"({marker}, status {job.status or 'unknown'}) and waited for it"
            )
            return Reconciled(job=job, note=note)
        if clock() >= deadline:
            break
        sleep(poll_seconds)
    if last_error is not None:
        raise ChapSubmitUncertain(
            lost.path,
            lost.what,
            message=f"chap POST {lost.path}: {lost.what}, and chap's job list could not be read for "
            f"{window_seconds:g} s to check whether the prediction was created ({last_error})",
            hint=f"Before launching again, look in chap's job list (GET /v1/jobs?predictionSetupId={setup_id} "
            f"through the route) for a job whose name ends with {marker}; launch again only if there is none.",
        )
    raise ChapPredictionNotCreated(
        f"chap POST {lost.path}: {lost.what}; chap has no job named …{marker} after looking for "
        f"{window_seconds:g} s ({looks} looks), so the prediction was not created",
        hint="Launching again is safe: it cannot make a duplicate. If it happens again, check chap-core's health "
        "and the DHIS2 route 'chap' (its URL, and responseTimeoutSeconds for large requests).",
    )
