"""Fetching a configured model's DHIS2 data into a spooled prediction request body.

Requests are split to keep every URL under the limit and run with bounded concurrency;
each answer is written into the body as soon as it arrives and then dropped, so memory
does not grow with the number of rows.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .analytics_requests import AnalyticsBlock, plan_blocks, plan_id_filter_blocks
from .chap_models import ChapApi, PredictionSetup
from .dhis2_reader import ANALYTICS_PATH, ORG_UNITS_PATH, Dhis2Reader, org_unit_params
from .errors import RowBudgetExceeded
from .prediction_body import PredictionBodyWriter
from .run_window import InputWindow, row_estimate


@dataclass
class FetchResult:
    body_path: Path
    body_bytes: int
    row_estimate: int
    analytics_rows: int
    observations: int
    features: int
    dropped: dict[str, int]
    org_units_without_geometry: list[str]
    analytics_requests: int
    org_unit_requests: int
    longest_url: int
    body_sha256: str = ""  # of the body bytes as written (for the inputs fingerprint)
    org_unit_names: dict[str, str] = field(default_factory=dict)  # id -> DHIS2 displayName


def check_row_budget(setup: PredictionSetup, window: InputWindow, budget: int) -> int:
    estimate = row_estimate(len(setup.covariate_sources), len(window.periods), len(setup.org_units))
    if estimate > budget:
        raise RowBudgetExceeded(
            f"this run would fetch up to {estimate:,} analytics rows ({len(setup.covariate_sources)} data elements × "
            f"{len(window.periods)} periods × {len(setup.org_units):,} org units), over the budget of {budget:,}",
            hint="Raise CHAP_SCHEDULER_ROW_BUDGET if the worker has the memory and chap can take it, "
            "or shorten the window / split the configured model in chap.",
        )
    return estimate


def fetch_prediction_body(
    reader: Dhis2Reader,
    setup: PredictionSetup,
    window: InputWindow,
    *,
    name: str,
    n_periods: int,
    api: ChapApi,
    max_url_bytes: int,
    concurrency: int,
    row_budget: int,
    max_rows_per_request: int | None = 20_000,
    spool_dir: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FetchResult:
    estimate = check_row_budget(setup, window, row_budget)
    data_elements = list(setup.data_element_covariates())
    period_item = ";".join(window.period_ids)
    empty = AnalyticsBlock((), ())
    blocks = plan_blocks(
        len(reader.url_for(ANALYTICS_PATH, empty.params(period_item))),
        data_elements,
        setup.org_units,
        max_url_bytes=max_url_bytes,
        rows_per_org_unit=len(window.periods),
        max_rows=max_rows_per_request,
    )
    ou_blocks = plan_id_filter_blocks(
        len(reader.url_for(ORG_UNITS_PATH, org_unit_params(()))), setup.org_units, max_url_bytes=max_url_bytes
    )
    # Exact lengths of the two longest candidates (building every URL costs ~2 ms each at 8 KB).
    # Rank by id bytes plus one encoded separator (3 bytes) per id: the separators differ between
    # blocks of uneven id lengths, so the block with the most id characters is not always the longest.
    def _width(ids: tuple[str, ...]) -> int:
        return sum(map(len, ids)) + 3 * len(ids)

    longest = max(
        [len(reader.url_for(ORG_UNITS_PATH, org_unit_params(max(ou_blocks, key=_width))))] if ou_blocks else [0],
        default=0,
    )
    if blocks:
        widest = max(blocks, key=lambda b: _width(b.org_units) + _width(b.data_elements))
        longest = max(longest, len(reader.url_for(ANALYTICS_PATH, widest.params(period_item))))

    def analytics(block: AnalyticsBlock) -> dict:
        return reader.analytics(block.params(period_item))

    with gc_paused(), PredictionBodyWriter(setup, name=name, n_periods=n_periods, api=api, directory=spool_dir) as body:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for units in _bounded_map(pool, reader.org_units, ou_blocks, concurrency):
                body.add_features(units)
            done = 0
            for answer in _bounded_map(pool, analytics, blocks, concurrency):
                body.add_analytics(answer)
                done += 1
                if on_progress is not None:
                    on_progress(done, len(blocks))
        size = body.finish()
    return FetchResult(
        body_path=body.path,
        body_bytes=size,
        row_estimate=estimate,
        analytics_rows=body.analytics_rows,
        observations=body.observations,
        features=body.features,
        dropped=dict(body.dropped),
        org_units_without_geometry=sorted(set(setup.org_units) - body.org_units_with_geometry),
        analytics_requests=len(blocks),
        org_unit_requests=len(ou_blocks),
        longest_url=longest,
        body_sha256=body.body_sha256,
        org_unit_names=dict(body.org_unit_names),
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects that existed before the fetch.

    Each block allocates some 100k short-lived objects, which trigger collections; with
    Dagster loaded, a full collection walks a large heap and cost a third of the fetch
    time. Freezing moves that heap out of the collector's sight; collection still runs
    for what the fetch itself creates (httpx responses sit in reference cycles, so
    switching the collector off would keep every answer's bytes alive).
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: list, in_flight: int):
    """Like ``pool.map`` in order, but with at most ``in_flight`` answers held at once."""
    pending: deque[Future] = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(pool.submit(fn, item))
        if len(pending) >= in_flight:
            break
    while pending:
        future = pending.popleft()
        try:
            result = future.result()
        except BaseException:
            for other in pending:
                other.cancel()
            raise
        nxt = next(iterator, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result
