"""The Dagster side of re-execution (the rules are in ``core/reexecution.py``)."""

from __future__ import annotations

import dagster as dg

from ..core import prediction_steps as steps
from ..core.prediction_steps import PredictionRun
from ..core.reexecution import body_missing, continue_in_run
from ..settings import get_settings
from .reporting import report_step
from .resources import Dhis2Resource


def continue_run(
    context: dg.OpExecutionContext, run: PredictionRun, step: str, *, dhis2: Dhis2Resource | None = None
) -> None:
    """Take over state that an earlier run stored; before a POST, rebuild a body that is gone."""
    line = continue_in_run(run, context.run_id, step, parent_run_id=context.dagster_run.parent_run_id)
    if line is None:
        return
    context.log.info(line)
    if dhis2 is not None and body_missing(run):
        window = run.window
        context.log.info(
            "the parent run's request body was removed after its POST: fetching it again from DHIS2 "
            f"for the same window {window.start.id if window else None}..{window.end.id if window else None}"
        )
        settings = get_settings()
        with report_step(context, run, step), dhis2.reader(settings) as reader:
            steps.fetch_data(run, reader, settings, log=context.log.info)
