"""No needless predictions: the pre-POST check of ``submit_prediction``, read from the instance.

The model's last successful prediction is the latest report of its partition with status
``succeeded`` whose publishing was not only a dry run (a rehearsal's forecast never reached DHIS2); a report skipped as unchanged points at the same prediction (it carries its
fingerprint, prediction id and run id), so the search usually stops at the first record.
A skip also needs chap to hold that prediction still (one GET, only when the inputs are unchanged).
The decisions themselves are pure (``core.fingerprint``).
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from ..core.chap_models import PredictionInfo
from ..core.errors import SchedulerError
from ..core.fingerprint import SKIP_HINT, LastPrediction, skip_reason, still_in_chap, unchanged_since
from ..core.prediction_body import remove_body
from ..core.prediction_steps import PredictionRun
from ..core.report_metadata import Key, text
from ..core.run_warnings import is_success
from .assets import report_asset_key
from .reporting import materialize_report

# How many reports back to look for the last successful one (failed runs in between are passed over).
SEARCH_LIMIT = 200
_PAGE = 50


def last_successful_prediction(
    instance: dg.DagsterInstance, partition: str, asset_key: dg.AssetKey = report_asset_key
) -> LastPrediction | None:
    """The fingerprint, prediction id and run id of the partition's current prediction, or None."""
    cursor = None
    seen = 0
    while seen < SEARCH_LIMIT:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=_PAGE, cursor=cursor
        )
        for record in result.records:
            seen += 1
            m = record.asset_materialization
            meta = dict(m.metadata) if m else {}
            status = text(meta, Key.STATUS)
            if is_success(status) and text(meta, Key.PUBLISH_OUTCOME) == "dry run":
                continue  # a rehearsal: its forecast never reached DHIS2, so it is not the one to keep
            if is_success(status):  # with warnings too: the forecast exists
                fingerprint = text(meta, Key.FINGERPRINT)
                if not fingerprint:
                    return None  # predicted before fingerprints existed: predict again, once
                return LastPrediction(fingerprint, text(meta, Key.PREDICTION_ID), record.run_id or text(meta, Key.RUN_ID))
            if status == "skipped" and text(meta, Key.CURRENT_PREDICTION_ID) and text(meta, Key.FINGERPRINT):
                return LastPrediction(
                    text(meta, Key.FINGERPRINT), text(meta, Key.CURRENT_PREDICTION_ID),
                    text(meta, Key.CURRENT_PREDICTION_RUN_ID),
                )
        if not result.has_more:
            return None
        cursor = result.cursor
    return None


def skip_if_unchanged(
    context: dg.OpExecutionContext, run: PredictionRun, *, force: bool,
    find_prediction: Callable[[int], PredictionInfo | None],
) -> bool:
    """True when the run was ended ``skipped`` (report materialized, spooled body removed): do not POST.

    Only a prediction chap still holds is kept (``find_prediction`` asks chap, once, on the way to a skip)."""
    if not run.fingerprint or not context.has_partition_key:
        return False
    try:
        last = last_successful_prediction(context.instance, context.partition_key)
    except Exception as exc:  # noqa: BLE001 - reading history must never stop a prediction
        context.log.warning(f"could not read the last prediction's fingerprint ({type(exc).__name__}: {exc}); predicting")
        return False
    same = unchanged_since(run.fingerprint, last)
    if same is None:
        if last is not None:
            context.log.info(f"inputs changed since {last.describe()}: predicting")
        return False
    if force:
        context.log.info(f"{skip_reason(same)}, but force is set: predicting anyway")
        return False
    try:
        kept = same.prediction_id.isdigit() and still_in_chap(same, find_prediction(int(same.prediction_id)))
    except SchedulerError as exc:  # uncertain: predicting costs a training, a wrong skip leaves no forecast in chap
        context.log.warning(f"could not ask chap for {same.describe()} ({exc}); predicting")
        return False
    if not kept:
        context.log.info(f"inputs unchanged, but chap no longer holds {same.describe()}: predicting")
        return False
    remove_body(run.body_path)
    run.body_path = None
    report = run.report
    report.current_prediction_id, report.current_prediction_run_id = same.prediction_id, same.run_id
    report.skip(skip_reason(same), SKIP_HINT)
    context.log.info(f"{report.error}: nothing sent to chap; that prediction stays current")
    materialize_report(context, report)
    return True


def forecast_data_version(run: PredictionRun) -> dg.DataVersion | None:
    """The data version of the model's forecast (``chap_forecast``): its inputs fingerprint."""
    return dg.DataVersion(run.fingerprint) if run.fingerprint else None
