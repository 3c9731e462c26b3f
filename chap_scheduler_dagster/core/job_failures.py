"""chap's known job failures (a job that ends FAILURE after accepting the request), mapped to a fix that works.

The job's error text is chap's own; the fix is computed from what this run sent (its window and the
configured model), so the operator gets a concrete change rather than "see chap's log".
Pure: no I/O.
"""

from __future__ import annotations

from .periods import Period
from .rejection_fix import MIN_TRAINING_PERIODS

TOO_SHORT = "Training data must cover at least two whole years"
NO_DATA = "No data in dataset"


def job_failure_hint(error: str, *, start: Period | None, end: Period | None, end_mode: str | None) -> str | None:
    """The fix for a known chap job failure, or None (the generic hint stays)."""
    if TOO_SHORT in error and start is not None and end is not None:
        need = MIN_TRAINING_PERIODS[start.type]
        have = end.ordinal - start.ordinal + 1
        earliest = end.shift(-(need - 1))
        text = (
            f"The window {start.id}..{end.id} has {have} periods; chap trains only on more than two whole years "
            f"(at least {need}). Move the configured model's start period in chap to {earliest.id} or earlier "
            "(a new prediction setup from a dataset that starts there), then run again."
        )
        if end_mode in ("fixed", "offset"):
            text += (
                " Or, if DHIS2 has newer data, launch with the latest end instead:\n\n```yaml\n"
                "ops:\n  probe_covariates:\n    config:\n      end_mode: calculated\n```"
            )
        return text
    if NO_DATA in error:
        return (
            "chap matched no org unit of the request to a polygon, so it had nothing to train on. Check that the "
            "configured model's org units have geometry in DHIS2 (Maintenance → Organisation units; the report lists "
            "those without) and that they are the org units the configured model was made for in chap."
        )
    return None
