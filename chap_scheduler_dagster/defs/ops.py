"""The first four ops of one prediction run (the fifth, publish_forecasts, is in defs/publishing.py).
Thin: the work is in ``core.prediction_steps``."""


from typing import Literal

import dagster as dg
from pydantic import Field

from ..core import prediction_steps as steps
from ..core.chap_alerts import collect_alerts, explain_failed_job
from ..core.errors import ChapJobFailed, SchedulerError, redact_url
from ..core.prediction_steps import PredictionRun
from ..core.report import RunReport
from ..core.run_window import parse_window_request
from ..settings import get_settings
from .reexecution import continue_run, step_connection
from .reporting import report_step
from .tags import CHAP_JOB_TAG, model_tags, tag_running_run
from .resources import Dhis2Resource
from .unchanged import skip_if_unchanged


class ProbeCovariatesConfig(dg.Config):
    """How the end of the input window is chosen. The start is the configured model's start period."""

    end_mode: Literal["calculated", "fixed", "offset"] = Field(
        default="calculated",
        description="calculated: freshest period where every covariate has data in DHIS2; "
        "fixed: the period covering end_date; offset: end_period_offset periods back from today.",
    )
    end_date: str | None = Field(default=None, description="YYYY-MM-DD, used when end_mode is fixed.")
    end_period_offset: int | None = Field(
        default=None, description="0 = current (in-progress) period, 1 = last complete, … Used when end_mode is offset."
    )


def _run(context: dg.OpExecutionContext, dhis2: Dhis2Resource) -> PredictionRun:
    settings = get_settings()
    key = context.partition_key if context.has_partition_key else "?"
    report = RunReport(
        setup_id=key, dhis2_url=redact_url(dhis2.base_url), location=settings.location_name, run_id=context.run_id
    )
    return PredictionRun(report=report)


@dg.op(description="Connect to DHIS2 and chap, load the configured model and resolve the input window.")
def probe_covariates(
    context: dg.OpExecutionContext, config: ProbeCovariatesConfig, dhis2: Dhis2Resource
) -> PredictionRun:
    run = _run(context, dhis2)
    settings = get_settings()
    with report_step(context, run, "probe_covariates"):
        request = parse_window_request(config.end_mode, config.end_date, config.end_period_offset)
        run.report.end_mode = request.end_mode
        if not context.has_partition_key:
            raise SchedulerError(
                "the run has no partition", hint="Pick a configured model (partition) in the launchpad."
            )
        with dhis2.connect(settings) as conn:  # one connection for the step
            reader, chap = conn.reader, conn.chap
            steps.connect(run, reader, chap, context.partition_key, log=context.log.info)
            tag_running_run(context, model_tags(run.report.name))
            steps.choose_window(run, request, reader, settings, today=settings.today(), log=context.log.info)
    return run


@dg.op(description="Fetch covariate values and org-unit geometry from DHIS2 into the request body.")
def fetch_analytics(context: dg.OpExecutionContext, run: PredictionRun, dhis2: Dhis2Resource) -> PredictionRun:
    settings = get_settings()
    continue_run(context, run, "fetch_analytics")
    with report_step(context, run, "fetch_analytics"), dhis2.reader(settings) as reader:
        steps.fetch_data(run, reader, settings, log=context.log.info)
    return run


class SubmitPredictionConfig(dg.Config):
    """Whether to predict when nothing changed since the model's last successful prediction."""

    force: bool = Field(
        default=False,
        description="false: skip the prediction (run ends 'skipped', the previous forecast stays current) when "
        "the inputs fingerprint equals that of the last successful prediction; true: predict anyway.",
    )


# No output on a skip: await_prediction and later steps are skipped and the run still succeeds.
@dg.op(
    description="Post the prediction request to chap through the DHIS2 route, once; skipped when the inputs are "
    "unchanged since the last successful prediction (config force: true predicts anyway).",
    out=dg.Out(PredictionRun, is_required=False),
)
def submit_prediction(
    context: dg.OpExecutionContext, config: SubmitPredictionConfig, run: PredictionRun, dhis2: Dhis2Resource
):
    settings = get_settings()
    with step_connection(dhis2, settings) as conn:  # one for the step: a body fetched again and the POST
        continue_run(context, run, "submit_prediction", connect=conn)
        with report_step(context, run, "submit_prediction"):
            if skip_if_unchanged(context, run, force=config.force,
                                 find_prediction=lambda pid: conn().chap.find_prediction(pid)):
                return
        with report_step(context, run, "submit_prediction"):
            steps.submit(
                run, conn().chap, log=context.log.info, settings=settings,
                # Run tags: the backstop report of a run whose worker dies later reads them.
                record=lambda tags: context.instance.add_run_tags(context.run_id, tags),
            )
    yield dg.Output(run)


@dg.op(description="Wait for chap's job and read the prediction and its values.")
def await_prediction(context: dg.OpExecutionContext, run: PredictionRun, dhis2: Dhis2Resource) -> PredictionRun:
    settings = get_settings()
    continue_run(context, run, "await_prediction")
    tag_running_run(context, {CHAP_JOB_TAG: run.job_id or ""})
    with report_step(context, run, "await_prediction"), dhis2.connect(settings) as conn:
        chap = conn.chap
        try:
            steps.await_prediction(run, chap, settings, log=context.log.info)
        except ChapJobFailed as exc:
            explain_failed_job(run, chap, exc)  # the prediction may exist: chap's alert step failed after it
            raise
        collect_alerts(run, chap, conn.reader, log=context.log.info)  # never raises: a note at worst
    # The success report is written by the last op, publish_forecasts (defs/publishing.py).
    return run
