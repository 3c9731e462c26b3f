"""Publishing, Dagster-free: targets in both vocabularies, the mapping, chunking, the dry run and conflicts."""

import httpx
import orjson
import pytest
import respx

from chap_scheduler_dagster.core.chap_models import PredictionSetup
from chap_scheduler_dagster.core.dhis2_import import (
    CONFLICT_FIXES,
    Conflict,
    Dhis2Writer,
    ImportSummary,
    group_conflicts,
)
from chap_scheduler_dagster.core.errors import Dhis2AuthFailed, Dhis2RequestFailed
from chap_scheduler_dagster.core.forecast_values import format_value, spool_forecast_values
from chap_scheduler_dagster.core.publish import PublishFailed, publish_prediction, resolve_mode
from chap_scheduler_dagster.core.target_preflight import NO_TARGETS
from chap_scheduler_dagster.core.publish_targets import TargetError, parse_targets, target_quantiles
from chap_scheduler_dagster.core.report import RunReport
from chap_scheduler_dagster.core.target_preflight import check_publish_targets

BASE = "http://dhis2.test"
DVS = f"{BASE}/api/dataValueSets"


# ---- targets ------------------------------------------------------------------------------------

def test_both_vocabularies_and_the_dict_form_mean_the_same_quantiles():
    numeric = parse_targets([{"quantile": "0.1", "dataElementId": "A"}, {"quantile": "0.5", "dataElementId": "B"},
                             {"quantile": "0.9", "dataElementId": "C"}])
    labels = parse_targets([{"quantile": "quantile_low", "dataElementId": "A"},
                            {"quantile": "median", "dataElementId": "B"},
                            {"quantile": "quantile_high", "dataElementId": "C"}])
    as_dict = parse_targets({"quantile_low": "A", "median": "B", "quantile_high": "C"})
    for targets in (numeric, labels, as_dict):
        assert [(t.data_element_id, t.quantile) for t in targets] == [("A", 0.1), ("B", 0.5), ("C", 0.9)]
    mid = parse_targets({"quantile_mid_low": "D", "quantile_mid_high": "E", "outbreak_indicator": "F"})
    assert [t.quantile for t in mid] == [0.25, 0.75, None] and mid[2].kind == "outbreak_indicator"
    assert target_quantiles(mid) == [0.25, 0.75]


def test_prediction_setup_reads_the_dict_form_too():
    setup = PredictionSetup.model_validate({"id": 1, "name": "x", "quantileTargets": {"median": "B"}})
    assert [(t.quantile, t.data_element_id) for t in setup.quantile_targets] == [("median", "B")]
    assert parse_targets(setup.quantile_targets)[0].quantile == 0.5


@pytest.mark.parametrize("label, words", [("p95", "'p95' is neither a quantile nor a known label"),
                                           ("1.5", "outside 0..1")])
def test_an_unknown_label_is_an_error_naming_the_target(label, words):
    with pytest.raises(TargetError) as err:
        parse_targets([{"quantile": "0.5", "dataElementId": "B"}, {"quantile": label, "dataElementId": "deBad"}])
    assert words in str(err.value) and "deBad" in str(err.value)
    assert "median" in err.value.hint


def test_two_targets_on_one_data_element_are_refused():
    with pytest.raises(TargetError, match="both write data element B"):
        parse_targets({"median": "B", "0.9": "B"})


# ---- mapping and chunking -----------------------------------------------------------------------

def rows_for(org_units, periods, quantiles):
    def rows(q):
        return [{"orgUnit": ou, "period": pe, "quantile": q, "value": round(i * 1.5 + q, 4)}
                for i, ou in enumerate(org_units) for pe in periods]
    rows.asked = []
    return rows


def test_values_map_to_one_data_element_per_quantile_with_dhis2_week_ids(tmp_path):
    asked = []

    def rows(q):
        asked.append(q)
        return [{"orgUnit": "OU1", "period": "2027W01", "quantile": q, "value": 12.0},
                {"orgUnit": "OU2", "period": "2027W01", "quantile": q, "value": 0.1 + 0.2},
                {"orgUnit": "OU3", "period": "2027W01", "quantile": q, "value": None}]

    targets = parse_targets({"median": "deMed", "quantile_high": "deHigh"})
    spool = spool_forecast_values(rows, targets, chunk_values=100, spool_dir=str(tmp_path))
    try:
        (body, n), = list(spool.iter_chunks())
    finally:
        spool.remove()
    assert asked == [0.5, 0.9]  # exactly the target quantiles, one request each
    values = orjson.loads(body)["dataValues"]
    assert n == 4 and values[0] == {"dataElement": "deMed", "period": "2027W1", "orgUnit": "OU1", "value": "12"}
    assert values[1]["value"] == "0.30000000000000004" and float(values[1]["value"]) == 0.1 + 0.2
    assert {v["dataElement"] for v in values} == {"deMed", "deHigh"}
    assert all(set(v) == {"dataElement", "period", "orgUnit", "value"} for v in values)  # default combos
    assert spool.missing == 2 and spool.periods == {"2027W1"}
    assert not spool.path.exists()


def test_values_are_sent_in_chunks_of_at_most_the_setting(tmp_path):
    org_units = [f"OU{i:04d}" for i in range(50)]
    targets = parse_targets({"0.1": "A", "0.5": "B", "0.9": "C"})
    spool = spool_forecast_values(rows_for(org_units, ["202701", "202702"], None), targets, chunk_values=120,
                                  spool_dir=str(tmp_path))
    chunks = list(spool.iter_chunks())
    spool.remove()
    assert spool.values == 300 and [n for _, n in chunks] == [120, 120, 60]
    assert sum(len(orjson.loads(b)["dataValues"]) for b, _ in chunks) == 300
    assert spool.by_element_period[("B", "202702")] == 50


def test_format_value_reads_back_exactly():
    for v in (0.0, 1.0, 12.3456, 1e-7, 123456789.123, 2 / 3):
        assert float(format_value(v)) == v
    assert format_value(3.0) == "3" and format_value(0) == "0"


# ---- import summary and conflicts ---------------------------------------------------------------

CONFLICTED = {
    "httpStatus": "Conflict", "httpStatusCode": 409, "status": "WARNING", "message": "One more conflicts encountered",
    "response": {"responseType": "ImportSummary", "status": "WARNING",
                 "importCount": {"imported": 2, "updated": 0, "ignored": 0, "deleted": 0},
                 "conflicts": [{"object": "202812", "objects": {"period": "202812"}, "value": "after latest open",
                                "errorCode": "E7641", "property": "period", "indexes": [2]},
                               {"object": "202901", "value": "after latest open", "errorCode": "E7641",
                                "indexes": [3]},
                               {"object": "ouX", "value": "not accessible", "errorCode": "E7612", "indexes": [4]}],
                 "rejectedIndexes": [2, 3, 4]},
}


def test_a_409_warning_is_an_import_summary_with_conflicts_grouped_by_code():
    with respx.mock:
        respx.post(DVS).mock(return_value=httpx.Response(409, json=CONFLICTED))
        with Dhis2Writer(BASE, username="u", password="p") as w:
            summary = w.post_data_values(b'{"dataValues":[]}', dry_run=True)
        assert respx.calls.last.request.url.params["dryRun"] == "true"
        assert respx.calls.last.request.url.params["importStrategy"] == "CREATE_AND_UPDATE"
    assert summary.status == "WARNING" and summary.counts.imported == 2 and summary.rejected == 3
    assert not summary.clean
    groups = group_conflicts(summary.conflicts)
    assert [(g.error_code, g.count) for g in groups] == [("E7641", 2), ("E7612", 1)]
    assert groups[0].examples == ["202812: after latest open", "202901: after latest open"]
    assert "openFuturePeriods" in groups[0].fix and "capture" in groups[1].fix


def test_every_conflict_a_forecast_writer_meets_has_a_fix():
    for code in ("E7610", "E7611", "E7612", "E7619", "E7640", "E7641", "E7642", "E7643"):
        assert CONFLICT_FIXES[code]
        (g,) = group_conflicts([Conflict(code, "x", "y")])
        assert g.fix == CONFLICT_FIXES[code]


def test_a_bare_summary_of_older_dhis2_is_read_too():
    s = ImportSummary.from_answer({"status": "SUCCESS", "importCount": {"imported": 0, "updated": 3, "ignored": 4}})
    assert s.clean and s.counts.updated == 3 and s.counts.ignored == 4


@pytest.mark.parametrize("status, error, words", [
    (401, Dhis2AuthFailed, "authentication failed"),
    (403, Dhis2RequestFailed, "may not write data values"),
    (503, Dhis2RequestFailed, "HTTP 503"),
])
def test_write_errors_name_the_cause(status, error, words):
    with respx.mock:
        respx.post(DVS).mock(return_value=httpx.Response(status, text="<html>nope</html>"))
        with Dhis2Writer(BASE, username="u", password="secret-pw") as w, pytest.raises(error) as err:
            w.post_data_values(b"{}", dry_run=False)
    assert words in str(err.value) and "secret-pw" not in str(err.value) and err.value.hint


# ---- the publish flow ---------------------------------------------------------------------------

class FakeReader:
    """DHIS2 metadata as the preflight reads it."""

    def __init__(self, **elements):
        self.elements = elements
        self.calls = []

    def get(self, path, params=None):
        self.calls.append(path)
        if path.startswith("/api/dataElements/"):
            de = self.elements.get(path.rsplit("/", 1)[1])
            if de is None:
                raise Dhis2RequestFailed("not found", 404)
            return de
        if path == "/api/me":
            return {"organisationUnits": [{"id": "ROOT"}]}
        if path == "/api/organisationUnits":
            ids = dict(params)["filter"].split("[")[1].rstrip("]").split(",")
            return {"organisationUnits": [{"id": i, "path": f"/ROOT/{i}"} for i in ids if i != "GONE"]}
        if path == "/api/dataValueSets":
            return {"dataValues": []}
        raise AssertionError(path)


def number(name, **extra):
    return {"id": name, "displayName": name.title(), "valueType": "NUMBER", "zeroIsSignificant": True,
            "dataSetElements": [], **extra}


def setup_with(targets, org_units=("OU1", "OU2")):
    return PredictionSetup.model_validate({"id": 7, "name": "s", "periodType": "month", "orgUnits": list(org_units),
                                           "quantileTargets": targets})


def publish(setup, mode="on", reader=None, rows=None, chunk_values=1000):
    report = RunReport(setup_id="7", dhis2_url=BASE)
    reader = reader or FakeReader(deMed=number("deMed"), deHigh=number("deHigh"))
    with Dhis2Writer(BASE, username="u", password="p") as writer:
        result = publish_prediction(report, setup, 42, rows=rows or rows_for(["OU1", "OU2"], ["202701"], None),
                                    reader=reader, writer=writer, mode=mode, horizon=3, chunk_values=chunk_values)
    return report, result


OK = {"httpStatus": "OK", "httpStatusCode": 200, "status": "OK",
      "response": {"responseType": "ImportSummary", "status": "SUCCESS",
                   "importCount": {"imported": 4, "updated": 0, "ignored": 0, "deleted": 0}, "conflicts": []}}


def test_dry_run_then_real_import_and_counts_in_the_report():
    with respx.mock:
        route = respx.post(DVS).mock(return_value=httpx.Response(200, json=OK))
        report, result = publish(setup_with({"median": "deMed", "quantile_high": "deHigh"}))
        dry = [c.request.url.params["dryRun"] for c in route.calls]
    assert dry == ["true", "false"]
    assert result.outcome == "published" and result.counts.imported == 4 and result.values == 4
    text = report.markdown()
    assert "## DHIS2 import" in text and "imported 4, updated 0, ignored 0, deleted 0" in text
    assert "median (quantile 0.5) → Demed `deMed`" in text
    assert report.metadata()["publish_imported"] == 4


def test_conflicts_in_the_dry_run_write_nothing_and_fail_with_the_groups():
    with respx.mock:
        route = respx.post(DVS).mock(return_value=httpx.Response(409, json=CONFLICTED))
        with pytest.raises(PublishFailed) as err:
            publish(setup_with({"median": "deMed"}), chunk_values=1)
        dry = {c.request.url.params["dryRun"] for c in route.calls}
    assert dry == {"true"} and len(route.calls) == 2  # both chunks dry-run, no real import
    assert "E7641 × 4" in str(err.value) and "nothing was written" in str(err.value)
    assert "publish_chap_forecast" in err.value.hint and "prediction_id: 42" in err.value.hint


def test_dry_run_mode_and_off_mode_write_nothing():
    with respx.mock:
        route = respx.post(DVS).mock(return_value=httpx.Response(200, json=OK))
        report, result = publish(setup_with({"median": "deMed"}), mode="dry-run")
        assert [c.request.url.params["dryRun"] for c in route.calls] == ["true"]
        report, result = publish(setup_with({"median": "deMed"}), mode="off")
        assert len(route.calls) == 1 and result.outcome == "off"
    assert resolve_mode("default", "dry-run") == ("dry-run", "CHAP_SCHEDULER_PUBLISH=dry-run")
    assert resolve_mode("off", "on")[0] == "off"


def test_no_targets_publishes_nothing_and_says_so():
    with respx.mock:  # any request would fail: none is expected
        report, result = publish(setup_with([]))
    assert result.note == NO_TARGETS and NO_TARGETS in report.markdown()


def test_a_missing_target_data_element_fails_before_any_write():
    with respx.mock:
        route = respx.post(DVS).mock(return_value=httpx.Response(200, json=OK))
        with pytest.raises(PublishFailed, match="deGone does not exist or this DHIS2 user cannot read it"):
            publish(setup_with({"median": "deMed", "0.9": "deGone"}))
        assert not route.calls


def test_a_prediction_without_values_fails_and_writes_nothing():
    with respx.mock:
        route = respx.post(DVS).mock(return_value=httpx.Response(200, json=OK))
        with pytest.raises(PublishFailed, match="prediction 42 has no values"):
            publish(setup_with({"median": "deMed"}), rows=lambda q: [])
        assert not route.calls


def test_preflight_findings():
    reader = FakeReader(
        deInt=number("deInt", valueType="INTEGER"),
        deShort=number("deShort", zeroIsSignificant=False, dataSetElements=[
            {"dataSet": {"id": "ds", "displayName": "Forecasts", "periodType": "Monthly", "openFuturePeriods": 1}}]),
        deWeekly=number("deWeekly", dataSetElements=[
            {"dataSet": {"id": "dw", "displayName": "Weekly", "periodType": "Weekly", "openFuturePeriods": 20}}]),
    )
    targets = parse_targets({"median": "deInt", "0.9": "deShort", "0.1": "deWeekly", "0.25": "deNone"})
    findings = check_publish_targets(reader, targets, period_type="month", horizon=3, org_units=["OU1", "GONE"])
    by = [(f.level, f.target, f.message) for f in findings]
    assert any(lv == "error" and t == "median -> deInt" and "does not take the forecast's decimals" in m
               for lv, t, m in by)
    assert any(lv == "warning" and "openFuturePeriods 1, below the horizon of 3" in m for lv, _, m in by)
    assert any(lv == "warning" and "zeroIsSignificant" in m for lv, _, m in by)
    assert any(lv == "error" and "period type Weekly" in m for lv, _, m in by)
    assert any(lv == "error" and "deNone does not exist" in m for lv, _, m in by)
    assert any(lv == "error" and "unknown to DHIS2" in m and "GONE" in m for lv, _, m in by)
    assert all(f.fix for f in findings if f.level != "ok")


# ---- reading chap's rows ------------------------------------------------------------------------

def test_prediction_rows_are_read_row_by_row_through_the_chap_client_with_retries():
    from chap_scheduler_dagster.core.chap_client import ChapClient
    from chap_scheduler_dagster.core.errors import ChapHttpError
    from chap_scheduler_dagster.core.forecast_values import prediction_rows

    url = f"{BASE}/api/routes/chap/run/v1/analytics/prediction-entry/42"
    rows = [{"orgUnit": "OU1", "period": "2027W01", "quantile": 0.5, "value": 1.25}]
    with respx.mock:
        route = respx.get(url).mock(side_effect=[httpx.Response(503, text="<html>busy</html>"),
                                                 httpx.Response(200, json=rows)])
        with ChapClient(BASE, username="u", password="p", sleep=lambda s: None) as chap:
            got = list(prediction_rows(chap, 42)(0.5))
        assert route.calls[-1].request.url.params.get_list("quantiles") == ["0.5"]
        assert got == rows and len(route.calls) == 2
        respx.get(url).mock(return_value=httpx.Response(404, json={"detail": "Prediction not found"}))
        with ChapClient(BASE, username="u", password="p", sleep=lambda s: None) as chap:
            with pytest.raises(ChapHttpError, match=r"HTTP 404\): Prediction not found"):
                list(prediction_rows(chap, 42)(0.5))


def test_check_setup_targets_for_the_check_command():
    from chap_scheduler_dagster.core.target_preflight import check_setup_targets

    reader = FakeReader(deMed=number("deMed"))
    [bad] = check_setup_targets(reader, setup_with({"p95": "deMed"}), horizon=3)
    assert bad.level == "error" and "'p95'" in bad.message and bad.fix
    [none] = check_setup_targets(reader, setup_with([]), horizon=3)
    assert none.level == "ok" and "no quantile targets" in none.message
    good = check_setup_targets(reader, setup_with({"median": "deMed"}), horizon=3)
    assert [f.level for f in good] == ["ok", "ok"] and good[0].name == "Demed"
    assert good[0].as_dict()["target"] == "median -> deMed"


def test_the_report_reads_the_union_of_the_setting_and_the_target_quantiles():
    from chap_scheduler_dagster.core.prediction_steps import report_quantiles
    from chap_scheduler_dagster.settings import SchedulerSettings

    settings = SchedulerSettings(quantiles="0.1,0.5,0.9")
    assert report_quantiles(setup_with({"0.33": "X", "median": "Y"}), settings) == [0.1, 0.33, 0.5, 0.9]
    assert report_quantiles(setup_with({"p95": "X"}), settings) == [0.1, 0.5, 0.9]


def test_dhis2_down_for_the_write_is_unreachable_with_a_fix():
    from chap_scheduler_dagster.core.errors import Dhis2Unreachable

    with respx.mock:
        respx.post(DVS).mock(side_effect=httpx.ConnectError("connection refused"))
        with Dhis2Writer(BASE, username="u", password="p") as w, pytest.raises(Dhis2Unreachable) as err:
            w.post_data_values(b"{}", dry_run=True)
    assert "could not reach DHIS2 at http://dhis2.test" in str(err.value) and "republish" in err.value.hint


def test_a_failure_in_the_middle_of_the_import_says_what_was_written():
    answers = [httpx.Response(200, json=OK)] * 4 + [httpx.Response(200, json=OK), httpx.Response(502, text="bad")]
    with respx.mock:
        route = respx.post(DVS).mock(side_effect=answers)
        with pytest.raises(PublishFailed) as err:
            publish(setup_with({"median": "deMed", "quantile_high": "deHigh"}), chunk_values=1)
        flags = [c.request.url.params["dryRun"] for c in route.calls]
    assert flags == ["true"] * 4 + ["false"] * 2
    assert "HTTP 502" in str(err.value) and "1 of 4 requests were imported (values partly written)" in str(err.value)
    assert "prediction_id: 42" in err.value.hint


def test_a_refused_stale_cell_delete_only_warns_after_a_complete_import():
    class StaleReader(FakeReader):
        def get(self, path, params=None):
            if path == "/api/dataValueSets":
                return {"dataValues": [{"dataElement": "deMed", "period": "202701", "orgUnit": "OU3", "value": "4"}]}
            return super().get(path, params)

    report = RunReport(setup_id="7", dhis2_url=BASE)
    with respx.mock:
        route = respx.post(DVS).mock(side_effect=lambda request: httpx.Response(403, json={"message": "no"})
                                     if request.url.params["importStrategy"] == "DELETE"
                                     else httpx.Response(200, json=OK))
        with Dhis2Writer(BASE, username="u", password="p") as writer:
            result = publish_prediction(report, setup_with({"median": "deMed"}, org_units=("OU1", "OU2", "OU3")), 42,
                                        rows=rows_for(["OU1", "OU2"], ["202701"], None), reader=StaleReader(deMed=number("deMed")),
                                        writer=writer, mode="on", horizon=3, chunk_values=1000, delete_stale=True)
        strategies = [c.request.url.params["importStrategy"] for c in route.calls]
    assert strategies == ["CREATE_AND_UPDATE", "CREATE_AND_UPDATE", "DELETE"]
    assert result.outcome == "published" and result.stale_count == 1 and result.stale_cells == ["deMed 202701 OU3"]
    assert any("stale cells not deleted" in w and "F_DATAVALUE_DELETE" in w for w in result.warnings)
