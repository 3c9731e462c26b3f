"""Loading an existing chap prediction for publishing again (job ``publish_chap_forecast``).

No POST to chap: the prediction is read (``/v1/crud/predictions/{id}`` and its entries) and
checked to belong to the configured model being published.
"""

from __future__ import annotations

from ..settings import SchedulerSettings
from .chap_client import ChapClient
from .errors import ChapHttpError, SchedulerError
from .prediction_steps import PredictionRun, report_quantiles
from .report import PredictionOutcome


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
    run.report.prediction = PredictionOutcome.from_summary(
        chap.summarize_prediction(prediction_id, report_quantiles(setup, settings))
    )
