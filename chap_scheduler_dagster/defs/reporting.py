"""Turning a step's outcome into the run report materialization and the op's status.

Every op runs its work inside :func:`report_step`. On failure it records the step and
the error in the report, materializes the report, removes any spooled body, and fails the
op with a message that names the cause and the fix. The last op materializes it on success.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from ..core.cancellation import mark_canceled
from ..core.errors import SchedulerError
from ..core.run_cause import JOB_TAG, explain_run
from ..core.prediction_body import remove_body
from ..core.prediction_steps import PredictionRun
from ..core.report import RunReport
from ..core.report_metadata import Key
from .assets import report_asset_key


def report_materialization(report: RunReport) -> dg.AssetMaterialization:
    """The report as a materialization of its configured model's partition."""
    metadata: dict[str, object] = {Key.REPORT.value: dg.MetadataValue.md(report.markdown())}
    metadata.update(report.metadata())
    return dg.AssetMaterialization(
        asset_key=report_asset_key,
        partition=report.setup_id,
        description=f"{report.status}" + (f" at {report.failed_step}" if report.failed_step else ""),
        metadata=metadata,
    )


def materialize_report(context: dg.OpExecutionContext, report: RunReport) -> None:
    if not context.has_partition_key:
        # No configured model: writing it would create a partition "?" in the report asset and a
        # phantom row in the overview. The run's own failure says what to do.
        context.log.warning("this run has no partition (configured model), so no run report is written")
        return
    context.log_event(report_materialization(report))
    if report.warnings:
        context.log.warning(f"succeeded with {len(report.warnings)} warning(s): " + "; ".join(report.warnings))
    try:
        from .tags import OUTCOME_TAG, tag_running_run

        tag_running_run(context, {OUTCOME_TAG: report.status})
    except Exception as exc:  # noqa: BLE001 - a tag must never fail the run whose report is written
        context.log.warning(f"could not tag the run with its outcome ({type(exc).__name__}: {exc})")


@contextmanager
def report_step(context: dg.OpExecutionContext, run: PredictionRun, step: str) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, dg.DagsterExecutionInterruptedError)):
            # Terminated from the UI or by run monitoring: say so in the report, let Dagster cancel.
            if isinstance(exc, dg.DagsterExecutionInterruptedError):
                # canceled, with how to check chap before relaunching; the cause (terminated, or run
                # monitoring's time limit) read from the run's own events
                mark_canceled(run.report, step, run.job_id)
                run.report.error = str(_interruption(context, run))
                remove_body(run.body_path)
                materialize_report(context, run.report)
            raise
        run.report.fail(step, exc)
        remove_body(run.body_path)
        run.body_path = None
        materialize_report(context, run.report)
        hint = f" — {run.report.hint}" if run.report.hint else ""
        raise dg.Failure(
            description=f"{run.report.error}{hint}",
            metadata={"failed_step": step, "error": run.report.error or "", "hint": run.report.hint or ""},
            allow_retries=False,
        ) from None


def _interruption(context: dg.OpExecutionContext, run: PredictionRun) -> SchedulerError:
    """Why the run was interrupted (terminated, or run monitoring's time limit), from its events, and
    whether a chap job it created may still be running."""
    from .run_backstop import run_events  # the backstop's reader of the run's events

    try:
        tags = dict(context.run.tags) | ({JOB_TAG: run.job_id} if run.job_id else {})
        cause = explain_run(
            run_events(context.instance, context.run_id), tags,
            run_id=context.run_id, setup_id=run.report.setup_id, status="CANCELED",
        )
        return SchedulerError(cause.text, hint=cause.hint)
    except Exception:  # noqa: BLE001 - the report must still be written
        return SchedulerError("the run was terminated while this step ran")
