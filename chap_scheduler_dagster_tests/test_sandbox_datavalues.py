"""The sandbox's dataValueSets and forecast metadata behave like DHIS2 2.41 (reference/publishing.md §5)."""

import httpx
import pytest

from dhis2_sandbox import Sandbox, SandboxConfig
from dhis2_sandbox import periods as P
from dhis2_sandbox.world import (
    DE_PRED_INTEGER,
    DE_PRED_MEDIAN,
    DE_PRED_NOZERO,
    DE_PRED_SHORT,
    DS_FORECASTS,
    ROOT_OU,
)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(port=0, org_units=4)) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def empty(sb):
    sb.data_values.values.clear()
    sb.capture_roots = [ROOT_OU]
    yield


def post(sb, values, dry_run=False, strategy="CREATE_AND_UPDATE"):
    return httpx.post(f"{sb.base_url}/api/dataValueSets", auth=sb.auth, json={"dataValues": values},
                      params={"dryRun": str(dry_run).lower(), "importStrategy": strategy})


def dv(sb, de=DE_PRED_MEDIAN, pe=None, ou=None, value="1.5"):
    return {"dataElement": de, "period": pe or P.format_id("month", sb.world.last_month), "orgUnit":
            ou or sb.world.ou_ids[0], "value": value}


def counts(r):
    return r.json()["response"]["importCount"]


def test_create_then_identical_is_ignored_then_changed_is_updated_and_dry_run_stores_nothing(sb):
    r = post(sb, [dv(sb)], dry_run=True)
    assert r.status_code == 200 and counts(r)["imported"] == 1 and not sb.data_values.values
    r = post(sb, [dv(sb)])
    body = r.json()
    assert body["httpStatusCode"] == 200 and body["response"]["responseType"] == "ImportSummary"
    assert counts(r) == {"imported": 1, "updated": 0, "ignored": 0, "deleted": 0}
    assert counts(post(sb, [dv(sb)])) == {"imported": 0, "updated": 0, "ignored": 1, "deleted": 0}
    assert counts(post(sb, [dv(sb, value="2")]))["updated"] == 1
    read = httpx.get(f"{sb.base_url}/api/dataValueSets", auth=sb.auth, params=[
        ("dataElement", DE_PRED_MEDIAN), ("period", P.format_id("month", sb.world.last_month)),
        ("orgUnit", ROOT_OU), ("children", "true")]).json()["dataValues"]
    assert [(v["orgUnit"], v["value"]) for v in read] == [(sb.world.ou_ids[0], "2")]
    assert counts(post(sb, [dv(sb)], strategy="DELETE"))["deleted"] == 1 and not sb.data_values.values


def test_conflicts_answer_409_warning_and_reject_only_their_values(sb):
    last = sb.world.last_month
    r = post(sb, [
        dv(sb),
        dv(sb, de="deNotThere"),
        dv(sb, ou="NotAnOrgUn1"),
        dv(sb, de=DE_PRED_INTEGER, value="1.5"),
        dv(sb, de=DE_PRED_SHORT, pe=P.format_id("month", P.index_of("month", sb.world.today) + 2)),
        dv(sb, pe="2026-13x"),
    ])
    body = r.json()
    assert r.status_code == 409 and body["status"] == "WARNING" and body["response"]["status"] == "WARNING"
    assert [c["errorCode"] for c in body["response"]["conflicts"]] == ["E7610", "E7612", "E7619", "E7641", "E7611"]
    assert body["response"]["rejectedIndexes"] == [1, 2, 3, 4, 5]
    assert body["response"]["importCount"]["imported"] == 1
    assert list(sb.data_values.values) == [(DE_PRED_MEDIAN, P.format_id("month", last), sb.world.ou_ids[0])]


def test_org_units_outside_the_capture_hierarchy_are_refused(sb):
    sb.capture_roots = [sb.world.ou_ids[1]]
    r = post(sb, [dv(sb, ou=sb.world.ou_ids[0]), dv(sb, ou=sb.world.ou_ids[1])])
    assert r.status_code == 409 and [c["errorCode"] for c in r.json()["response"]["conflicts"]] == ["E7612"]
    me = httpx.get(f"{sb.base_url}/api/me", auth=sb.auth).json()
    assert me["organisationUnits"] == [{"id": sb.world.ou_ids[1]}]


def test_a_zero_is_not_stored_without_zero_is_significant_and_deletes_an_older_value(sb):
    assert counts(post(sb, [dv(sb, de=DE_PRED_NOZERO, value="3")]))["imported"] == 1
    assert counts(post(sb, [dv(sb, de=DE_PRED_NOZERO, value="0")]))["deleted"] == 1
    assert counts(post(sb, [dv(sb, de=DE_PRED_NOZERO, value="0")]))["ignored"] == 1
    assert counts(post(sb, [dv(sb, de=DE_PRED_MEDIAN, value="0")]))["imported"] == 1  # zeroIsSignificant
    assert list(sb.data_values.values.values()) == ["0"]


def test_weekly_ids_are_stored_unpadded(sb):
    week = P.format_id("week", sb.world.last_week, pad=True)
    assert counts(post(sb, [dv(sb, de="dePredWkMd1", pe=week)]))["imported"] == 1
    [(_, stored, _)] = sb.data_values.values
    assert stored == P.format_id("week", sb.world.last_week) and "W0" not in stored


def test_data_element_and_data_set_metadata(sb):
    de = httpx.get(f"{sb.base_url}/api/dataElements/{DE_PRED_MEDIAN}", auth=sb.auth, params={
        "fields": "id,valueType,zeroIsSignificant,dataSetElements[dataSet[id,periodType,openFuturePeriods]]"}).json()
    assert de == {"id": DE_PRED_MEDIAN, "valueType": "NUMBER", "zeroIsSignificant": True, "dataSetElements": [
        {"dataSet": {"id": DS_FORECASTS, "periodType": "Monthly", "openFuturePeriods": 12}}]}
    sets = httpx.get(f"{sb.base_url}/api/dataSets", auth=sb.auth,
                     params={"fields": "id,openFuturePeriods", "paging": "false"}).json()["dataSets"]
    assert {s["id"]: s["openFuturePeriods"] for s in sets} == {DS_FORECASTS: 12, "dsShortFut1": 1}
    assert httpx.get(f"{sb.base_url}/api/dataElements/{DE_PRED_INTEGER}", auth=sb.auth).json()["valueType"] == "INTEGER"


def test_write_faults(sb):
    sb.faults.datavalues_fail_next = 1
    assert post(sb, [dv(sb)]).status_code == 503
    sb.faults.datavalues_write_status = 401
    try:
        assert post(sb, [dv(sb)], dry_run=True).status_code == 200
        assert post(sb, [dv(sb)]).status_code == 401
    finally:
        sb.faults.reset()
