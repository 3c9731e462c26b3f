"""Request splitting (analytics_requests) and the streamed prediction body (prediction_body)."""

from __future__ import annotations

import itertools
import json
import random
import string
from collections import Counter
from datetime import date, timedelta

import orjson
import pytest

from chap_scheduler_dagster.core.analytics_requests import (
    AnalyticsBlock,
    encoded_len,
    plan_blocks,
    plan_id_filter_blocks,
)
from chap_scheduler_dagster.core.chap_models import ChapApi
from chap_scheduler_dagster.core.dhis2_reader import ANALYTICS_PATH, ORG_UNITS_PATH, Dhis2Reader, org_unit_params
from chap_scheduler_dagster.core.errors import SchedulerError
from chap_scheduler_dagster.core.prediction_body import (
    DROP_EMPTY,
    DROP_NO_GEOMETRY,
    DROP_OTHER_ORG_UNIT,
    DROP_SHORT_ROW,
    DROP_UNMAPPED,
    PredictionBodyWriter,
    iter_body,
    org_unit_feature,
    remove_body,
)

from .core_fixtures import DHIS2, make_setup, simple_body, simple_dropped, square

# Period ids written out here, not made by the package's period module (they would share its bugs).
MONTHS_120 = ";".join(f"{year}{month:02d}" for year in range(2015, 2025) for month in range(1, 13))


def uid(rng: random.Random) -> str:
    return rng.choice(string.ascii_letters) + "".join(rng.choices(string.ascii_letters + string.digits, k=10))


def uids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        u = uid(rng)
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out


@pytest.fixture(scope="module")
def reader():
    r = Dhis2Reader(DHIS2, username="admin", password="district")
    yield r
    r.close()


def analytics_url(reader: Dhis2Reader, block: AnalyticsBlock, period_item: str, as_filter: bool = False) -> str:
    return reader.url_for(ANALYTICS_PATH, block.params(period_item, org_units_as_filter=as_filter))


# ---- plan_blocks ------------------------------------------------------------------------------


def check_plan(reader, data_elements, org_units, period_item, max_url_bytes, as_filter=False):
    empty = analytics_url(reader, AnalyticsBlock((), ()), period_item, as_filter)
    blocks = plan_blocks(len(empty), data_elements, org_units, max_url_bytes=max_url_bytes)
    lengths = [len(analytics_url(reader, b, period_item, as_filter)) for b in blocks]
    assert max(lengths) <= max_url_bytes
    pairs = Counter((d, o) for b in blocks for d in b.data_elements for o in b.org_units)
    assert set(pairs) == set(itertools.product(data_elements, org_units))
    assert set(pairs.values()) == {1}
    # greedy and tight: the next org unit would not have fit in a full block
    for block, nxt in zip(blocks, blocks[1:]):
        if block.data_elements == nxt.data_elements:
            grown = AnalyticsBlock(block.data_elements, block.org_units + nxt.org_units[:1])
            assert len(analytics_url(reader, grown, period_item, as_filter)) > max_url_bytes
    return blocks, lengths


@pytest.mark.parametrize("n_org_units", [1_000, 10_000])
def test_plan_blocks_keeps_every_url_under_limit(reader, n_org_units):
    data_elements = uids(6, seed=1)
    org_units = uids(n_org_units, seed=2)
    assert sum(encoded_len(o) + 3 for o in org_units) > 8000  # one request could not hold them
    blocks, lengths = check_plan(reader, data_elements, org_units, MONTHS_120, 8000)
    assert all(b.data_elements == tuple(data_elements) for b in blocks)  # dx fits: not split
    # ~14 encoded bytes per org unit, ~5,700 bytes of room per request
    assert len(blocks) <= n_org_units * 14 // 5_000 + 1
    # org units keep their order
    assert [o for b in blocks for o in b.org_units] == org_units


def test_plan_blocks_splits_data_elements_when_needed(reader):
    data_elements = uids(400, seed=3)  # ~5,600 encoded bytes: more than half the room
    org_units = uids(300, seed=4)
    blocks, _ = check_plan(reader, data_elements, org_units, MONTHS_120, 8000)
    dx_groups = {b.data_elements for b in blocks}
    assert len(dx_groups) >= 2
    assert [d for g in sorted(dx_groups, key=lambda g: data_elements.index(g[0])) for d in g] == data_elements


def test_plan_blocks_for_the_probe_with_ou_filter(reader):
    check_plan(reader, uids(4, seed=5), uids(2_000, seed=6), "LAST_52_WEEKS", 8000, as_filter=True)


def test_plan_blocks_small_limit_and_long_ids(reader):
    ids = [f"OU_{i}_{'x' * (i % 40)}" for i in range(500)]  # uneven lengths
    check_plan(reader, ["DE_A", "DE_B"], ids, "202401;202402", 1500)


@pytest.mark.parametrize(("n_dx", "max_rows"), [(3, 5_000), (6, 20_000), (2, 100)])
def test_plan_blocks_bounds_rows_per_request(reader, n_dx, max_rows):
    data_elements, org_units = uids(n_dx, seed=7), uids(1_000, seed=8)
    empty = analytics_url(reader, AnalyticsBlock((), ()), MONTHS_120)
    blocks = plan_blocks(len(empty), data_elements, org_units, max_url_bytes=8000, rows_per_org_unit=120,
                         max_rows=max_rows)
    per_unit = 120 * n_dx
    for b in blocks:
        assert len(b.org_units) * per_unit <= max(max_rows, per_unit)  # one org unit is the floor
        assert len(analytics_url(reader, b, MONTHS_120)) <= 8000
    pairs = Counter((d, o) for b in blocks for d in b.data_elements for o in b.org_units)
    assert set(pairs) == set(itertools.product(data_elements, org_units)) and set(pairs.values()) == {1}


def test_plan_blocks_refuses_when_periods_alone_overflow(reader):
    days = (date(2020, 1, 1) + timedelta(days=n) for n in range(366 + 365 + 365))  # 20200101 .. 20221231
    period_item = ";".join(day.strftime("%Y%m%d") for day in days)
    empty = analytics_url(reader, AnalyticsBlock((), ()), period_item)
    with pytest.raises(SchedulerError) as info:
        plan_blocks(len(empty), ["DE"], ["OU"], max_url_bytes=8000)
    assert "8000-byte URL limit" in str(info.value)
    assert "CHAP_SCHEDULER_MAX_URL_BYTES" in info.value.hint


def test_plan_blocks_refuses_an_id_longer_than_the_budget():
    with pytest.raises(SchedulerError) as info:
        plan_blocks(100, ["DE"], ["OU_" + "y" * 300], max_url_bytes=300)
    assert "longer than the URL budget" in str(info.value)


def test_plan_blocks_no_org_units_means_no_requests():
    assert plan_blocks(100, ["DE"], [], max_url_bytes=8000) == []


def test_encoded_len_matches_httpx_for_dhis2_ids(reader):
    # sizes are computed on the encoded form; check against what httpx really sends
    for text in ("dx:a;b", "ou:OU_1;OU_2", "id:in:[A,B]", "pe:2024W1;2024W2", "LAST_52_WEEKS"):
        url = reader.url_for("/x", [("k", text)])
        assert len(url) == len(reader.url_for("/x", [("k", "")])) + encoded_len(text)


# ---- plan_id_filter_blocks -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "limit"), [(1_000, 8000), (10_000, 8000), (777, 1100)])
def test_plan_id_filter_blocks(reader, n, limit):
    ids = uids(n, seed=n)
    empty = len(reader.url_for(ORG_UNITS_PATH, org_unit_params(())))
    blocks = plan_id_filter_blocks(empty, ids, max_url_bytes=limit)
    urls = [reader.url_for(ORG_UNITS_PATH, org_unit_params(b)) for b in blocks]
    assert max(len(u) for u in urls) <= limit
    assert [i for b in blocks for i in b] == ids
    for block, nxt in zip(blocks, blocks[1:]):
        assert len(reader.url_for(ORG_UNITS_PATH, org_unit_params(block + nxt[:1]))) > limit


# ---- PredictionBodyWriter ----------------------------------------------------------------------

HEADERS = [{"name": "dx"}, {"name": "pe"}, {"name": "ou"}, {"name": "value"}]


def unit(uid_: str, geometry=True, **extra):
    u = {"id": uid_, "displayName": f"Unit {uid_}", "level": 3, "code": f"C_{uid_}", "parent": {"id": "PARENT"}}
    if geometry:
        u["geometry"] = square(len(uid_), 1.0)
    return u | extra


def write(setup, unit_batches, answers, *, api=ChapApi.PREDICTION_SETUPS, tmp_path=None, name="run", n_periods=3):
    with PredictionBodyWriter(setup, name=name, n_periods=n_periods, api=api, directory=str(tmp_path)) as w:
        for batch in unit_batches:
            w.add_features(batch)
        kept = [w.add_analytics(a) for a in answers]
        size = w.finish()
    raw = w.path.read_bytes()
    assert size == len(raw)
    return w, orjson.loads(raw), kept


def test_org_unit_feature_shape():
    feature = org_unit_feature(
        {"id": "OU_A", "displayName": "Alpha", "level": 2, "code": "A1", "parent": {"id": "ROOT"},
         "geometry": square(0, 0)}
    )
    assert feature == {
        "type": "Feature",
        "id": "OU_A",
        "geometry": square(0, 0),
        "properties": {"id": "OU_A", "displayName": "Alpha", "level": 2, "code": "A1", "parent": "ROOT",
                       "parentGraph": "ROOT"},
    }
    assert org_unit_feature({"id": "OU_B", "geometry": None}) is None
    assert org_unit_feature({"id": "OU_C"}) is None
    bare = org_unit_feature({"id": "OU_D", "geometry": square(1, 1)})
    assert bare is not None and bare["properties"] == {"id": "OU_D", "displayName": "OU_D"}


def test_body_features_observations_and_keys(tmp_path):
    setup = make_setup(org_units=["OU_A", "OU_B", "OU_C"])
    units = [unit("OU_A"), unit("OU_B", geometry=False), unit("OU_C"), unit("OU_X")]
    answer = {"headers": HEADERS, "rows": [["DE_RAIN", "202401", "OU_A", "12.5"], ["DE_CASES", "202401", "OU_C", "7"]]}
    w, body, kept = write(setup, [units], [answer], tmp_path=tmp_path, name="my run", n_periods=4)
    assert list(body) == ["name", "nPeriods", "type", "geojson", "providedData"]
    assert (body["name"], body["nPeriods"]) == ("my run", 4)
    assert body["geojson"]["type"] == "FeatureCollection"
    assert [f["id"] for f in body["geojson"]["features"]] == ["OU_A", "OU_C"]
    assert all(f["id"] == f["properties"]["id"] for f in body["geojson"]["features"])
    assert body["providedData"] == [
        {"featureName": "rainfall", "orgUnit": "OU_A", "period": "202401", "value": 12.5},
        {"featureName": "disease_cases", "orgUnit": "OU_C", "period": "202401", "value": 7.0},
    ]
    assert kept == [2]
    assert (w.features, w.observations, w.analytics_rows) == (2, 2, 2)
    assert w.org_units_with_geometry == {"OU_A", "OU_C"}


def test_body_legacy_keys(tmp_path):
    setup = make_setup(setup_id=4, legacy=True)
    _, body, _ = write(setup, [[unit("OU_A")]], [], api=ChapApi.LEGACY, tmp_path=tmp_path)
    assert body["configuredModelWithDataSourceId"] == 4
    assert body["dataSources"] == [{"covariate": "rainfall", "dataElementId": "DE_RAIN"},
                                   {"covariate": "disease_cases", "dataElementId": "DE_CASES"}]
    assert body["dataToBeFetched"] == []
    assert set(body) == {"name", "nPeriods", "type", "geojson", "providedData", "configuredModelWithDataSourceId",
                         "dataSources", "dataToBeFetched"}
    assert body["providedData"] == []


def test_body_with_nothing_is_still_valid_json(tmp_path):
    _, body, _ = write(make_setup(), [], [], tmp_path=tmp_path)
    assert body == {"name": "run", "nPeriods": 3, "type": "forecasting",
                    "geojson": {"type": "FeatureCollection", "features": []}, "providedData": []}


def test_dropped_rows_counted_per_reason(tmp_path):
    setup = make_setup(org_units=["OU_A", "OU_B"])
    units = [unit("OU_A"), unit("OU_B", geometry=False)]
    rows = [
        ["DE_RAIN", "202401", "OU_A", "1"],        # kept
        ["DE_OTHER", "202401", "OU_A", "1"],       # unmapped
        ["DE_OTHER", "202402", "OU_A", "2"],       # unmapped
        ["DE_RAIN", "202401", "OU_A", ""],         # empty
        ["DE_RAIN", "202402", "OU_A", "abc"],      # non-numeric
        ["DE_RAIN", "202403", "OU_A", None],       # null
        ["DE_RAIN", "202404", "OU_A", "NaN"],      # not finite
        ["DE_RAIN", "202405", "OU_A", "Infinity"],  # not finite (orjson would write null)
        ["DE_RAIN", "202406", "OU_A", "-inf"],     # not finite
        ["DE_RAIN", "202401", "OU_B", "3"],        # in the model, no geometry
        ["DE_RAIN", "202401", "OU_Z", "3"],        # not in the model
        ["DE_RAIN", "202401"],                     # short row
    ]
    w, body, kept = write(setup, [units], [{"headers": HEADERS, "rows": rows},
                                           {"headers": [{"name": "dx"}, {"name": "value"}], "rows": [["a", "1"]] * 3}],
                          tmp_path=tmp_path)
    assert kept == [1, 0]
    assert len(body["providedData"]) == 1
    assert dict(w.dropped) == {
        DROP_UNMAPPED: 2,
        DROP_EMPTY: 6,
        DROP_NO_GEOMETRY: 1,
        DROP_OTHER_ORG_UNIT: 1,
        DROP_SHORT_ROW: 1 + 3,
    }
    assert w.analytics_rows == len(rows) + 3


def test_headers_read_by_name(tmp_path):
    setup = make_setup(org_units=["OU_A"])
    reordered = [{"name": "value"}, {"name": "ou"}, {"name": "pe"}, {"name": "dx"}, {"name": "numerator"}]
    answers = [
        {"headers": HEADERS, "rows": [["DE_RAIN", "202401", "OU_A", "1.5"]]},
        {"headers": reordered, "rows": [["2.5", "OU_A", "202402", "DE_RAIN", "99"]]},
    ]
    _, body, _ = write(setup, [[unit("OU_A")]], answers, tmp_path=tmp_path)
    assert body["providedData"] == [
        {"featureName": "rainfall", "orgUnit": "OU_A", "period": "202401", "value": 1.5},
        {"featureName": "rainfall", "orgUnit": "OU_A", "period": "202402", "value": 2.5},
    ]


def test_file_removed_on_exception(tmp_path):
    setup = make_setup()
    with pytest.raises(RuntimeError, match="boom"):
        with PredictionBodyWriter(setup, name="x", n_periods=1, api=ChapApi.PREDICTION_SETUPS,
                                  directory=str(tmp_path)) as w:
            w.add_features([unit("OU_A")])
            path = w.path
            assert path.exists()
            raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_iter_body_and_remove_body(tmp_path):
    w, body, _ = write(make_setup(), [[unit("OU_A")]], [], tmp_path=tmp_path)
    chunks = list(iter_body(w.path, chunk_bytes=7))
    assert all(len(c) <= 7 for c in chunks)
    assert orjson.loads(b"".join(chunks)) == body
    remove_body(w.path)
    assert not w.path.exists()
    remove_body(w.path)  # idempotent
    remove_body(None)


def random_answers(rng: random.Random, setup, n_blocks: int, rows_per_block: int):
    mapped = [s.data_element_id for s in setup.covariate_sources]
    elements = mapped + ["DE_UNMAPPED"]
    units = setup.org_units + ["OU_ELSEWHERE"]
    periods = [f"2023W{w}" for w in (50, 51, 52)] + [f"2024W{w}" for w in range(1, 31)]  # 2023 has 52 ISO weeks
    answers = []
    for b in range(n_blocks):
        names = ["dx", "pe", "ou", "value"]
        if b % 2:
            rng.shuffle(names)
        if b % 3 == 0:
            names = [*names, "numerator"]
        rows = []
        clean = b % 4 == 2  # only good values and full rows: the writer's fast path
        for _ in range(rng.randint(rows_per_block // 2, rows_per_block) if b != 1 else 0):
            cells = {"dx": rng.choice(elements), "pe": rng.choice(periods), "ou": rng.choice(units),
                     "numerator": "1"}
            roll = rng.random()
            if clean and roll < 0.07:
                cells["value"] = str(rng.randint(0, 99))
            elif roll < 0.05:
                cells["value"] = ""
            elif roll < 0.07:
                cells["value"] = "n/a"
            elif roll < 0.5:
                cells["value"] = str(rng.randint(0, 10_000))
            else:
                cells["value"] = repr(round(rng.uniform(-50, 500), rng.randint(0, 6)))
            row = [cells[n] for n in names]
            if not clean and rng.random() < 0.01:
                row = row[:rng.randint(1, 3)]
            rows.append(row)
        answers.append({"headers": [{"name": n, "column": n.title()} for n in names], "rows": rows,
                        "height": len(rows)})
    return answers


@pytest.mark.parametrize("api", [ChapApi.PREDICTION_SETUPS, ChapApi.LEGACY])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streamed_body_equals_simple_in_memory_body(tmp_path, monkeypatch, api, seed):
    # Spy on the writer's two row paths (one comprehension for clean blocks, a careful loop
    # otherwise) so the comparison below is known to cover both.
    paths: list[str] = []
    fast = PredictionBodyWriter._observations_fast

    def spy(self, *args):
        kept = fast(self, *args)
        paths.append("careful" if kept is None else "fast")
        return kept

    monkeypatch.setattr(PredictionBodyWriter, "_observations_fast", spy)
    rng = random.Random(seed)
    org_units = [f"OU_{i:03d}" for i in range(60)]
    setup = make_setup(
        org_units=org_units,
        covariates={"DE_RAIN": "rainfall", "DE_TEMP": "mean_temperature", "DE_CASES": "disease_cases",
                    "DE_POP": "population"},
        period_type="week",
        legacy=api is ChapApi.LEGACY,
    )
    all_units = [unit(u, geometry=rng.random() > 0.1) for u in org_units] + [unit("OU_ELSEWHERE")]
    rng.shuffle(all_units)
    # an empty batch and a batch with no geometry at all must not break the comma placement
    unit_batches = [[], [unit("OU_000", geometry=False)]] if seed == 1 else []
    unit_batches += [all_units[i:i + 17] for i in range(0, len(all_units), 17)]
    answers = random_answers(rng, setup, n_blocks=9, rows_per_block=800)
    # a clean block whose dropped rows are all short (unmapped or outside the model, cut short)
    answers.append({"headers": HEADERS, "rows": [["DE_RAIN", "2024W1", org_units[1], "1"], ["DE_UNMAPPED", "2024W1"],
                                                 ["DE_RAIN", "2024W2", "OU_ELSEWHERE"]]})
    assert sum(len(a["rows"]) for a in answers) > 2_000

    w, streamed, kept = write(setup, unit_batches, answers, api=api, tmp_path=tmp_path, name=f"run {seed}",
                              n_periods=12)
    simple = simple_body(setup, unit_batches, answers, name=f"run {seed}", n_periods=12,
                         legacy=api is ChapApi.LEGACY)
    assert streamed == simple
    assert w.observations == sum(kept) == len(simple["providedData"])
    assert w.features == len(simple["geojson"]["features"])
    assert w.analytics_rows == w.observations + sum(w.dropped.values())
    assert dict(w.dropped) == simple_dropped(setup, unit_batches, answers)
    assert {"fast", "careful"} <= set(paths)
    # the simple path goes through the stdlib json parser too: the file is strict JSON
    assert json.loads(w.path.read_text()) == simple
