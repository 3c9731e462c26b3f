"""What a terminated run tells the operator: status ``canceled``, and whether chap may still be working.

Terminating a Dagster run does not stop chap. If chap had accepted the request, its job runs on and
a relaunch would make a second prediction; the report says so, names the job, and says how to check
it and how to keep it (re-execute from ``await_prediction``, which waits on the same job).
"""

from __future__ import annotations

from .chap_client import ROUTE_PREFIX
from .report import RunReport


def cancellation_facts(step: str, job_id: str | None, dhis2_url: str) -> tuple[str, str]:
    """(error, hint) for a run terminated while ``step`` ran; ``job_id`` when chap had accepted the request."""
    base = dhis2_url.rstrip("/") if dhis2_url else "<DHIS2_BASE_URL>"
    if job_id:
        error = (
            f"the run was terminated during {step}; chap job {job_id} had been accepted and may still be running"
        )
        hint = (
            f"Terminating the run does not stop chap, and a new run would make a second prediction. Check the job "
            f"first: GET {base}{ROUTE_PREFIX}/v1/jobs/{job_id} (as the DHIS2 user of this code location) shows its "
            "status. To keep that prediction, re-execute this run from await_prediction (Re-execute → From failure): "
            "it waits on the same job and sends nothing to chap. Launch a new run only if the job failed or a new "
            "prediction is wanted."
        )
    elif step == "submit_prediction":
        error = f"the run was terminated during {step}, while the request was being sent to chap"
        hint = (
            f"chap may or may not have created a prediction. Look for a new job of this configured model in chap's "
            f"job list (GET {base}{ROUTE_PREFIX}/v1/jobs) before launching again, so as not to make a second one."
        )
    else:
        error = f"the run was terminated during {step}; nothing had been sent to chap"
        hint = "Nothing is running in chap for this run. Launch it again when ready."
    return error, hint


def mark_canceled(report: RunReport, step: str, job_id: str | None = None) -> None:
    """Set the report's outcome to ``canceled`` with the facts above."""
    report.error, report.hint = cancellation_facts(step, job_id or report.job_id, report.dhis2_url)
    report.status = "canceled"
    report.failed_step = step
    report.rejection = None
    report.finish()
