"""``succeeded with warnings``: when it applies, that every view reads it as a success, and names."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from chap_scheduler_dagster.core.chap_models import PredictionSetup
from chap_scheduler_dagster.core.dhis2_fetch import FetchResult
from chap_scheduler_dagster.core.notifications import NotifyState, RunOutcome, Where, observe_run
from chap_scheduler_dagster.core.overview import OverviewRow, render_overview, table_rows
from chap_scheduler_dagster.core.publish_report import PublishReport
from chap_scheduler_dagster.core.report import PredictionOutcome, RunReport
from chap_scheduler_dagster.core.run_warnings import is_success, run_warnings

TODAY = date(2026, 11, 30)


def report(*, period_type: str | None = "month", predicted_periods=("202612", "202701", "202702"),
           org_units_without_geometry=(), org_units_dropped_by_chap=(), org_unit_names=None, row_estimate=None,
           **fields) -> RunReport:
    """A report of a monthly model of 12 org units that asked chap for 3 periods."""
    setup = PredictionSetup(id=1, name="Malaria monthly", periodType=period_type, orgUnits=[f"OU_{i}" for i in range(12)])
    r = RunReport(setup_id="1", dhis2_url="https://dhis2.example.org", setup=setup, n_periods=3)
    r.prediction = PredictionOutcome(values=36, periods=list(predicted_periods), median_by_period={},
                                     org_units_dropped_by_chap=list(org_units_dropped_by_chap))
    if org_units_without_geometry or org_unit_names or row_estimate is not None:
        r.fetch = FetchResult(body_path=Path("body.json"), body_bytes=0, row_estimate=row_estimate or 0,
                              analytics_rows=0, observations=0, features=0, dropped={},
                              org_units_without_geometry=list(org_units_without_geometry), analytics_requests=0,
                              org_unit_requests=0, longest_url=0, org_unit_names=org_unit_names or {})
    for key, value in fields.items():
        setattr(r, key, value)
    return r


def test_a_complete_forecast_of_future_periods_is_a_plain_success():
    r = report()
    r.succeed(today=TODAY)
    assert r.status == "succeeded" and r.warnings == []
    assert r.metadata()["warnings"] == 0 and "Warnings" not in r.markdown()


def test_each_reason_makes_it_succeeded_with_warnings():
    cases = {
        "org units have no geometry": dict(org_units_without_geometry=["OU_A"]),
        "chap dropped 2 of 12 org units": dict(org_units_dropped_by_chap=["OU_B", "OU_C"]),
        # November is not over on its last day; October is.
        "1 of 3 predicted periods are already over on 2026-11-30 (202610)": dict(
            predicted_periods=["202610", "202611", "202612"]),
        "chap returned 2 periods, fewer than the 3 asked": dict(predicted_periods=["202612", "202701"]),
    }
    for expected, fields in cases.items():
        r = report(**fields)
        r.succeed(today=TODAY)
        assert r.status == "succeeded with warnings", fields
        assert len(r.warnings) == 1 and expected in r.warnings[0], r.warnings
        assert r.metadata()["status"] == "succeeded with warnings" and r.metadata()["warnings"] == 1
        assert "- **Status:** SUCCEEDED WITH WARNINGS\n- **Warnings (1):**\n  - " + r.warnings[0] in r.markdown()


def test_publishing_warnings_count():
    r = report(publish=PublishReport(mode="on", outcome="published", warnings=["2 values rounded"]))
    r.succeed(today=TODAY)
    assert r.status == "succeeded with warnings" and r.warnings == ["publishing: 2 values rounded"]


def test_org_units_are_named_with_their_ids():
    r = report(org_units_without_geometry=["OU_A"], org_units_dropped_by_chap=["OU_B", "OU_C"],
               org_unit_names={"OU_A": "Bo", "OU_B": "Kenema"}, row_estimate=100)
    r.succeed(today=TODAY)
    text = r.markdown()
    assert "Bo (OU_A)" in r.warnings[0] and "Kenema (OU_B), OU_C" in r.warnings[1]
    assert "- **Org units without geometry:** Bo (OU_A)" in text
    assert "- **Org units chap silently dropped:** 2 — Kenema (OU_B), OU_C" in text


def test_the_status_agrees_in_overview_table_last_success_and_notifications():
    r = report(org_units_without_geometry=["OU_A"], prediction_id=42)
    r.succeed(today=TODAY)
    meta = r.metadata()
    at = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    row = OverviewRow("1", "Malaria monthly", str(meta["status"]), at, prediction_id="42", run_id="run-1",
                      warnings=str(meta["warnings_summary"]))
    [record] = table_rows([row])
    assert record["status"] == "succeeded with warnings"
    assert record["last_success_utc"] == "2026-11-30 06:00" and record["last_prediction_id"] == "42"
    assert record["warnings"] == "1 org unit without geometry" and "no geometry" in meta["warnings_text"]
    text = render_overview([row], generated_at=at)
    assert "| 1 — Malaria monthly | succeeded with warnings |" in text and "1 succeeded with warnings" in text
    assert "## Warnings (latest run)" in text and "1 org unit without geometry" in text
    # Notifications: a success (no failure message; a recovery after a failure).
    assert is_success(meta["status"]) and not is_success("failed")
    state, where = NotifyState(), Where(dhis2_url="https://dhis2.example.org")
    observe_run(state, RunOutcome(model_id="1", run_id="r0", succeeded=False, finished_at=at, error="boom"), where)
    sent = observe_run(state, RunOutcome(model_id="1", run_id="r1", succeeded=is_success(meta["status"]),
                                        finished_at=at, prediction_id=42), where)
    assert [n.kind for n in sent] == ["recovered"]


def test_a_missing_period_type_never_breaks_success():
    r = report(period_type=None)
    assert run_warnings(r, TODAY) == []


def test_a_refresh_after_a_run_keeps_the_names_discovery_gave():
    import dagster as dg

    from chap_scheduler_dagster.defs.overview import overview_materialization

    with dg.DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(overview_materialization(instance, ["1", "2"], names={"1": "A", "2": "B"}))
        again = overview_materialization(instance, ["1", "2"])  # as the run-status sensors call it
        names = {r.data["model"]: r.data["name"] for r in again.metadata["models"].records}
        assert names == {"1": "A", "2": "B"}
        assert "| 2 — B | never run |" in again.metadata["overview"].value


def test_the_overview_counts_succeeded_with_warnings_apart_from_succeeded():
    import dagster as dg

    from chap_scheduler_dagster.defs.overview import overview_materialization
    from chap_scheduler_dagster.defs.reporting import report_materialization

    plain, broken = report(setup_id="1"), report(setup_id="3")
    warned = report(setup_id="2", org_units_without_geometry=["OU_A"])
    plain.succeed(today=TODAY)
    warned.succeed(today=TODAY)
    broken.fail("probe_covariates", RuntimeError("boom"))
    with dg.DagsterInstance.ephemeral() as instance:
        for r in (plain, warned, broken):
            instance.report_runless_asset_event(report_materialization(r))
        overview = overview_materialization(instance, ["1", "2", "3", "4"])
    meta = overview.metadata
    counts = [meta[k].value for k in ("configured_models", "succeeded", "succeeded_with_warnings", "failed")]
    assert counts == [4, 1, 1, 1]
    text = meta["overview"].value
    assert "4 configured models: 1 failed, 1 never run, 1 succeeded, 1 succeeded with warnings." in text
    statuses = {r.data["model"]: r.data["status"] for r in meta["models"].records}
    assert statuses == {"1": "succeeded", "2": "succeeded with warnings", "3": "failed", "4": "never run"}
