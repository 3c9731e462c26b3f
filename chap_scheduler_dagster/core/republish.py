"""Loading an existing chap prediction for publishing again (job ``publish_chap_forecast``).

No POST to chap: the prediction is read (``/v1/crud/predictions/{id}`` and its entries) and
checked to belong to the configured model being published.
"""

from __future__ import annotations

from ..settings import SchedulerSettings
from .chap_client import ChapClient
from .errors import ChapHttpError, SchedulerError
from .periods import calendar_order, dhis2_id
from .prediction_steps import PredictionRun, report_quantiles


def load_prediction(run: PredictionRun, chap: ChapClient, settings: SchedulerSettings, prediction_id: int) -> None:
    """Fill the run report's prediction section from chap's stored prediction ``prediction_id``."""
    setup = run.require_setup()
    try:
        prediction = chap._get(f"/v1/crud/predictions/{prediction_id}")  # a GET: the client's retries apply
    except ChapHttpError as exc:
        if exc.status_code == 404:
            raise SchedulerError(
                f"chap has no prediction {prediction_id}",
                hint="Take the prediction id from the failed run's report (DHIS2 import section).",
            ) from None
        raise
    owner = (prediction or {}).get("predictionSetupId")
    if owner is not None and int(owner) != setup.id:
        raise SchedulerError(
            f"prediction {prediction_id} belongs to configured model {owner}, not {setup.id}",
            hint=f"Launch publish_chap_forecast for partition {owner}, or give a prediction of {setup.id}.",
        )
    run.report.prediction_id = prediction_id
    run.report.n_periods = (prediction or {}).get("nPeriods")
    run.report.n_periods_how = "as stored with the prediction in chap"
    summary = chap.summarize_prediction(prediction_id, report_quantiles(setup, settings))
    periods = sorted(summary.periods, key=calendar_order)
    run.report.prediction_values = summary.values
    run.report.predicted_periods = [dhis2_id(p) for p in periods]
    run.report.median_by_period = {dhis2_id(p): summary.median_by_period[p] for p in periods if p in summary.median_by_period}
    run.forecast_sums = {q: {dhis2_id(p): v for p, v in sums.items()} for q, sums in summary.sum_by_quantile.items()}
