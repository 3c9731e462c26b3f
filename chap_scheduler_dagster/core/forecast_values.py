"""A chap prediction as DHIS2 data values, spooled in import-sized chunks.

chap's ``prediction-entry`` rows (org unit × period × quantile) become
``{"dataElement", "period", "orgUnit", "value"}`` with DHIS2's period ids (unpadded weeks),
default category option combos (omitted) and the value as a string, one data element per
target quantile — what the Modeling app sends. Rows are read one quantile per request and
written straight into a temporary file as JSON bodies of at most ``chunk_values`` values,
so memory stays bounded at national size and the dry run and the import send the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .chap_client import ChapClient
from .periods import dhis2_id
from .publish_targets import PublishTarget, quantile_key

Rows = Callable[[float], Iterable[dict[str, Any]]]
_WS = re.compile(r"\s*")


def prediction_rows(chap: ChapClient, prediction_id: int) -> Rows:
    """chap's prediction-entry rows for one quantile, decoded one row at a time.

    A national answer is 30,000 rows per quantile; decoding it whole (orjson builds a document
    first) peaks near 40 MB, row by row it stays at the size of the text. The GET goes through
    the client's connection, retry policy and error mapping.
    """
    path = f"/v1/analytics/prediction-entry/{prediction_id}"

    def rows(quantile: float) -> Iterator[dict[str, Any]]:
        return iter_json_array(chap.get_array_text(path, [("quantiles", str(quantile))]))

    return rows


def iter_json_array(text: str) -> Iterator[Any]:
    """The items of a JSON array, decoded one at a time."""
    decoder = json.JSONDecoder()
    i = _WS.match(text, 0).end() + 1  # past "["
    i = _WS.match(text, i).end()
    if text[i : i + 1] == "]":
        return
    while True:
        item, i = decoder.raw_decode(text, i)
        yield item
        i = _WS.match(text, i).end()
        if text[i : i + 1] == ",":
            i = _WS.match(text, i + 1).end()
            continue
        if text[i : i + 1] == "]":
            return
        raise ValueError(f"malformed JSON array at character {i}")


def format_value(value: float) -> str:
    """DHIS2 wants strings; the shortest text that reads back as the same float, without a trailing .0."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass
class SpooledValues:
    path: Path
    chunks: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, bytes, values)
    values: int = 0
    zeros: int = 0
    missing: int = 0
    org_units: set[str] = field(default_factory=set)
    periods: set[str] = field(default_factory=set)
    by_element_period: Counter[tuple[str, str]] = field(default_factory=Counter)

    def iter_chunks(self) -> Iterator[tuple[bytes, int]]:
        """Each chunk's JSON body and its number of values, read from the spool file one at a time."""
        with open(self.path, "rb") as f:
            for offset, length, count in self.chunks:
                f.seek(offset)
                yield f.read(length), count

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _ChunkWriter:
    def __init__(self, spool: SpooledValues, file: Any, chunk_values: int) -> None:
        self.spool, self.file, self.chunk_values = spool, file, chunk_values
        self.buffer = bytearray()
        self.count = 0

    def add(self, data_element: str, period: str, org_unit: str, value: str) -> None:
        item = orjson.dumps({"dataElement": data_element, "period": period, "orgUnit": org_unit, "value": value})
        self.buffer += (b"," if self.count else b'{"dataValues":[') + item
        self.count += 1
        s = self.spool
        s.values += 1
        s.by_element_period[(data_element, period)] += 1
        if self.count >= self.chunk_values:
            self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        self.buffer += b"]}"
        offset = self.file.tell()
        self.file.write(self.buffer)
        self.spool.chunks.append((offset, len(self.buffer), self.count))
        self.buffer = bytearray()
        self.count = 0


def spool_forecast_values(
    rows: Rows,
    targets: Iterable[PublishTarget],
    *,
    chunk_values: int,
    spool_dir: str | None = None,
    indicator: Callable[[str, str, float], str | None] | None = None,
    indicator_quantile: float | None = None,
) -> SpooledValues:
    """Read the target quantiles from chap and spool them as data value chunks.

    ``indicator(org_unit, period, forecast)`` gives the outbreak indicator's value ("1"/"0", or None
    when no threshold is known) from the forecast at ``indicator_quantile``; it is used only when an
    ``outbreak_indicator`` target exists.
    """
    targets = list(targets)
    by_quantile: dict[float, list[str]] = {}
    for t in targets:
        if t.quantile is not None:
            by_quantile.setdefault(quantile_key(t.quantile), []).append(t.data_element_id)
    outbreak = [t.data_element_id for t in targets if t.kind == "outbreak_indicator"]
    wanted = set(by_quantile)
    if outbreak and indicator is not None and indicator_quantile is not None:
        wanted.add(quantile_key(indicator_quantile))
    fd, name = tempfile.mkstemp(prefix="chap-forecast-", suffix=".json", dir=spool_dir)
    spool = SpooledValues(path=Path(name))
    try:
        with os.fdopen(fd, "wb") as file:
            writer = _ChunkWriter(spool, file, chunk_values)
            for q in sorted(wanted):
                elements = by_quantile.get(q, [])
                for row in rows(q):
                    if quantile_key(row.get("quantile", q)) != q:
                        continue  # chap answered a quantile we did not ask for
                    value = row.get("value")
                    if value is None or (isinstance(value, float) and math.isnan(value)):
                        spool.missing += 1
                        continue
                    org_unit, period = str(row["orgUnit"]), dhis2_id(str(row["period"]))
                    spool.org_units.add(org_unit)
                    spool.periods.add(period)
                    text = format_value(value)
                    for de in elements:
                        if text == "0":
                            spool.zeros += 1
                        writer.add(de, period, org_unit, text)
                    if outbreak and indicator is not None and q == quantile_key(indicator_quantile or -1):
                        flag = indicator(org_unit, period, float(value))
                        if flag is not None:
                            for de in outbreak:
                                if flag == "0":
                                    spool.zeros += 1
                                writer.add(de, period, org_unit, flag)
            writer.flush()
    except BaseException:
        spool.remove()
        raise
    return spool


def delete_body(cells: Iterable[tuple[str, str, str]]) -> bytes:
    """A DELETE-strategy body for exactly these (data element, period, org unit) cells."""
    values = [{"dataElement": de, "period": pe, "orgUnit": ou} for de, pe, ou in cells]
    return orjson.dumps({"dataValues": values})
