"""fetch_prediction_body end to end against a respx DHIS2 that answers from the request's own params."""

from __future__ import annotations

import hashlib
import random
import threading

import httpx
import orjson
import pytest
import respx

from chap_scheduler_dagster.core.chap_models import ChapApi
from chap_scheduler_dagster.core.dhis2_fetch import check_row_budget, fetch_prediction_body
from chap_scheduler_dagster.core.dhis2_reader import Dhis2Reader
from chap_scheduler_dagster.core.errors import Dhis2RequestFailed, RowBudgetExceeded
from chap_scheduler_dagster.core.periods import parse_period
from chap_scheduler_dagster.core.prediction_body import DROP_NO_GEOMETRY, org_unit_feature
from chap_scheduler_dagster.core.run_window import InputWindow

from .core_fixtures import DHIS2, make_setup, square, web_message

COVARIATES = {"DE_RAIN0001": "rainfall", "DE_TEMP0002": "mean_temperature", "DE_CASES003": "disease_cases"}
ORG_UNITS = [f"OU{i:09d}" for i in range(250)]
NO_GEOMETRY = {ORG_UNITS[7], ORG_UNITS[100], ORG_UNITS[249]}
MAX_URL = 2000


def month_ids(first_year: int, last_year: int) -> list[str]:
    """Every month id of whole years, written out here: expectations built with the package's own
    period module would share its bugs."""
    return [f"{year}{month:02d}" for year in range(first_year, last_year + 1) for month in range(1, 13)]


MONTHS = month_ids(2019, 2023)  # the 60 months of the default window


def window(months: list[str] = MONTHS) -> InputWindow:
    periods = tuple(parse_period(p) for p in months)
    return InputWindow(start=periods[0], end=periods[-1], periods=periods, end_how="fixed: test")


def cell(dx: str, pe: str, ou: str) -> str | None:
    """Deterministic sparse data: about 1 cell in 6 is missing; values mix ints and decimals."""
    digest = hashlib.blake2b(f"{dx}|{pe}|{ou}".encode(), digest_size=4).digest()
    n = int.from_bytes(digest, "big")
    if n % 6 == 0:
        return None
    return str(n % 5000) if n % 2 else f"{(n % 100000) / 100:.2f}"


def unit_json(ou: str) -> dict:
    u = {"id": ou, "displayName": f"Unit {ou}", "level": 3, "parent": {"id": "PARENT0001"}}
    if ou not in NO_GEOMETRY:
        u["geometry"] = square(int(ou[2:]), 0)
    return u


class FakeDhis2:
    """Analytics and org units generated from the request; records every URL."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.lock = threading.Lock()
        self.fail_on_block: int | None = None
        self.analytics_calls = 0

    def analytics(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.urls.append(str(request.url))
            self.analytics_calls += 1
            n = self.analytics_calls
        if self.fail_on_block is not None and n == self.fail_on_block:
            return httpx.Response(409, json=web_message(409, "Query failed", "E7131"))
        dims = dict(d.split(":", 1) for d in request.url.params.get_list("dimension"))
        assert request.url.params.get("skipMeta") == "true"
        rows = [
            [dx, pe, ou, value]
            for dx in dims["dx"].split(";")
            for pe in dims["pe"].split(";")
            for ou in dims["ou"].split(";")
            if (value := cell(dx, pe, ou)) is not None
        ]
        headers = [{"name": n, "valueType": "TEXT"} for n in ("dx", "pe", "ou")] + [{"name": "value"}]
        return httpx.Response(200, json={"headers": headers, "rows": rows, "height": len(rows), "width": 4})

    def org_units(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.urls.append(str(request.url))
        spec = request.url.params["filter"]
        assert spec.startswith("id:in:[") and spec.endswith("]")
        ids = spec[len("id:in:["):-1].split(",")
        assert request.url.params["paging"] == "false"
        return httpx.Response(200, json={"organisationUnits": [unit_json(i) for i in reversed(ids)]})


@pytest.fixture
def fake():
    fake = FakeDhis2()
    with respx.mock(base_url=DHIS2, assert_all_called=False) as mock:
        mock.get("/api/analytics").mock(side_effect=fake.analytics)
        mock.get("/api/organisationUnits").mock(side_effect=fake.org_units)
        yield fake


def run_fetch(tmp_path, *, concurrency: int, api=ChapApi.PREDICTION_SETUPS, progress=None, row_budget=10**7,
              max_url: int = MAX_URL, **kwargs):
    setup = make_setup(org_units=ORG_UNITS, covariates=COVARIATES, legacy=api is ChapApi.LEGACY)
    with Dhis2Reader(DHIS2, username="admin", password="district", sleep=lambda s: None) as reader:
        return fetch_prediction_body(
            reader, setup, window(), name="scheduled", n_periods=3, api=api, max_url_bytes=max_url,
            concurrency=concurrency, row_budget=row_budget, spool_dir=str(tmp_path), on_progress=progress, **kwargs,
        )


def test_fetch_body_end_to_end(fake, tmp_path):
    progress: list[tuple[int, int]] = []
    result = run_fetch(tmp_path, concurrency=1, progress=lambda done, total: progress.append((done, total)))
    body = orjson.loads(result.body_path.read_bytes())

    # every request line is under the limit, and the report's longest URL is the real one
    assert fake.urls and max(len(u) for u in fake.urls) <= MAX_URL
    assert result.longest_url == max(len(u) for u in fake.urls)
    assert result.analytics_requests == fake.analytics_calls > 1
    assert result.org_unit_requests > 1
    assert progress == [(i, result.analytics_requests) for i in range(1, result.analytics_requests + 1)]

    # the body is what a plain in-memory build over every cell gives
    periods = MONTHS
    assert window().period_ids == MONTHS
    with_geometry = [ou for ou in ORG_UNITS if ou not in NO_GEOMETRY]
    expected_obs = sorted(
        (COVARIATES[dx], ou, pe, float(v))
        for dx in COVARIATES for pe in periods for ou in with_geometry
        if (v := cell(dx, pe, ou)) is not None
    )
    got_obs = sorted((o["featureName"], o["orgUnit"], o["period"], o["value"]) for o in body["providedData"])
    assert got_obs == expected_obs
    expected_features = sorted((org_unit_feature(unit_json(ou)) for ou in with_geometry), key=lambda f: f["id"])
    assert sorted(body["geojson"]["features"], key=lambda f: f["id"]) == expected_features
    assert set(body) == {"name", "nPeriods", "type", "geojson", "providedData"}

    all_cells = sum(1 for dx in COVARIATES for pe in periods for ou in ORG_UNITS if cell(dx, pe, ou) is not None)
    assert result.analytics_rows == all_cells
    assert result.observations == len(expected_obs)
    assert result.dropped == {DROP_NO_GEOMETRY: all_cells - len(expected_obs)}
    assert result.features == len(with_geometry)
    assert result.org_units_without_geometry == sorted(NO_GEOMETRY)
    assert result.row_estimate == 3 * 60 * 250
    assert result.body_bytes == result.body_path.stat().st_size


@pytest.mark.parametrize("concurrency", [2, 3])
def test_concurrency_gives_the_same_body(fake, tmp_path, concurrency):
    one = run_fetch(tmp_path, concurrency=1, max_url=1200)
    many = run_fetch(tmp_path, concurrency=concurrency, max_url=1200)
    assert many.analytics_requests > concurrency + 2  # more blocks than workers
    assert one.body_path != many.body_path
    assert orjson.loads(one.body_path.read_bytes()) == orjson.loads(many.body_path.read_bytes())
    assert one.body_path.read_bytes() == many.body_path.read_bytes()
    assert max(len(u) for u in fake.urls) <= 1200


def test_rows_per_request_bound(fake, tmp_path):
    unbounded = run_fetch(tmp_path, concurrency=1, max_url=8000, max_rows_per_request=None)
    requests_before = fake.analytics_calls
    bounded = run_fetch(tmp_path, concurrency=3, max_url=8000, max_rows_per_request=2_000)
    # 3 data elements x 60 periods = 180 rows per org unit -> at most 11 org units per request
    sent = [u for u in fake.urls[-bounded.analytics_requests:]]
    assert all(httpx.URL(u).path.endswith("/api/analytics") for u in sent)
    for url in sent:
        dims = dict(d.split(":", 1) for d in httpx.URL(url).params.get_list("dimension"))
        assert len(dims["ou"].split(";")) * 180 <= 2_000
    assert fake.analytics_calls - requests_before == bounded.analytics_requests >= 250 // 11
    a, b = (orjson.loads(r.body_path.read_bytes()) for r in (bounded, unbounded))
    key = lambda o: (o["orgUnit"], o["featureName"], o["period"])  # noqa: E731 - other blocks, other order
    assert sorted(a.pop("providedData"), key=key) == sorted(b.pop("providedData"), key=key)
    assert a == b


def test_legacy_fetch_body_has_legacy_keys(fake, tmp_path):
    result = run_fetch(tmp_path, concurrency=2, api=ChapApi.LEGACY)
    body = orjson.loads(result.body_path.read_bytes())
    assert body["configuredModelWithDataSourceId"] == 3
    assert body["dataToBeFetched"] == []
    assert len(body["providedData"]) == result.observations


def test_row_budget_refused_before_any_request(tmp_path):
    with respx.mock(base_url=DHIS2) as mock:  # no routes: any request would raise
        with pytest.raises(RowBudgetExceeded) as info:
            run_fetch(tmp_path, concurrency=1, row_budget=40_000)
        assert mock.calls.call_count == 0
    message = str(info.value)
    assert "45,000 analytics rows" in message
    assert "3 data elements × 60 periods × 250 org units" in message
    assert "40,000" in message
    assert "CHAP_SCHEDULER_ROW_BUDGET" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_row_budget_exact_fit_passes():
    setup = make_setup(org_units=ORG_UNITS, covariates=COVARIATES)
    assert check_row_budget(setup, window(), 45_000) == 45_000


@pytest.mark.parametrize("concurrency", [1, 4])
def test_failed_block_removes_the_spool(fake, tmp_path, concurrency):
    fake.fail_on_block = 3
    with pytest.raises(Dhis2RequestFailed) as info:
        run_fetch(tmp_path, concurrency=concurrency)
    assert "E7131" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_setup_without_org_units_makes_no_requests(tmp_path):
    setup = make_setup(org_units=[], covariates=COVARIATES)
    with respx.mock(base_url=DHIS2) as mock, Dhis2Reader(DHIS2, username="a", password="b") as reader:
        result = fetch_prediction_body(
            reader, setup, window(), name="n", n_periods=3, api=ChapApi.PREDICTION_SETUPS, max_url_bytes=MAX_URL,
            concurrency=2, row_budget=10, spool_dir=str(tmp_path),
        )
        assert mock.calls.call_count == 0
    assert (result.observations, result.features, result.analytics_requests, result.longest_url) == (0, 0, 0, 0)
    assert orjson.loads(result.body_path.read_bytes())["providedData"] == []


def test_longest_url_is_exact_with_uneven_ids(tmp_path):
    rng = random.Random(5)
    org_units = [f"OU{'x' * rng.randint(0, 12)}{i}" for i in range(400)]
    setup = make_setup(org_units=org_units)
    urls: list[str] = []

    def record(answer: dict):
        def respond(request: httpx.Request) -> httpx.Response:
            urls.append(str(request.url))
            return httpx.Response(200, json=answer)
        return respond

    with respx.mock(base_url=DHIS2) as mock, Dhis2Reader(DHIS2, username="a", password="b") as reader:
        mock.get("/api/analytics").mock(side_effect=record({"headers": [], "rows": []}))
        mock.get("/api/organisationUnits").mock(side_effect=record({"organisationUnits": []}))
        result = fetch_prediction_body(
            reader, setup, window(month_ids(2020, 2023)), name="n", n_periods=3, api=ChapApi.PREDICTION_SETUPS,
            max_url_bytes=1500, concurrency=1, row_budget=10**9, spool_dir=str(tmp_path),
        )
    assert max(map(len, urls)) <= 1500
    assert result.longest_url == max(map(len, urls))
