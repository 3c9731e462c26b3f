"""The sandbox's world: the country Sandboxia, its districts, data elements and values.

Everything is deterministic from ``seed`` and anchored on "today" (the real UTC date unless a
``today`` is given), so the freshest data is always recent. Values are never stored: each cell is
computed on demand from small per-district and per-period factors and a fixed noise table, which
keeps a 10,000-district world cheap.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from datetime import date, datetime, timezone

from . import periods as P

# Data element ids (fixed; DHIS2-style 11-character UIDs, readable on purpose).
DE_CASES = "deCasesMon1"  # monthly disease cases (integers)
DE_RAIN = "deRainMon01"  # monthly rainfall (mm), ~1% holes in the first half of the history
DE_TEMP = "deTempMon01"  # monthly mean temperature (°C); lags 2 months behind the others
DE_POP = "dePopYear01"  # yearly population (also answers monthly/weekly periods with the year's value)
DE_CASES_WEEKLY = "deCasesWk01"
DE_RAIN_WEEKLY = "deRainWk001"
DE_TEMP_WEEKLY = "deTempWk001"  # lags 1 week
DE_RAIN_GAPPY = "deRainGap01"  # monthly rainfall with a hole in EVERY district at one recent month
DE_HUMID = "deHumidMon1"  # monthly relative humidity (%), the 5th covariate of the benchmark setup
DE_PRED_LOW = "dePredLow01"  # quantile targets (no data)
DE_PRED_MEDIAN = "dePredMed01"
DE_PRED_HIGH = "dePredHig01"
DE_PRED_MID_LOW = "dePredMLo01"
DE_PRED_MID_HIGH = "dePredMHi01"
DE_PRED_WEEKLY_LOW = "dePredWkLo1"  # weekly quantile targets (label vocabulary), in no data set
DE_PRED_WEEKLY_MEDIAN = "dePredWkMd1"
DE_PRED_WEEKLY_HIGH = "dePredWkHi1"
DE_PRED_INTEGER = "dePredInt01"  # INTEGER value type: decimals are refused (E7619)
DE_PRED_SHORT = "dePredShrt1"  # in a data set with openFuturePeriods 1 (E7641 past the first period)
DE_PRED_NOZERO = "dePredNoZr1"  # zeroIsSignificant false: zeros are not stored
DS_FORECASTS = "dsForecast1"  # monthly data set of the monthly targets, openFuturePeriods 12
DS_SHORT = "dsShortFut1"  # monthly data set with openFuturePeriods 1

ROOT_OU = "SandboxiaRt"  # the country, level 1
COUNTRY_NAME = "Sandboxia"

_NOISE_BITS = 16
_NOISE_MASK = (1 << _NOISE_BITS) - 1


@dataclass
class DataElement:
    id: str
    name: str
    period_type: str  # native: month | week | year
    kind: str  # cases | rain | temp | pop | none
    agg: str  # sum | avg (over time and, for temp/rain averages, over org units)
    integer: bool
    salt: int
    first: int  # first native period index with data
    last: int  # last native period index with data (first > last: no data at all)
    hole_until: int | None = None  # native indices < this have ~1% random holes
    gap_period: int | None = None  # one native period missing in every district
    zero_is_significant: bool = False
    value_type_override: str | None = None

    @property
    def value_type(self) -> str:
        if self.value_type_override:
            return self.value_type_override
        return "INTEGER" if self.integer else "NUMBER"

    def metadata(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "displayName": self.name,
            "shortName": self.name[:50],
            "code": self.id.upper(),
            "valueType": self.value_type,
            "aggregationType": "SUM" if self.agg == "sum" else "AVERAGE",
            "domainType": "AGGREGATE",
            "periodType": {"month": "Monthly", "week": "Weekly", "year": "Yearly"}[self.period_type],
            "zeroIsSignificant": self.zero_is_significant,
        }


_SYLLABLES = (
    "ka ma lo ri tu na be so vi de la mo ze ru pa ki ya no ha lu ti ba se wo "
    "fa ne gi ro da mi".split()
)


def _uid(rng: random.Random) -> str:
    first = rng.choice(string.ascii_letters)
    return first + "".join(rng.choices(string.ascii_letters + string.digits, k=10))


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


class World:
    """Org units, data elements and a deterministic value function."""

    def __init__(self, org_units: int = 12, months: int = 72, seed: int = 7, today: date | None = None):
        if org_units < 1:
            raise ValueError("org_units must be >= 1")
        if months < 1:
            raise ValueError("months must be >= 1")
        self.n = org_units
        self.months = months
        self.seed = seed
        self.today = today or utc_today()
        # Values changed by hand (set_value): (data element, native period index, district index) -> value
        self.edits: dict[tuple[str, int, int], float | int | None] = {}
        rng = random.Random(seed)

        # ---- periods -------------------------------------------------------------------
        self.last_month = P.index_of("month", self.today) - 1  # last COMPLETE month
        self.first_month = self.last_month - months + 1
        self.last_week = P.index_of("week", self.today) - 1
        self.first_week = P.index_of("week", P.start_date("month", self.first_month))
        self.first_year = self.first_month // 12
        self.last_complete_year = self.today.year - 1

        # ---- org units -----------------------------------------------------------------
        seen: set[str] = {ROOT_OU}
        self.ou_ids: list[str] = []
        for _ in range(org_units):
            u = _uid(rng)
            while u in seen:
                u = _uid(rng)
            seen.add(u)
            self.ou_ids.append(u)
        names: set[str] = set()
        self.ou_names: list[str] = []
        for _ in range(org_units):
            base = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
            name = base
            k = 2
            while name in names:
                name = f"{base} {k}"
                k += 1
            names.add(name)
            self.ou_names.append(name)
        self.ou_index: dict[str, int] = {u: i for i, u in enumerate(self.ou_ids)}
        self.no_geometry_index = rng.randrange(org_units)
        self.no_geometry_ou = self.ou_ids[self.no_geometry_index]
        self.multipolygon_ous = [
            self.ou_ids[i] for i in range(org_units) if i % 6 == 1 and i != self.no_geometry_index
        ]
        self._cols = max(1, math.ceil(math.sqrt(org_units)))
        self._cell = 8.0 / self._cols

        # ---- value factors --------------------------------------------------------------
        self.noise = [0.75 + 0.5 * rng.random() for _ in range(1 << _NOISE_BITS)]
        self.hole = [rng.random() < 0.01 for _ in range(1 << _NOISE_BITS)]
        self.oh = [rng.getrandbits(_NOISE_BITS) for _ in range(org_units)]
        self.oh2 = [rng.getrandbits(_NOISE_BITS) for _ in range(org_units)]
        self.level = {
            "cases": [rng.uniform(20, 400) for _ in range(org_units)],
            "rain": [rng.uniform(60, 180) for _ in range(org_units)],
            "temp": [rng.uniform(19, 29) for _ in range(org_units)],
            "pop": [rng.uniform(20_000, 600_000) for _ in range(org_units)],
        }

        # ---- data elements --------------------------------------------------------------
        lm, fm, lw, fw = self.last_month, self.first_month, self.last_week, self.first_week
        m_holes = min(fm + months // 2, lm - 23)
        w_holes = min(fw + (lw - fw + 1) // 2, lw - 103)
        des = [
            DataElement(DE_CASES, "Sandbox disease cases (monthly)", "month", "cases", "sum", True, 11, fm, lm),
            DataElement(DE_RAIN, "Sandbox rainfall (monthly)", "month", "rain", "sum", False, 23, fm, lm,
                        hole_until=m_holes),
            DataElement(DE_TEMP, "Sandbox mean temperature (monthly)", "month", "temp", "avg", False, 37,
                        fm, lm - 2),
            DataElement(DE_POP, "Sandbox population (yearly)", "year", "pop", "avg", True, 41,
                        self.first_year, self.today.year),
            DataElement(DE_CASES_WEEKLY, "Sandbox disease cases (weekly)", "week", "cases", "sum", True, 53,
                        fw, lw),
            DataElement(DE_RAIN_WEEKLY, "Sandbox rainfall (weekly)", "week", "rain", "sum", False, 67, fw, lw,
                        hole_until=w_holes),
            DataElement(DE_TEMP_WEEKLY, "Sandbox mean temperature (weekly)", "week", "temp", "avg", False, 79,
                        fw, lw - 1),
            DataElement(DE_RAIN_GAPPY, "Sandbox rainfall with a recent gap (monthly)", "month", "rain", "sum",
                        False, 23, fm, lm, hole_until=m_holes, gap_period=lm - 4),
            DataElement(DE_HUMID, "Sandbox relative humidity (monthly)", "month", "temp", "avg", False, 97, fm, lm),
            DataElement(DE_PRED_LOW, "Sandbox predicted cases (low)", "month", "none", "sum", False, 0, 1, 0),
            DataElement(DE_PRED_MEDIAN, "Sandbox predicted cases (median)", "month", "none", "sum", False, 0, 1, 0),
            DataElement(DE_PRED_HIGH, "Sandbox predicted cases (high)", "month", "none", "sum", False, 0, 1, 0),
            DataElement(DE_PRED_MID_LOW, "Sandbox predicted cases (mid low)", "month", "none", "sum", False, 0, 1, 0),
            DataElement(DE_PRED_MID_HIGH, "Sandbox predicted cases (mid high)", "month", "none", "sum", False, 0, 1,
                        0),
            DataElement(DE_PRED_WEEKLY_LOW, "Sandbox predicted cases weekly (low)", "week", "none", "sum", False, 0,
                        1, 0),
            DataElement(DE_PRED_WEEKLY_MEDIAN, "Sandbox predicted cases weekly (median)", "week", "none", "sum",
                        False, 0, 1, 0),
            DataElement(DE_PRED_WEEKLY_HIGH, "Sandbox predicted cases weekly (high)", "week", "none", "sum", False,
                        0, 1, 0),
            DataElement(DE_PRED_INTEGER, "Sandbox predicted cases (integer)", "month", "none", "sum", True, 0, 1, 0),
            DataElement(DE_PRED_SHORT, "Sandbox predicted cases (short data set)", "month", "none", "sum", False, 0,
                        1, 0),
            DataElement(DE_PRED_NOZERO, "Sandbox predicted cases (zeros dropped)", "month", "none", "sum", False, 0,
                        1, 0),
        ]
        self.data_elements: dict[str, DataElement] = {d.id: d for d in des}
        for d in des:
            # Forecast targets store zeros (a 0 forecast is information), except the one built to show why.
            d.zero_is_significant = d.kind == "none" and d.id != DE_PRED_NOZERO
        self.data_sets: list[dict] = [
            {"id": DS_FORECASTS, "name": "Sandbox forecasts (monthly)", "periodType": "Monthly",
             "openFuturePeriods": 12, "elements": [DE_PRED_LOW, DE_PRED_MID_LOW, DE_PRED_MEDIAN, DE_PRED_MID_HIGH, DE_PRED_HIGH,
                          DE_PRED_NOZERO]},
            {"id": DS_SHORT, "name": "Sandbox short forecasts", "periodType": "Monthly", "openFuturePeriods": 1,
             "elements": [DE_PRED_SHORT]},
        ]

    def data_set_metadata(self, ds: dict) -> dict:
        return {"id": ds["id"], "name": ds["name"], "displayName": ds["name"], "periodType": ds["periodType"],
                "openFuturePeriods": ds["openFuturePeriods"],
                "dataSetElements": [{"dataElement": {"id": e}} for e in ds["elements"]]}

    def data_element_metadata(self, de: DataElement) -> dict:
        meta = de.metadata()
        meta["dataSetElements"] = [
            {"dataSet": {k: v for k, v in self.data_set_metadata(ds).items() if k != "dataSetElements"}}
            for ds in self.data_sets if de.id in ds["elements"]
        ]
        return meta

    # ------------------------------------------------------------------------------------
    # org units
    # ------------------------------------------------------------------------------------
    def geometry(self, i: int) -> dict | None:
        if i == self.no_geometry_index:
            return None
        r, c = divmod(i, self._cols)
        s = self._cell
        x0 = round(30.0 + c * s, 5)
        y0 = round(4.0 - (r + 1) * s, 5)
        x1 = round(x0 + s, 5)
        y1 = round(y0 + s, 5)
        if i % 6 == 1:
            xm = round(x0 + s * 0.6, 5)
            xg = round(x0 + s * 0.7, 5)
            return {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[x0, y0], [xm, y0], [xm, y1], [x0, y1], [x0, y0]]],
                    [[[xg, y0], [x1, y0], [x1, y1], [xg, y1], [xg, y0]]],
                ],
            }
        return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}

    def import_geometry(self, uid: str) -> None:
        """Give the org unit without geometry its boundary, as DHIS2's GeoJSON import would."""
        if self.ou_index.get(uid) == self.no_geometry_index:
            self.no_geometry_index = -1

    def root_unit(self) -> dict:
        rows = math.ceil(self.n / self._cols)
        y0 = round(4.0 - rows * self._cell, 5)
        return {
            "id": ROOT_OU,
            "name": COUNTRY_NAME,
            "displayName": COUNTRY_NAME,
            "shortName": COUNTRY_NAME,
            "code": "SBX",
            "level": 1,
            "path": f"/{ROOT_OU}",
            "openingDate": "1990-01-01T00:00:00.000",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[30.0, y0], [38.0, y0], [38.0, 4.0], [30.0, 4.0], [30.0, y0]]],
            },
        }

    def district_unit(self, i: int) -> dict:
        u = self.ou_ids[i]
        d = {
            "id": u,
            "name": self.ou_names[i],
            "displayName": self.ou_names[i],
            "shortName": self.ou_names[i],
            "code": f"SBX_D{i + 1:05d}",
            "level": 2,
            "path": f"/{ROOT_OU}/{u}",
            "parent": {"id": ROOT_OU},
            "openingDate": "1990-01-01T00:00:00.000",
        }
        g = self.geometry(i)
        if g is not None:
            d["geometry"] = g
        return d

    def unit(self, uid: str) -> dict | None:
        if uid == ROOT_OU:
            return self.root_unit()
        i = self.ou_index.get(uid)
        return None if i is None else self.district_unit(i)

    def ou_name(self, uid: str) -> str:
        if uid == ROOT_OU:
            return COUNTRY_NAME
        return self.ou_names[self.ou_index[uid]]

    # ------------------------------------------------------------------------------------
    # values
    # ------------------------------------------------------------------------------------
    def _season(self, kind: str, ptype: str, p: int) -> float:
        if ptype == "month":
            phase = (p % 12) / 12.0
        else:  # week
            phase = (P.week_monday(p).isocalendar()[1] - 1) / 52.0
        two_pi = 2 * math.pi
        if kind == "cases":
            return 1.0 + 0.6 * math.sin(two_pi * (phase - 2 / 12))
        if kind == "rain":
            return 1.0 + 0.85 * math.sin(two_pi * (phase - 4 / 12))
        if kind == "temp":
            return 3.5 * math.sin(two_pi * (phase - 1 / 12))
        raise ValueError(kind)

    def set_value(self, data_element: str, period: str, org_unit: str, value: float | int | None) -> None:
        """Change one stored value (a data entry in DHIS2); aggregates over it follow."""
        de = self.data_elements.get(data_element)
        parsed = P.parse(period)
        if de is None or parsed is None or parsed[0] != de.period_type or org_unit not in self.ou_index:
            raise ValueError(
                f"no {data_element!r} value for period {period!r} and org unit {org_unit!r} "
                "(the period must be of the data element's own period type)"
            )
        self.edits[(de.id, parsed[1], self.ou_index[org_unit])] = value

    def native_values(self, de: DataElement, p: int, idx: list[int]) -> list:
        """Values (int/float or None) of ``de`` at native period index ``p`` for district indices."""
        vals = self._native_values(de, p, idx)
        if self.edits:
            vals = [self.edits.get((de.id, p, o), v) for o, v in zip(idx, vals)]
        return vals

    def _native_values(self, de: DataElement, p: int, idx: list[int]) -> list:
        if p < de.first or p > de.last or de.kind == "none":
            return [None] * len(idx)
        noise = self.noise
        oh = self.oh
        ph = (p * 40503 + de.salt * 7919) & _NOISE_MASK
        kind = de.kind
        lv = self.level[kind]
        weekly = de.period_type == "week"
        if kind == "pop":
            growth = 1.025 ** (p - 2000)
            vals = [int(lv[o] * growth) for o in idx]
            return vals
        s = self._season(kind, de.period_type, p)
        if kind == "cases":
            f = s / 4.3 if weekly else s
            vals = [int(lv[o] * f * noise[oh[o] ^ ph]) for o in idx]
        elif kind == "rain":
            f = s / 4.3 if weekly else s
            vals = [int(lv[o] * f * noise[oh[o] ^ ph] * 100.0 + 0.5) / 100 for o in idx]  # 2 decimals, fast
        else:  # temp
            vals = [int((lv[o] + s + (noise[oh[o] ^ ph] - 1.0) * 4.0) * 100.0 + 0.5) / 100 for o in idx]
        if de.gap_period is not None and p == de.gap_period:
            return [None] * len(idx)
        if de.hole_until is not None and p < de.hole_until:
            hole = self.hole
            oh2 = self.oh2
            ph2 = (p * 2654435761 + de.salt) & _NOISE_MASK
            vals = [None if hole[oh2[o] ^ ph2] else v for o, v in zip(idx, vals)]
        return vals

    def pop_year_of(self, ptype: str, p: int) -> int:
        if ptype == "month":
            return p // 12
        if ptype == "week":
            return P.week_monday(p).isocalendar()[0]
        if ptype == "quarter":
            return p // 4
        return p

    def values(self, de: DataElement, ptype: str, p: int, idx: list[int]) -> list:
        """Values of ``de`` for a requested period (native, or aggregated from native periods)."""
        if ptype == de.period_type:
            return self.native_values(de, p, idx)
        if de.kind == "pop":
            return self.native_values(de, self.pop_year_of(ptype, p), idx)
        if de.period_type == "month" and ptype in ("quarter", "year"):
            cols = [self.native_values(de, m, idx) for m in P.months_of(ptype, p)]
            out = []
            for cells in zip(*cols):
                got = [c for c in cells if c is not None]
                if not got:
                    out.append(None)
                elif de.agg == "sum":
                    out.append(sum(got) if de.integer else round(sum(got), 2))
                else:
                    out.append(round(sum(got) / len(got), 2))
            return out
        return [None] * len(idx)  # cannot disaggregate (e.g. monthly data for a weekly period)

    def root_value(self, de: DataElement, ptype: str, p: int):
        vals = [v for v in self.values(de, ptype, p, list(range(self.n))) if v is not None]
        if not vals:
            return None
        if de.kind in ("cases", "pop"):
            return sum(vals)
        if de.kind == "rain":
            return round(sum(vals) / len(vals), 2)
        return round(sum(vals) / len(vals), 2)
