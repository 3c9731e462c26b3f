"""The predictions overview asset and the run-status sensors that keep it (and the report promise) current.

After every run of ``dhis2_chap_prediction`` (succeeded, failed or canceled) a sensor
re-renders ``chap_predictions_overview`` from the latest run report of each configured model.

Backstop: a run can fail before any op had a chance to write its report, e.g. when an
environment variable of the ``dhis2`` resource is missing and the resource cannot be built.
The failure/cancel sensor then writes a minimal report for the run's partition (status
failed, the step Dagster marked failed, and the error from the run's failure events), so
every run has a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg

from ..core.errors import redact_url
from ..core.overview import TABLE_COLUMNS, OverviewRow, render_overview, status_totals, table_rows
from ..core.report import RunReport
from ..core.report_metadata import Key, count, text
from ..core.run_warnings import SUCCEEDED, SUCCEEDED_WITH_WARNINGS, is_success
from ..settings import get_settings
from .assets import report_asset_key
from .reporting import report_materialization
from .jobs import dhis2_chap_prediction
from .next_due import scheduled_next_runs
from .partitions import configured_models_partitions
from .resources import Dhis2Resource
from .run_backstop import cause_of
from .tags import CHAP_JOB_TAG, PARTITION_TAG

OVERVIEW_NAME = "chap_predictions_overview"
# Same location prefix as the report asset, so two DHIS2s never share an overview.
overview_asset_key = dg.AssetKey([*report_asset_key.path[:-1], OVERVIEW_NAME])

chap_predictions_overview = dg.AssetSpec(
    overview_asset_key,
    group_name="chap_predictions",
    description="One row per configured model: latest status, when, failed step, prediction id and a link "
    "to the run. Refreshed by a sensor after every prediction run, failed ones included.",
    metadata={"overview_metadata_key": "overview"},
)


# ---- reading the reports -------------------------------------------------------------------


def latest_report_rows(instance: dg.DagsterInstance, known: Iterable[str] | None = None) -> list[OverviewRow]:
    """The latest report of every configured model, deleted ones (with history) included.

    ``known`` overrides the partition keys (a sensor that is about to change them passes the new set).
    """
    if known is None:
        known = instance.get_dynamic_partitions(configured_models_partitions.name)
    known = set(known)
    # Only chap ids: a report written under another key (a partition-less run of an older version
    # wrote "?") is not a configured model and must not show as one "deleted in chap".
    materialized = {k for k in instance.get_materialized_partitions(report_asset_key) if k.isdigit()}
    rows = []
    for key in known | materialized:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=report_asset_key, asset_partitions=[key]), limit=5
        ).records
        if records and not _last_success(records) and len(records) == 5:
            # A streak of failures: look further back for the last success (reports are a few kB each).
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=report_asset_key, asset_partitions=[key]), limit=LAST_SUCCESS_LOOKBACK
            ).records
        if not records:
            rows.append(OverviewRow(setup_id=key))
            continue
        record = records[0]
        meta = dict(record.asset_materialization.metadata) if record.asset_materialization else {}
        # A run that failed before it met chap does not know the name; an earlier report may.
        names = (text(dict(r.asset_materialization.metadata), Key.CONFIGURED_MODEL) for r in records
                 if r.asset_materialization)
        rows.append(
            OverviewRow(
                setup_id=key,
                name=next((n for n in names if n), ""),
                status=text(meta, Key.STATUS),
                when=datetime.fromtimestamp(record.timestamp, UTC),
                failed_step=text(meta, Key.FAILED_STEP),
                error=text(meta, Key.ERROR),
                prediction_id=text(meta, Key.PREDICTION_ID),
                run_id=record.run_id or text(meta, Key.RUN_ID),
                deleted=key not in known,
                alerts=count(meta, Key.CHAP_ALERTS),
                alerts_pending=count(meta, Key.CHAP_ALERTS_PENDING),
                warnings=text(meta, Key.WARNINGS_SUMMARY) or text(meta, Key.WARNINGS_TEXT).replace("\n", "; "),
                **_last_success(records),
            )
        )
    return rows


# How many reports back the overview looks for a model's last success.
LAST_SUCCESS_LOOKBACK = 50


def _last_success(records) -> dict:
    for record in records:
        meta = dict(record.asset_materialization.metadata) if record.asset_materialization else {}
        if is_success(text(meta, Key.STATUS)):
            return {
                "last_success_when": datetime.fromtimestamp(record.timestamp, UTC),
                "last_success_prediction_id": text(meta, Key.PREDICTION_ID),
                "last_success_run_id": record.run_id or text(meta, Key.RUN_ID),
            }
    return {}


def overview_materialization(
    instance: dg.DagsterInstance,
    known: Iterable[str] | None = None,
    names: Mapping[str, str] | None = None,
    code_location: str | None = None,
    dhis2_url: str = "",
) -> dg.AssetMaterialization:
    """``names`` (chap id -> configured-model name) labels models that have no report yet.

    ``code_location`` (Dagster's name for this code location) picks this DHIS2's schedules for the
    next-run column when one Dagster serves several; ``dhis2_url`` (the ``dhis2`` resource's, redacted)
    heads the overview.
    """
    settings = get_settings()
    rows = latest_report_rows(instance, known)
    names = names or previous_names(instance)  # a run-status refresh keeps the names discovery gave
    if names:
        rows = [replace(r, name=names[r.setup_id]) if not r.name and r.setup_id in names else r for r in rows]
    upcoming = scheduled_next_runs(instance, [r.setup_id for r in rows if not r.deleted], location=code_location)
    rows = [replace(r, next_run=upcoming[r.setup_id].at, next_by=upcoming[r.setup_id].by) if r.setup_id in upcoming
            else r for r in rows]
    text = render_overview(rows, location=settings.location_name, dhis2_url=dhis2_url)
    live = [r for r in rows if not r.deleted]
    totals = status_totals(live)  # the same counts as the overview's "Updated …" line
    return dg.AssetMaterialization(
        asset_key=overview_asset_key,
        description=f"{len(live)} configured models",
        metadata={
            "overview": dg.MetadataValue.md(text),
            "models": overview_table(rows),
            "configured_models": len(live),
            "failed": totals.get("failed", 0),
            "succeeded": totals.get(SUCCEEDED, 0),  # without warnings: those are counted apart
            "succeeded_with_warnings": totals.get(SUCCEEDED_WITH_WARNINGS, 0),
            "chap_alerts_pending": sum(r.alerts_pending for r in live),
            "canceled": totals.get("canceled", 0),
        },
    )


def previous_names(instance: dg.DagsterInstance) -> dict[str, str]:
    """chap id -> configured-model name from the latest overview's table (so never-run models keep their names)."""
    try:
        event = instance.get_latest_materialization_event(overview_asset_key)
        table = event.asset_materialization.metadata.get("models") if event and event.asset_materialization else None
        records = getattr(table, "records", None) or []
        return {str(r.data.get("model")): str(r.data.get("name")) for r in records if r.data.get("name")}
    except Exception:  # noqa: BLE001 - names are a courtesy; the overview must still be written
        return {}


def overview_table(rows: Iterable[OverviewRow]) -> dg.TableMetadataValue:
    """The overview as a Dagster table: full width in the UI, one column per fact, sortable."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, type=kind, description=about) for name, kind, about in TABLE_COLUMNS]
    )
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in table_rows(rows)], schema=schema)


# ---- the backstop --------------------------------------------------------------------------


def _run_has_report(instance: dg.DagsterInstance, run_id: str, key: str) -> bool:
    """Whether the partition has a report of this run: written by its ops, or already by this backstop."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=report_asset_key, asset_partitions=[key]), limit=20
    ).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if record.run_id == run_id or text(dict(metadata), Key.RUN_ID) == run_id:
            return True
    return False


def backstop_report(instance: dg.DagsterInstance, run: dg.DagsterRun, dhis2: Dhis2Resource) -> RunReport | None:
    """A minimal failed report for a run that ended without writing one, else None."""
    key = run.tags.get(PARTITION_TAG)
    if not key or _run_has_report(instance, run.run_id, key):
        return None
    cause = cause_of(instance, run, key, dhis2)  # from the run's own events and tags (core/run_cause.py)
    stats = instance.get_run_stats(run.run_id)
    return RunReport.backstop(
        key, redact_url(dhis2.base_url), location=get_settings().location_name,
        run_id=run.run_id, started_at=datetime.fromtimestamp(stats.start_time, UTC) if stats.start_time else None,
        step=cause.step, error=cause.text or "the run failed before its steps could write a report", hint=cause.hint,
        job_id=run.tags.get(CHAP_JOB_TAG) or None,
        canceled=run.status == dg.DagsterRunStatus.CANCELED,
    )


# ---- the sensors ---------------------------------------------------------------------------


def refresh_after_run(context: dg.RunStatusSensorContext, dhis2: Dhis2Resource, *, backstop: bool) -> str:
    instance = context.instance
    run = context.dagster_run
    note = ""
    if backstop:
        report = backstop_report(instance, run, dhis2)
        if report is not None:
            instance.report_runless_asset_event(report_materialization(report))
            note = f"; wrote the missing report for configured model {report.setup_id} (failed at {report.failed_step})"
            context.log.warning(f"run {run.run_id} ended without a report{note}")
    origin = run.remote_job_origin
    location = origin.repository_origin.code_location_origin.location_name if origin else None
    instance.report_runless_asset_event(
        overview_materialization(instance, code_location=location, dhis2_url=redact_url(dhis2.base_url))
    )
    return f"overview refreshed after run {run.run_id} ({run.status.value}){note}"


def _overview_sensor(status: dg.DagsterRunStatus, name: str, backstop: bool) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=name,
        run_status=status,
        monitored_jobs=[dhis2_chap_prediction],
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=get_settings().overview_interval_seconds,
        description=f"After each {status.value.lower()} prediction run, refresh {OVERVIEW_NAME}"
        + (" and write the run's report if the run could not." if backstop else "."),
    )
    def _sensor(context: dg.RunStatusSensorContext, dhis2: Dhis2Resource):
        return dg.SkipReason(refresh_after_run(context, dhis2, backstop=backstop))

    return _sensor


overview_on_success = _overview_sensor(dg.DagsterRunStatus.SUCCESS, "chap_predictions_overview_on_success", False)
overview_on_failure = _overview_sensor(dg.DagsterRunStatus.FAILURE, "chap_predictions_overview_on_failure", True)
overview_on_canceled = _overview_sensor(dg.DagsterRunStatus.CANCELED, "chap_predictions_overview_on_canceled", True)

overview_sensors = [overview_on_success, overview_on_failure, overview_on_canceled]
