"""The four steps of one prediction run, as plain functions over a :class:`PredictionRun`.

The Dagster ops and the command line both call these; neither adds logic of its own.
Each step fills the run report as it learns things, so a failure at any point still
leaves a report that says how far the run got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..settings import SchedulerSettings
from .chap_client import ChapClient
from .chap_models import ChapApi, PredictionSetup
from .dhis2_fetch import fetch_prediction_body
from .dhis2_reader import Dhis2Reader
from .errors import ChapError, ChapPredictionNotCreated, ChapRejected, ChapSubmitUncertain, Dhis2Error, SchedulerError
from .fingerprint import prediction_fingerprint
from .prediction_body import iter_body, remove_body
from .reconcile import prediction_name, reconcile_submission
from .run_cause import JOB_TAG, POST_TAG
from .report import ChapSystem, PredictionOutcome, RunReport, Unreachable
from .run_warnings import named
from .wait_progress import WaitProgress
from .run_window import InputWindow, WindowRequest, probe_latest_common_period, resolve_window, setup_period_type

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class PredictionRun:
    """One run handed from step to step: its report (which holds what the run learned) and the
    working state no report shows (chap's API flavour, the spooled request body)."""

    report: RunReport
    api: ChapApi | None = None
    body_path: Path | None = None

    @property
    def setup(self) -> PredictionSetup | None:
        return self.report.setup

    @property
    def window(self) -> InputWindow | None:
        return self.report.window

    @property
    def job_id(self) -> str | None:
        return self.report.job_id

    @property
    def fingerprint(self) -> str | None:
        return self.report.fingerprint

    def require_setup(self) -> PredictionSetup:
        if self.setup is None:
            raise SchedulerError("no configured model was loaded by an earlier step")
        return self.setup


def parse_setup_id(partition_key: str) -> int:
    try:
        return int(partition_key)
    except ValueError:
        raise SchedulerError(
            f"partition {partition_key!r} is not a chap configured-model id",
            hint="Partition keys are chap ids such as '3'; pick one the discovery sensor added.",
        ) from None


def connect(run: PredictionRun, reader: Dhis2Reader, chap: ChapClient, partition_key: str, log: Log = _quiet) -> None:
    """Check DHIS2 and chap through the route, then load the configured model ``partition_key``."""
    report = run.report
    try:
        info = reader.system_info()
    except Dhis2Error as exc:
        report.dhis2_system = Unreachable(str(exc))
        raise
    report.dhis2_system = info
    log(f"DHIS2 {info.version} at {report.dhis2_url} (server time {info.server_date})")
    try:
        chap_info = chap.system_info()
    except ChapError as exc:
        report.chap_system = Unreachable(str(exc))
        raise
    try:
        setup = chap.get_prediction_setup(parse_setup_id(partition_key))
    finally:  # with the API generation its listing answered on (None when it found none)
        report.chap_system = system = ChapSystem(chap_info, chap.api)
    report.setup, run.api = setup, chap.api
    log(
        f"chap-core {chap_info.chap_core_version} ({system.api_name}); configured model {setup.id} "
        f"{setup.name!r}: {setup.period_type}, {len(setup.org_units)} org units, "
        f"{len(setup.covariate_sources)} covariates"
    )


def choose_window(
    run: PredictionRun,
    request: WindowRequest,
    reader: Dhis2Reader,
    settings: SchedulerSettings,
    *,
    today: date,
    log: Log = _quiet,
) -> InputWindow:
    setup = run.require_setup()
    run.report.end_mode = request.end_mode

    def probe(period_type):  # noqa: ANN001, ANN202
        return probe_latest_common_period(
            reader, setup, period_type, max_url_bytes=settings.max_url_bytes, concurrency=settings.fetch_concurrency
        )

    window, probed = resolve_window(request, setup, today=today, period_cap=settings.period_cap, probe=probe)
    if probed is not None:
        run.report.latest_by_covariate = probed.latest_by_covariate
    run.report.window = window
    log(f"input window {window.start.id}..{window.end.id} ({len(window.periods)} periods; {window.end_how})")
    return window


def prediction_horizon(setup: PredictionSetup, settings: SchedulerSettings) -> tuple[int, str]:
    """nPeriods from the setting for the period type, kept within the template's bounds."""
    period_type = setup_period_type(setup)
    wanted = settings.horizon(period_type.value)
    how = f"CHAP_SCHEDULER_HORIZON_{period_type.value.upper()}={wanted}"
    template = setup.template
    low = template.min_prediction_periods if template else None
    high = template.max_prediction_periods if template else None
    n = wanted
    if low is not None and n < low:
        n = low
    if high is not None and n > high:
        n = high
    if n != wanted:
        how += f", moved into the model template's range {low}..{high}"
    return n, how


def fetch_data(
    run: PredictionRun,
    reader: Dhis2Reader,
    settings: SchedulerSettings,
    *,
    log: Log = _quiet,
) -> None:
    setup, window = run.require_setup(), run.window
    if window is None:
        raise SchedulerError("no input window was chosen by an earlier step")
    n_periods, how = prediction_horizon(setup, settings)
    run.report.n_periods, run.report.n_periods_how = n_periods, how
    # The run id in the name lets a lost POST answer be reconciled by name (core/reconcile.py).
    name = prediction_name(f"{setup.name} ({setup.model_name}) {window.start.id}-{window.end.id}", run.report.run_id)
    started = time.perf_counter()
    result = fetch_prediction_body(
        reader,
        setup,
        window,
        name=name,
        n_periods=n_periods,
        api=run.api or ChapApi.PREDICTION_SETUPS,
        max_url_bytes=settings.max_url_bytes,
        concurrency=settings.fetch_concurrency,
        row_budget=settings.row_budget,
        max_rows_per_request=settings.max_rows_per_request,
        spool_dir=settings.spool_dir,
    )
    r = run.report
    r.fetch, run.body_path = result, result.body_path
    r.fingerprint = prediction_fingerprint(
        setup, window, n_periods=n_periods, api=run.api, body_sha256=result.body_sha256
    )
    log(
        f"fetched {result.analytics_rows:,} analytics rows in {result.analytics_requests} requests "
        f"(longest URL {result.longest_url} bytes) in {time.perf_counter() - started:.2f} s; "
        f"{result.observations:,} observations, {result.features} org-unit features, "
        f"{result.body_bytes / 1e6:.1f} MB body; dropped {result.dropped or 'nothing'}"
    )
    if result.org_units_without_geometry:
        log(f"org units without geometry (not sent to chap): {named(result.org_units_without_geometry, r.org_unit_names)}")
    if result.observations == 0:
        remove_body(result.body_path)
        run.body_path = None
        raise SchedulerError(
            f"DHIS2 returned no usable values for {window.start.id}..{window.end.id}",
            hint="Check that the configured model's org units have geometry in DHIS2 (those without are not sent: "
            "add their boundaries), that analytics tables have run, and that the data elements have data for "
            "these org units; or choose another end.",
        )


# Run tags that say how far the submission got (POST_TAG, JOB_TAG): the report of a run whose
# worker died reads them (core/run_cause.py).


def _no_record(_: dict[str, str]) -> None:
    pass


def submit(
    run: PredictionRun,
    chap: ChapClient,
    log: Log = _quiet,
    *,
    settings: SchedulerSettings | None = None,
    record: Callable[[dict[str, str]], None] = _no_record,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """POST the spooled body once. The body file is removed whatever happens.

    If the POST's answer is lost, the prediction is looked up by this run's name instead of
    guessing. ``record`` keeps how far it got (POST sent, job id) where a backstop can read it.
    """
    setup = run.require_setup()
    if run.body_path is None:
        raise SchedulerError("no request body was prepared by an earlier step")
    record({POST_TAG: "sending"})
    try:
        try:
            body_bytes = run.report.fetch.body_bytes if run.report.fetch else None
            job_id = chap.submit_prediction(setup.id, iter_body(run.body_path), body_bytes, api=run.api)
        except ChapSubmitUncertain as lost:
            record({POST_TAG: "answer lost"})
            window = (settings.reconcile_seconds if settings else 120.0)
            log(f"{lost}; looking for this run's prediction by name in chap for up to {window:g} s")
            found = reconcile_submission(
                chap, setup.id, run.report.run_id, lost,
                window_seconds=window,
                poll_seconds=min(settings.poll_interval_seconds if settings else 5.0, 5.0),
                api=run.api, clock=clock, sleep=sleep, log=log,
            )
            job_id = found.job.id
            run.report.notes.append(found.note)
            log(found.note)
    except ChapPredictionNotCreated:
        record({POST_TAG: "not created"})
        raise
    except ChapSubmitUncertain:
        record({POST_TAG: "uncertain"})
        raise
    except SchedulerError as exc:
        record({POST_TAG: "refused"})
        if isinstance(exc, ChapRejected) and run.window is not None:
            _explain_rejection(run, exc)
        raise
    finally:
        remove_body(run.body_path)
        run.body_path = None
    run.report.job_id = job_id
    record({POST_TAG: "answered", JOB_TAG: job_id})
    log(f"chap accepted the prediction request: job {job_id}")
    return job_id


def _explain_rejection(run: PredictionRun, exc: ChapRejected) -> None:
    """Replace the generic hint of chap's 400 by a window that avoids the gaps (core/rejection_fix.py)."""
    from datetime import UTC, datetime

    from .rejection_fix import window_fix

    window = run.window
    assert window is not None
    try:
        fix = window_fix(exc.rejection, window.start, window.end, today=datetime.now(UTC).date(),
                         names=run.report.org_unit_names, model_id=run.report.setup_id)
    except Exception:  # noqa: BLE001 - the generic hint stays rather than hiding chap's answer
        return
    exc.hint = fix.text


def await_prediction(
    run: PredictionRun,
    chap: ChapClient,
    settings: SchedulerSettings,
    *,
    log: Log = _quiet,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    setup = run.require_setup()
    if run.job_id is None:
        raise SchedulerError("no job id from an earlier step")
    progress = WaitProgress(run.job_id, settings.prediction_timeout_seconds, log, clock=clock)
    status = chap.wait_for_job(
        run.job_id,
        timeout_seconds=settings.prediction_timeout_seconds,
        poll_interval_seconds=settings.poll_interval_seconds,
        on_status=progress.on_status,
        clock=clock,
        on_poll=progress.on_poll,
    )
    if status != "SUCCESS":
        failure = chap.job_failure_text(run.job_id, status)
        from .job_failures import job_failure_hint  # chap's known job failures -> a computed fix

        window = run.window
        hint = job_failure_hint(str(failure), start=window.start if window else None,
                                end=window.end if window else None, end_mode=run.report.end_mode)
        if hint:
            failure.hint = hint
        raise failure
    info = chap.prediction_result(run.job_id)
    run.report.prediction_id = info.id
    prediction = PredictionOutcome.from_summary(chap.summarize_prediction(info.id, report_quantiles(setup, settings)))
    sent = set(setup.org_units) - set(run.report.org_units_without_geometry)
    if info.org_units is not None:
        prediction.org_units_dropped_by_chap = sorted(sent - set(info.org_units))
    run.report.prediction = prediction
    dropped = prediction.org_units_dropped_by_chap
    log(
        f"prediction {info.id}: {prediction.values:,} values for {len(prediction.periods)} periods"
        + (f"; chap dropped {len(dropped)} org units: {named(dropped, run.report.org_unit_names)}" if dropped else "")
    )


def report_quantiles(setup: PredictionSetup, settings: SchedulerSettings) -> list[float]:
    """CHAP_SCHEDULER_QUANTILES and the quantiles the setup's targets name (unusable targets are
    reported by publish_forecasts, not here)."""
    from .publish_targets import TargetError, parse_targets, target_quantiles

    try:
        named = target_quantiles(parse_targets(setup.quantile_targets))
    except TargetError:
        named = []
    return sorted({round(q, 6) for q in settings.quantile_list()} | set(named))
