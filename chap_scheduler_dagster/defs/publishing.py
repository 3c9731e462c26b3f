"""Publishing forecasts to DHIS2: the fifth op, the republish job and the forecast assets.

Thin: the work is in ``core.publish``. ``publish_forecasts`` is the prediction job's last op,
so it also writes the success report. ``publish_chap_forecast`` publishes an existing
prediction again (DHIS2 was down, conflicts were fixed) without a second POST to chap.
"""


from typing import Literal

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from pydantic import Field

from ..core import prediction_steps as steps
from ..core.chap_alerts import forecast_alert_metadata
from ..core.dhis2_http import Dhis2Connection
from ..core.errors import redact_url
from ..core.forecast_values import prediction_rows
from ..core.outbreak import chap_thresholds
from ..core.prediction_steps import PredictionRun, prediction_horizon
from ..core.publish import publish_prediction, resolve_mode
from ..core.report import RunReport
from ..core.republish import load_prediction
from ..settings import get_settings
from .assets import _key
from .partitions import configured_models_partitions
from .reexecution import continue_run
from .reporting import materialize_report, report_step
from .resources import Dhis2Resource
from .unchanged import forecast_data_version

# ---- assets: DHIS2 covariates -> chap forecast -> DHIS2 forecast values ------------------

dhis2_covariates_key = _key("dhis2_covariates")
chap_forecast_key = _key("chap_forecast")
dhis2_forecast_values_key = _key("dhis2_forecast_values")

dhis2_covariates = dg.AssetSpec(
    dhis2_covariates_key,
    group_name="chap_predictions",
    description="The covariate data elements in DHIS2 (analytics) that each configured model reads. "
    "Owned by DHIS2; shown for lineage.",
)
chap_forecast = dg.AssetSpec(
    chap_forecast_key,
    deps=[dhis2_covariates],
    partitions_def=configured_models_partitions,
    group_name="chap_predictions",
    description="chap's latest successful prediction of each configured model: prediction id, periods, "
    "org units, and the forecast per period (median and outer quantiles, summed over org units).",
)
dhis2_forecast_values = dg.AssetSpec(
    dhis2_forecast_values_key,
    deps=[chap_forecast],
    partitions_def=configured_models_partitions,
    group_name="chap_predictions",
    description="The forecast written into DHIS2's quantile-target data elements (dataValueSets import), with "
    "the import counts. Materialized on each real publish.",
)
forecast_assets = [dhis2_covariates, chap_forecast, dhis2_forecast_values]


def chap_forecast_metadata(run: PredictionRun) -> dict[str, object]:
    """The chap_forecast asset's metadata; one place, so more (e.g. chap alerts) can be added here."""
    r = run.report
    metadata: dict[str, object] = {
        "prediction_id": r.prediction_id if r.prediction_id is not None else "",
        "predicted_periods": ", ".join(r.predicted_periods),
        # covered = the configured model's org units minus those without geometry and those chap dropped
        "org_units": max(0, (r.org_unit_count or 0) - len(r.org_units_without_geometry) - len(r.org_units_dropped_by_chap)),
        "org_units_dropped_by_chap": len(r.org_units_dropped_by_chap),
        "prediction_values": r.prediction.values if r.prediction else 0,
    }
    sums = r.prediction.sums if r.prediction else {}
    if sums:
        quantiles = sorted(sums)
        shown = [q for q in (quantiles[0], 0.5, quantiles[-1]) if q in sums]
        shown = list(dict.fromkeys(shown))
        columns = [dg.TableColumn("period", "string")] + [
            dg.TableColumn(_column(q), "float", description=f"quantile {q:g}, summed over org units") for q in shown
        ]
        records = [
            dg.TableRecord({"period": p, **{_column(q): round(sums[q].get(p, 0.0), 3) for q in shown}})
            for p in r.predicted_periods
        ]
        metadata["forecast"] = dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))
    alerts = forecast_alert_metadata(r.chap_alerts)
    if "chap_alerts_table" in alerts:
        alerts["chap_alerts_table"] = dg.MetadataValue.md(alerts["chap_alerts_table"])
    metadata.update(alerts)
    return metadata


def _column(q: float) -> str:
    return "median" if abs(q - 0.5) < 1e-9 else f"q{round(q * 100):02d}"


def chap_forecast_materialization(run: PredictionRun) -> dg.AssetMaterialization:
    # The inputs fingerprint is the forecast's data version: same inputs, same forecast (issue #12).
    version = forecast_data_version(run)
    return dg.AssetMaterialization(
        asset_key=chap_forecast_key,
        partition=run.report.setup_id,
        description=f"prediction {run.report.prediction_id}",
        metadata=chap_forecast_metadata(run),
        tags={DATA_VERSION_TAG: version.value} if version else None,
    )


def forecast_values_materialization(report: RunReport) -> dg.AssetMaterialization:
    p = report.publish
    assert p is not None
    metadata: dict[str, object] = {
        "prediction_id": report.prediction_id if report.prediction_id is not None else "",
        "values": p.values or 0,
        "periods": ", ".join(p.periods),
        "targets": "; ".join(p.targets),
    }
    if p.counts is not None:
        metadata.update(p.counts.as_dict())
    return dg.AssetMaterialization(
        asset_key=dhis2_forecast_values_key,
        partition=report.setup_id,
        description=f"prediction {report.prediction_id} imported into DHIS2",
        metadata=metadata,
    )


# ---- ops ---------------------------------------------------------------------------------

PublishMode = Literal["default", "on", "dry-run", "off"]


class PublishForecastsConfig(dg.Config):
    mode: PublishMode = Field(
        default="default",
        description="default: CHAP_SCHEDULER_PUBLISH of the code location; on: dry run then import; "
        "dry-run: report what would be written, write nothing; off: skip publishing.",
    )


class RepublishConfig(PublishForecastsConfig):
    prediction_id: int = Field(description="chap's id of the prediction to publish (see the run report).")


def _publish(context: dg.OpExecutionContext, run: PredictionRun, conn: Dhis2Connection, op_mode: str) -> None:
    settings = get_settings()
    setup = run.require_setup()
    prediction_id = run.report.prediction_id
    mode, how = resolve_mode(op_mode, settings.publish)
    horizon = run.report.n_periods or prediction_horizon(setup, settings)[0]
    reader, chap = conn.reader, conn.chap
    with conn.writer(max(settings.http_timeout_seconds, 120.0)) as writer:
        result = publish_prediction(
            run.report,
            setup,
            prediction_id,
            rows=prediction_rows(chap, prediction_id) if prediction_id is not None else (lambda q: []),
            reader=reader,
            writer=writer,
            mode=mode,
            mode_how=how,
            horizon=horizon,
            chunk_values=settings.publish_chunk_values,
            spool_dir=settings.spool_dir,
            delete_stale=settings.publish_delete_stale,
            refresh_analytics=settings.refresh_analytics,
            thresholds=lambda periods: chap_thresholds(chap, prediction_id or 0, periods),
            outbreak_quantile=settings.outbreak_quantile,
            log=context.log.info,
        )
    if result.outcome == "published":
        context.log_event(forecast_values_materialization(run.report))


@dg.op(description="Write the forecast into DHIS2's quantile-target data elements (dry run first), and the run report.")
def publish_forecasts(
    context: dg.OpExecutionContext, config: PublishForecastsConfig, run: PredictionRun, dhis2: Dhis2Resource
) -> None:
    continue_run(context, run, "publish_forecasts")  # a re-execution from here reports as the new run
    with report_step(context, run, "publish_forecasts"), dhis2.connect(get_settings()) as conn:
        context.log_event(chap_forecast_materialization(run))
        _publish(context, run, conn, config.mode)
    run.report.succeed()
    materialize_report(context, run.report)


@dg.op(description="Publish an existing chap prediction into DHIS2 again, without predicting again.")
def republish_forecast(context: dg.OpExecutionContext, config: RepublishConfig, dhis2: Dhis2Resource) -> None:
    settings = get_settings()
    key = context.partition_key if context.has_partition_key else "?"
    report = RunReport(
        setup_id=key, dhis2_url=redact_url(dhis2.base_url), location=settings.location_name, run_id=context.run_id
    )
    report.prediction_id = config.prediction_id
    run = PredictionRun(report=report)
    with report_step(context, run, "republish_forecast"), dhis2.connect(settings) as conn:
        steps.connect(run, conn.reader, conn.chap, key, log=context.log.info)
        load_prediction(run, conn.chap, settings, config.prediction_id)
        _publish(context, run, conn, config.mode)
    run.report.succeed()
    materialize_report(context, run.report)


@dg.job(
    partitions_def=configured_models_partitions,
    executor_def=dg.in_process_executor,
    description="Publish an existing chap prediction (op config prediction_id) of one configured model into DHIS2, "
    "without a new prediction. Use it after a failed publish_forecasts.",
)
def publish_chap_forecast() -> None:
    republish_forecast()
