"""The Dagster side of re-execution (the rules are in ``core/reexecution.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import cache

import dagster as dg

from ..core import prediction_steps as steps
from ..core.dhis2_http import Dhis2Connection
from ..core.prediction_steps import PredictionRun
from ..core.reexecution import body_missing, continue_in_run
from ..settings import SchedulerSettings, get_settings
from .reporting import report_step
from .resources import Dhis2Resource


@contextmanager
def step_connection(dhis2: Dhis2Resource, settings: SchedulerSettings) -> Iterator[Callable[[], Dhis2Connection]]:
    """The step's one connection, opened the first time it is asked for and closed with the step.

    Opened on demand because submit_prediction may not need it at all (skipped as unchanged), and
    needs it before the skip check only when a re-execution fetches a removed body again.
    """
    with ExitStack() as opened:
        yield cache(lambda: opened.enter_context(dhis2.connect(settings)))


def continue_run(
    context: dg.OpExecutionContext,
    run: PredictionRun,
    step: str,
    *,
    connect: Callable[[], Dhis2Connection] | None = None,
) -> None:
    """Take over state that an earlier run stored; before a POST, rebuild a body that is gone, over the
    step's own connection (``connect``, from :func:`step_connection`)."""
    line = continue_in_run(run, context.run_id, step, parent_run_id=context.dagster_run.parent_run_id)
    if line is None:
        return
    context.log.info(line)
    if connect is not None and body_missing(run):
        window = run.window
        context.log.info(
            "the parent run's request body was removed after its POST: fetching it again from DHIS2 "
            f"for the same window {window.start.id if window else None}..{window.end.id if window else None}"
        )
        with report_step(context, run, step):
            steps.fetch_data(run, connect().reader, get_settings(), log=context.log.info)
