"""Publishing a chap prediction into DHIS2: targets, preflight, dry run, import, stale cells.

The order is fixed and safe: nothing is written before the targets parse, the preflight
finds no error and a dry run of every chunk comes back without conflicts. Then the real
import (``CREATE_AND_UPDATE``, an upsert) sends the same chunks. Every outcome lands in the
run report's "DHIS2 import" section; a failure names the prediction id and how to publish
it again without predicting again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from .chap_models import PredictionSetup
from .dhis2_import import Dhis2Writer, ImportCounts, group_conflicts
from .errors import SchedulerError
from .forecast_values import Rows, SpooledValues, delete_body, spool_forecast_values
from .outbreak import Thresholds, outbreak_flag
from .periods import calendar_order, dhis2_id
from .publish_report import PublishReport
from .publish_targets import PublishTarget, parse_targets
from .report import RunReport
from .target_preflight import NO_TARGETS, check_publish_targets, data_element_names

Mode = Literal["on", "dry-run", "off"]
OpMode = Literal["default", "on", "dry-run", "off"]
Log = Callable[[str], None]
REPUBLISH_JOB = "publish_chap_forecast"
STALE_BATCH = 100


class PublishFailed(SchedulerError):
    """Publishing failed; the prediction exists in chap and can be published again."""


def resolve_mode(op_mode: str, setting: str) -> tuple[Mode, str]:
    """The op config wins over the code location's setting unless it says ``default``."""
    if op_mode in ("on", "dry-run", "off"):
        return op_mode, f"op config mode: {op_mode}"  # type: ignore[return-value]
    return setting, f"CHAP_SCHEDULER_PUBLISH={setting}"  # type: ignore[return-value]


def republish_hint(setup_id: str, prediction_id: int | None) -> str:
    if prediction_id is None:
        return ""
    return (
        f"Then publish prediction {prediction_id} again without predicting: launch job {REPUBLISH_JOB} for "
        f"partition {setup_id} with ops.republish_forecast.config.prediction_id: {prediction_id}."
    )


def _quiet(_: str) -> None:
    pass


def publish_prediction(
    report: RunReport,
    setup: PredictionSetup,
    prediction_id: int | None,
    *,
    rows: Rows,
    reader: Any,
    writer: Dhis2Writer,
    mode: Mode,
    mode_how: str = "",
    horizon: int,
    chunk_values: int,
    spool_dir: str | None = None,
    delete_stale: bool = False,
    refresh_analytics: bool = False,
    thresholds: Callable[[list[str]], Thresholds] | None = None,
    outbreak_quantile: float = 0.75,
    log: Log = _quiet,
) -> PublishReport:
    """Publish one prediction per ``mode``; fills ``report.publish`` and returns it.

    Raises :class:`PublishFailed` (with the cause's hint and how to republish) when anything
    prevents a complete, conflict-free write.
    """
    p = PublishReport(mode=mode, mode_how=mode_how, prediction_id=prediction_id)
    report.publish = p
    if mode == "off":
        p.outcome, p.note = "off", "publishing is switched off: nothing written"
        return p
    if not setup.quantile_targets:
        p.outcome, p.note = "nothing published", NO_TARGETS
        log(NO_TARGETS)
        return p
    try:
        _publish(p, report, setup, prediction_id, rows, reader, writer, mode, horizon, chunk_values, spool_dir,
                 delete_stale, refresh_analytics, thresholds, outbreak_quantile, log)
    except SchedulerError as exc:
        p.outcome = "failed"
        hint = " ".join(h for h in (exc.hint, republish_hint(report.setup_id, prediction_id)) if h)
        raise PublishFailed(str(exc), hint=hint) from exc
    except Exception:
        p.outcome = "failed"
        raise
    return p


def _publish(p: PublishReport, report: RunReport, setup: PredictionSetup, prediction_id: int | None, rows: Rows,
             reader: Any, writer: Dhis2Writer, mode: Mode, horizon: int, chunk_values: int, spool_dir: str | None,
             delete_stale: bool, refresh_analytics: bool, thresholds: Callable[[list[str]], Thresholds] | None,
             outbreak_quantile: float, log: Log) -> None:
    targets = parse_targets(setup.quantile_targets)
    p.targets = [_describe(t) for t in targets]
    if prediction_id is None:
        raise SchedulerError("no prediction id from an earlier step: nothing to publish")
    findings = check_publish_targets(
        reader, targets, period_type=setup.period_type, horizon=horizon, org_units=setup.org_units
    )
    p.findings = findings
    names = data_element_names(findings)
    p.targets = [_describe(t, names.get(t.describe())) for t in targets]
    errors = [f for f in findings if f.level == "error"]
    if errors:
        first = errors[0]
        raise SchedulerError(
            f"preflight of the quantile targets found {len(errors)} error(s), nothing was written: {first.message}",
            hint=first.fix,
        )
    indicator, indicator_q = None, None
    if any(t.kind == "outbreak_indicator" for t in targets):
        if thresholds is None:
            p.warnings.append("outbreak_indicator not published: no source of thresholds")
        else:
            indicator, indicator_q = _thresholds(p, thresholds, report, outbreak_quantile, log)
    started = time.perf_counter()
    spool = spool_forecast_values(
        rows, targets, chunk_values=chunk_values, spool_dir=spool_dir, indicator=indicator,
        indicator_quantile=indicator_q,
    )
    try:
        _describe_spool(p, spool)
        log(f"prediction {prediction_id}: {spool.values:,} data values for {len(spool.org_units):,} org units in "
            f"{len(spool.chunks)} chunk(s), read in {time.perf_counter() - started:.2f} s")
        if spool.values == 0:
            raise SchedulerError(
                f"prediction {prediction_id} has no values for the target quantiles"
                + (f" ({spool.missing:,} empty values)" if spool.missing else ""),
                hint="Check the prediction in chap (Modeling app); nothing was written to DHIS2.",
            )
        _dry_run(p, spool, writer, log)
        if mode == "dry-run":
            p.outcome, p.note = "dry run", "nothing written (dry-run mode)"
            _stale_or_warn(p, setup, spool, reader, writer, delete=False, log=log)
            return
        _import(p, spool, writer, log)
        p.outcome = "published"
        _stale_or_warn(p, setup, spool, reader, writer, delete=delete_stale, log=log)
    finally:
        spool.remove()
    if refresh_analytics:
        p.analytics = writer.start_analytics()
    else:
        p.analytics = "values reach dashboards after DHIS2's next scheduled analytics run"


def _describe(t: PublishTarget, name: str | None = None) -> str:
    what = f"quantile {t.quantile:g}" if t.quantile is not None else "1/0 outbreak indicator"
    label = t.label if t.label == f"{t.quantile}" else f"{t.label} ({what})"
    return f"{label} → {name + ' ' if name else ''}`{t.data_element_id}`"


def _describe_spool(p: PublishReport, spool: SpooledValues) -> None:
    p.values, p.zeros, p.org_units = spool.values, spool.zeros, len(spool.org_units)
    p.periods = sorted(spool.periods, key=calendar_order)
    p.by_element_period = dict(spool.by_element_period)
    p.chunks_total = len(spool.chunks)


def _dry_run(p: PublishReport, spool: SpooledValues, writer: Dhis2Writer, log: Log) -> None:
    counts, conflicts, status, rejected = ImportCounts(), [], "SUCCESS", 0
    for body, _ in spool.iter_chunks():
        summary = writer.post_data_values(body, dry_run=True)
        counts.add(summary.counts)
        conflicts += summary.conflicts
        rejected += summary.rejected
        if summary.status == "ERROR":
            status = "ERROR"
    p.dry_run = counts
    p.conflicts = group_conflicts(conflicts)
    log(f"dry run: {_short(counts)}; {len(conflicts)} conflicts")
    if conflicts or rejected or status == "ERROR":
        codes = ", ".join(f"{g.error_code} × {g.count}" for g in p.conflicts) or f"status {status}"
        first = p.conflicts[0] if p.conflicts else None
        raise SchedulerError(
            f"DHIS2's dry run refused {rejected or len(conflicts)} value(s) ({codes}); nothing was written",
            hint=(first.fix if first else "See the DHIS2 import section of the report."),
        )


def _import(p: PublishReport, spool: SpooledValues, writer: Dhis2Writer, log: Log) -> None:
    counts = ImportCounts()
    p.counts = counts
    for i, (body, _) in enumerate(spool.iter_chunks(), start=1):
        try:
            summary = writer.post_data_values(body, dry_run=False)
        except SchedulerError as exc:
            if p.chunks_written:  # never leave a half-written forecast unsaid
                exc.args = (f"{exc}; {_partly(p)}",)
            raise
        counts.add(summary.counts)
        p.chunks_written = i
        if not summary.clean:
            p.conflicts = group_conflicts(summary.conflicts)
            raise SchedulerError(
                f"DHIS2 refused values in request {i} of {p.chunks_total} of the real import "
                f"(status {summary.status}, {len(summary.conflicts)} conflicts); {_partly(p)}",
                hint=p.conflicts[0].fix if p.conflicts else "See the DHIS2 import section of the report.",
            )
        log(f"import {i}/{p.chunks_total}: {_short(summary.counts)}")


def _partly(p: PublishReport) -> str:
    return f"{p.chunks_written} of {p.chunks_total} requests were imported (values partly written)"


def _short(c: ImportCounts | None) -> str:
    if c is None:
        return "-"
    return f"imported {c.imported}, updated {c.updated}, ignored {c.ignored}, deleted {c.deleted}"


def _thresholds(p: PublishReport, thresholds: Callable[[list[str]], Thresholds], report: RunReport,
                quantile: float, log: Log):
    periods = report.predicted_periods
    try:
        table = thresholds(periods)
    except SchedulerError as exc:
        p.warnings.append(f"outbreak_indicator not published: chap gave no threshold ({exc}); the quantile targets are published anyway")
        log(p.warnings[-1])
        return None, None
    if not table:
        p.warnings.append("outbreak_indicator not published: chap could not compute a threshold for any org unit")
        return None, None
    return (lambda ou, pe, value: outbreak_flag(table, ou, pe, value)), quantile


def _stale_or_warn(p: PublishReport, setup: PredictionSetup, spool: SpooledValues, reader: Any, writer: Dhis2Writer,
                   *, delete: bool, log: Log) -> None:
    """Stale cells are housekeeping: the forecast is written either way, so a failure here only warns."""
    try:
        _stale(p, setup, spool, reader, writer, delete=delete, log=log)
    except SchedulerError as exc:
        p.warnings.append(f"stale cells not {'deleted' if delete else 'checked'}: {exc}" + (f" — {exc.hint}" if exc.hint else ""))
        log(p.warnings[-1])


def _stale(p: PublishReport, setup: PredictionSetup, spool: SpooledValues, reader: Any, writer: Dhis2Writer,
           *, delete: bool, log: Log) -> None:
    """Target cells in this forecast's periods that hold a value for an org unit the forecast does not cover."""
    candidates = [ou for ou in setup.org_units if ou not in spool.org_units]
    if not candidates:
        return
    elements = sorted({de for de, _ in spool.by_element_period})
    periods = sorted(spool.periods, key=calendar_order)
    cells: list[tuple[str, str, str]] = []
    for i in range(0, len(candidates), STALE_BATCH):
        params: list[tuple[str, str]] = [("dataElement", de) for de in elements]
        params += [("period", pe) for pe in periods]
        params += [("orgUnit", ou) for ou in candidates[i : i + STALE_BATCH]]
        answer = reader.get("/api/dataValueSets", params=params)
        for v in (answer or {}).get("dataValues") or []:
            cells.append((str(v["dataElement"]), dhis2_id(str(v["period"])), str(v["orgUnit"])))
    p.stale_count = len(cells)
    p.stale_cells = [f"{de} {pe} {ou}" for de, pe, ou in cells[:50]]
    if not cells:
        return
    log(f"{len(cells)} stale cells for org units this forecast does not cover")
    if not delete:
        return
    body = delete_body(cells)
    dry = writer.post_data_values(body, dry_run=True, strategy="DELETE")
    if not dry.clean:
        p.warnings.append(
            f"stale cells not deleted: DHIS2's dry run of the DELETE refused them "
            f"({', '.join(f'{g.error_code} × {g.count}' for g in group_conflicts(dry.conflicts)) or dry.status})"
        )
        return
    p.stale_deleted = writer.post_data_values(body, dry_run=False, strategy="DELETE").counts
