"""Tests for chap_scheduler_dagster.core.periods (DHIS2 period ids)."""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest

from chap_scheduler_dagster.core.periods import (
    Period,
    PeriodError,
    PeriodType,
    covering,
    parse_period,
    period_range,
    period_type_of,
    periods_back,
    probe_keyword,
)
from dhis2_sandbox import periods as sandbox_periods

D, W, M, Q, Y = (
    PeriodType.DAY,
    PeriodType.WEEK,
    PeriodType.MONTH,
    PeriodType.QUARTER,
    PeriodType.YEAR,
)


def ids(periods: list[Period]) -> list[str]:
    return [p.id for p in periods]


# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ptype", "start", "end", "canonical"),
    [
        ("20240315", D, date(2024, 3, 15), date(2024, 3, 15), "20240315"),
        ("2024-03-15", D, date(2024, 3, 15), date(2024, 3, 15), "20240315"),
        ("20240229", D, date(2024, 2, 29), date(2024, 2, 29), "20240229"),
        ("2024W1", W, date(2024, 1, 1), date(2024, 1, 7), "2024W1"),
        ("2024W01", W, date(2024, 1, 1), date(2024, 1, 7), "2024W1"),
        ("2024W10", W, date(2024, 3, 4), date(2024, 3, 10), "2024W10"),
        ("2025W1", W, date(2024, 12, 30), date(2025, 1, 5), "2025W1"),
        ("2020W53", W, date(2020, 12, 28), date(2021, 1, 3), "2020W53"),
        ("202401", M, date(2024, 1, 1), date(2024, 1, 31), "202401"),
        ("2024-02", M, date(2024, 2, 1), date(2024, 2, 29), "202402"),
        ("202302", M, date(2023, 2, 1), date(2023, 2, 28), "202302"),
        ("202412", M, date(2024, 12, 1), date(2024, 12, 31), "202412"),
        ("2024Q1", Q, date(2024, 1, 1), date(2024, 3, 31), "2024Q1"),
        ("2024Q2", Q, date(2024, 4, 1), date(2024, 6, 30), "2024Q2"),
        ("2024Q3", Q, date(2024, 7, 1), date(2024, 9, 30), "2024Q3"),
        ("2024Q4", Q, date(2024, 10, 1), date(2024, 12, 31), "2024Q4"),
        ("2024", Y, date(2024, 1, 1), date(2024, 12, 31), "2024"),
        ("  2024W5\n", W, date(2024, 1, 29), date(2024, 2, 4), "2024W5"),
        (" 202401 ", M, date(2024, 1, 1), date(2024, 1, 31), "202401"),
    ],
)
def test_parse_every_form(
    text: str, ptype: PeriodType, start: date, end: date, canonical: str
) -> None:
    p = parse_period(text)
    assert p.type is ptype
    assert (p.start, p.end) == (start, end)
    assert p.id == canonical
    assert str(p) == canonical
    assert parse_period(p.id) == p
    assert parse_period(p.chap_id) == p


@pytest.mark.parametrize("week", range(1, 10))
def test_weeks_1_to_9_unpadded_id_padded_chap_id(week: int) -> None:
    unpadded = parse_period(f"2024W{week}")
    padded = parse_period(f"2024W{week:02d}")
    assert unpadded == padded
    assert hash(unpadded) == hash(padded)
    assert unpadded.id == f"2024W{week}"
    assert unpadded.chap_id == f"2024W0{week}"
    assert unpadded.start == date.fromisocalendar(2024, week, 1)


@pytest.mark.parametrize("text", ["20240315", "202401", "2024Q3", "2024", "2024W12"])
def test_chap_id_equals_id_for_non_weekly_and_two_digit_weeks(text: str) -> None:
    assert parse_period(text).chap_id == parse_period(text).id == text


def test_parse_is_cached() -> None:
    assert parse_period("2024W3") is parse_period("2024W3")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("202413", ["202413", "month 13", "01-12"]),
        ("202400", ["202400", "month 00", "01-12"]),
        ("2024-13", ["2024-13", "01-12"]),
        ("2024W0", ["2024W0", "1-53"]),
        ("2024W00", ["2024W00", "1-53"]),
        ("2024W54", ["2024W54", "1-53"]),
        ("2024W53", ["2024W53", "2024", "52 weeks", "2024W52"]),
        ("2021W53", ["2021W53", "52 weeks"]),
        ("2024W001", ["2024W001", "supported forms"]),
        ("2024w1", ["2024w1", "supported forms"]),
        ("2024Q0", ["2024Q0", "Q1-Q4"]),
        ("2024Q5", ["2024Q5", "Q1-Q4"]),
        ("20240230", ["20240230", "invalid date", "yyyyMMdd"]),
        ("20231301", ["20231301", "invalid date"]),
        ("2024-0315", ["2024-0315", "supported forms"]),
        ("0000", ["0000", "0001-9999"]),
        ("", ["''", "supported forms"]),
        ("   ", ["supported forms"]),
        ("2024S1", ["2024S1", "supported forms", "2024W1"]),
        ("202401B", ["202401B", "supported forms"]),
        ("2024BiW1", ["2024BiW1", "supported forms"]),
        ("2024WedW1", ["2024WedW1", "supported forms"]),
        ("2024April", ["2024April", "supported forms"]),
        ("20240101_20240131", ["20240101_20240131", "supported forms"]),
        ("LAST_12_MONTHS", ["LAST_12_MONTHS", "supported forms"]),
        ("24", ["'24'", "supported forms"]),
        ("２０２４", ["supported forms"]),  # full-width digits are not ids
    ],
)
def test_bad_ids_raise_with_helpful_message(text: str, fragments: list[str]) -> None:
    with pytest.raises(PeriodError) as info:
        parse_period(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_period_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_period("nope")


@pytest.mark.parametrize("value", [None, 202401, b"202401"])
def test_non_string_id_raises_period_error(value: object) -> None:
    with pytest.raises(PeriodError, match="must be a string"):
        parse_period(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected", "actual_word", "expected_word"),
    [
        ("202401", W, "monthly", "weekly"),
        ("2024W1", M, "weekly", "monthly"),
        ("2024", M, "yearly", "monthly"),
        ("2024Q1", Y, "quarterly", "yearly"),
        ("20240101", M, "daily", "monthly"),
    ],
)
def test_expected_type_mismatch_names_both(
    text: str, expected: PeriodType, actual_word: str, expected_word: str
) -> None:
    with pytest.raises(PeriodError) as info:
        parse_period(text, expected)
    message = str(info.value)
    assert text in message and actual_word in message and expected_word in message


@pytest.mark.parametrize(
    ("text", "ptype"),
    [("202401", M), ("2024W01", W), ("2024", "year"), ("2024Q2", "Quarterly"), ("20240101", D)],
)
def test_expected_type_match(text: str, ptype: PeriodType | str) -> None:
    assert parse_period(text, ptype).type is period_type_of(ptype)  # type: ignore[arg-type]


# -- period types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("month", M), ("week", W), ("year", Y), ("day", D), ("quarter", Q),
        ("MONTH", M), ("Week", W),
        ("monthly", M), ("weekly", W), ("yearly", Y), ("daily", D), ("quarterly", Q),
        ("Monthly", M), ("Weekly", W), ("Yearly", Y), ("Daily", D), ("Quarterly", Q),
        (" month ", M), (PeriodType.WEEK, W),
    ],
)  # fmt: skip
def test_period_type_of(value: str, expected: PeriodType) -> None:
    assert period_type_of(value) is expected


@pytest.mark.parametrize("value", ["any", "ANY", "", "fortnight", "SixMonthly", "BiWeekly"])
def test_period_type_of_unsupported(value: str) -> None:
    with pytest.raises(PeriodError) as info:
        period_type_of(value)
    message = str(info.value)
    assert "unsupported period type" in message
    assert repr(value) in message
    assert "supported: day, week, month, quarter, year" in message


def test_period_type_any_hint() -> None:
    with pytest.raises(PeriodError, match="'any'.*concrete period type"):
        period_type_of("any")


def test_period_type_is_str_enum() -> None:
    assert PeriodType.MONTH == "month"
    assert f"{PeriodType.WEEK}" == "week"


# -- shift -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("202412", 1, "202501"),
        ("202501", -1, "202412"),
        ("202401", 12, "202501"),
        ("202401", -25, "202112"),
        ("2020W53", 1, "2021W1"),
        ("2021W1", -1, "2020W53"),
        ("2024W52", 1, "2025W1"),
        ("2025W1", -1, "2024W52"),
        ("2024W1", 8, "2024W9"),
        ("2024W9", 1, "2024W10"),
        ("2024W1", 52, "2025W1"),
        ("2020W1", 53, "2021W1"),
        ("2024Q4", 1, "2025Q1"),
        ("2025Q1", -1, "2024Q4"),
        ("2024Q1", -5, "2022Q4"),
        ("20241231", 1, "20250101"),
        ("20250101", -1, "20241231"),
        ("20240228", 1, "20240229"),
        ("20240228", 2, "20240301"),
        ("2024", 1, "2025"),
        ("2024", -24, "2000"),
        ("202406", 0, "202406"),
    ],
)
def test_shift(text: str, n: int, expected: str) -> None:
    p = parse_period(text)
    shifted = p.shift(n)
    assert shifted.id == expected
    assert shifted.type is p.type
    assert shifted.ordinal == p.ordinal + n
    assert shifted.shift(-n) == p


def test_shift_out_of_supported_years() -> None:
    with pytest.raises(PeriodError, match="supported years"):
        parse_period("0001").shift(-1)
    with pytest.raises(PeriodError, match="supported years"):
        parse_period("999912").shift(1)


def test_shift_consecutive_periods_are_adjacent() -> None:
    for text in ["20231225", "2019W50", "201911", "2019Q3", "2019"]:
        p = parse_period(text)
        for _ in range(120):
            nxt = p.shift(1)
            assert nxt.start == p.end + timedelta(days=1)
            p = nxt


# -- 53-week years ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "has_53"),
    [(2015, True), (2020, True), (2026, True), (2032, True),
     (2021, False), (2022, False), (2023, False), (2024, False), (2025, False)],
)  # fmt: skip
def test_week_53(year: int, has_53: bool) -> None:
    if has_53:
        p = parse_period(f"{year}W53")
        assert p.id == f"{year}W53"
        assert p.shift(1).id == f"{year + 1}W1"
        assert parse_period(f"{year + 1}W1").shift(-1) == p
    else:
        with pytest.raises(PeriodError, match="has only 52 weeks"):
            parse_period(f"{year}W53")
        assert parse_period(f"{year}W52").shift(1).id == f"{year + 1}W1"


# -- the period object -----------------------------------------------------------------


def test_frozen_and_repr() -> None:
    p = parse_period("2024W1")
    with pytest.raises(AttributeError):
        p.start = date(2020, 1, 1)  # type: ignore[misc]
    assert repr(p) == "Period('2024W1')"
    assert {p: 1}[parse_period("2024W01")] == 1


# -- ordering --------------------------------------------------------------------------


def test_ordering_same_type() -> None:
    a, b = parse_period("2024W9"), parse_period("2024W10")
    assert a < b and a <= b and b > a and b >= a and a != b
    assert a <= parse_period("2024W09") and a >= parse_period("2024W09")
    # string order would put 2024W10 before 2024W9
    assert sorted([parse_period(x) for x in ["2024W10", "2024W9", "2023W52", "2024W1"]]) == [
        parse_period(x) for x in ["2023W52", "2024W1", "2024W9", "2024W10"]
    ]
    assert max(parse_period(x) for x in ["202412", "202501", "202311"]).id == "202501"
    assert min(parse_period(x) for x in ["2024Q4", "2025Q1", "2023Q2"]).id == "2023Q2"


@pytest.mark.parametrize("op", [operator.lt, operator.le, operator.gt, operator.ge])
def test_ordering_different_types_raises(op: Callable[[object, object], bool]) -> None:
    a, b = parse_period("202401"), parse_period("2024Q1")
    with pytest.raises(PeriodError, match="cannot compare monthly period 202401 with quarterly"):
        op(a, b)


def test_equality_different_types_is_false_not_error() -> None:
    assert parse_period("2024") != parse_period("2024Q1")
    assert parse_period("2024") != "2024"


def test_ordering_with_non_period_is_type_error() -> None:
    with pytest.raises(TypeError):
        _ = parse_period("2024") < "2025"  # type: ignore[operator]


def test_sorting_mixed_types_raises() -> None:
    with pytest.raises(PeriodError):
        sorted([parse_period("2024"), parse_period("202401")])


# -- covering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "ptype", "expected"),
    [
        (date(2024, 12, 31), W, "2025W1"),
        (date(2021, 1, 3), W, "2020W53"),
        (date(2021, 1, 4), W, "2021W1"),
        (date(2024, 1, 1), W, "2024W1"),
        (date(2024, 1, 7), W, "2024W1"),
        (date(2024, 1, 8), W, "2024W2"),
        (date(2026, 1, 5), W, "2026W2"),
        (date(2024, 12, 31), M, "202412"),
        (date(2024, 2, 29), M, "202402"),
        (date(2024, 12, 31), Q, "2024Q4"),
        (date(2024, 4, 1), Q, "2024Q2"),
        (date(2024, 3, 31), Q, "2024Q1"),
        (date(2024, 12, 31), Y, "2024"),
        (date(2024, 12, 31), D, "20241231"),
        (datetime(2024, 12, 31, 23, 59), D, "20241231"),
        (datetime(2024, 12, 31, 23, 59), W, "2025W1"),
    ],
)
def test_covering(day: date, ptype: PeriodType, expected: str) -> None:
    p = covering(day, ptype)
    assert p.id == expected
    assert p.start <= (day.date() if isinstance(day, datetime) else day) <= p.end
    assert type(p.start) is date


def test_covering_every_day_of_a_few_years() -> None:
    day = date(2019, 12, 1)
    while day < date(2027, 1, 31):
        for ptype in PeriodType:
            p = covering(day, ptype)
            assert p.start <= day <= p.end
        iso_year, iso_week, _ = day.isocalendar()
        assert covering(day, W).id == f"{iso_year}W{iso_week}"
        day += timedelta(days=1)


def test_covering_accepts_type_string() -> None:
    assert covering(date(2024, 5, 5), "monthly").id == "202405"  # type: ignore[arg-type]


# -- periods_back ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "ptype", "n", "expected"),
    [
        # offset 0: the period in progress
        (date(2026, 5, 7), M, 0, "202605"),
        (date(2026, 5, 7), W, 0, "2026W19"),
        (date(2026, 5, 7), Y, 0, "2026"),
        (date(2026, 5, 7), Q, 0, "2026Q2"),
        (date(2026, 5, 7), D, 0, "20260507"),
        # offset 1: last complete period
        (date(2026, 5, 7), M, 1, "202604"),
        (date(2026, 5, 7), W, 1, "2026W18"),
        (date(2026, 5, 7), Y, 1, "2025"),
        (date(2026, 5, 7), Q, 1, "2026Q1"),
        (date(2026, 5, 7), D, 1, "20260506"),
        (date(2026, 1, 15), M, 1, "202512"),
        (date(2026, 1, 1), D, 1, "20251231"),
        (date(2026, 1, 1), Q, 1, "2025Q4"),
        # offset N
        (date(2026, 5, 7), M, 3, "202602"),
        (date(2026, 1, 15), M, 2, "202511"),
        (date(2026, 1, 5), W, 2, "2025W52"),
        (date(2026, 5, 7), Y, 5, "2021"),
        (date(2026, 5, 7), Q, 6, "2024Q4"),
        (date(2026, 5, 7), D, 7, "20260430"),
        (date(2021, 1, 10), W, 1, "2020W53"),
    ],
)
def test_periods_back(today: date, ptype: PeriodType, n: int, expected: str) -> None:
    assert periods_back(today, ptype, n).id == expected


@pytest.mark.parametrize("ptype", list(PeriodType))
def test_periods_back_invariants(ptype: PeriodType) -> None:
    rng = random.Random(7)
    for _ in range(200):
        today = date(2000, 1, 1) + timedelta(days=rng.randrange(12000))
        current = periods_back(today, ptype, 0)
        assert current == covering(today, ptype)
        last = periods_back(today, ptype, 1)
        assert last.end < today  # complete
        assert last.shift(1) == current
        n = rng.randrange(0, 60)
        assert periods_back(today, ptype, n) == current.shift(-n)


@pytest.mark.parametrize("n", [-1, -10])
def test_periods_back_negative(n: int) -> None:
    with pytest.raises(PeriodError, match=f">= 0.*got {n}"):
        periods_back(date(2026, 1, 1), M, n)


@pytest.mark.parametrize("n", [1.5, True, "1"])
def test_periods_back_non_int(n: object) -> None:
    with pytest.raises(PeriodError, match="whole number"):
        periods_back(date(2026, 1, 1), M, n)  # type: ignore[arg-type]


# -- period_range ----------------------------------------------------------------------


def _random_period(rng: random.Random, ptype: PeriodType) -> Period:
    return covering(date(1995, 1, 1) + timedelta(days=rng.randrange(40 * 365)), ptype)


@pytest.mark.parametrize("ptype", list(PeriodType))
def test_period_range_is_every_period_between(ptype: PeriodType) -> None:
    rng = random.Random(f"periods-{ptype.value}")
    for _ in range(300):
        a = _random_period(rng, ptype)
        b = a.shift(rng.randrange(-200, 201))
        start, end = min(a, b), max(a, b)
        periods = period_range(start, end, cap=100_000)
        assert len(periods) == end.ordinal - start.ordinal + 1
        assert periods[0] == start and periods[-1] == end
        for x, y in zip(periods, periods[1:], strict=False):
            assert x.shift(1) == y
            assert x.end + timedelta(days=1) == y.start


@pytest.mark.parametrize(
    ("start", "end", "count"),
    [("202401", "203412", 132), ("2020W1", "2020W53", 53), ("2024W1", "2025W1", 53), ("2024", "2024", 1),
     ("20240101", "20241231", 366)],
)  # fmt: skip
def test_period_range_counts(start: str, end: str, count: int) -> None:
    assert len(period_range(parse_period(start), parse_period(end), cap=1000)) == count


def test_period_range_weeks_1_to_9() -> None:
    periods = period_range(parse_period("2024W1"), parse_period("2024W09"), cap=120)
    assert ids(periods) == [f"2024W{i}" for i in range(1, 10)]
    assert [p.chap_id for p in periods] == [f"2024W0{i}" for i in range(1, 10)]


def test_period_range_week_year_boundary() -> None:
    periods = period_range(parse_period("2024W50"), parse_period("2025W03"), cap=120)
    assert ids(periods) == ["2024W50", "2024W51", "2024W52", "2025W1", "2025W2", "2025W3"]


def test_period_range_week_53_boundary() -> None:
    periods = period_range(parse_period("2020W52"), parse_period("2021W2"), cap=120)
    assert ids(periods) == ["2020W52", "2020W53", "2021W1", "2021W2"]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("202411", "202502", ["202411", "202412", "202501", "202502"]),
        ("2024Q3", "2025Q2", ["2024Q3", "2024Q4", "2025Q1", "2025Q2"]),
        ("20241230", "20250102", ["20241230", "20241231", "20250101", "20250102"]),
        ("2022", "2025", ["2022", "2023", "2024", "2025"]),
    ],
)
def test_period_range_other_types(start: str, end: str, expected: list[str]) -> None:
    assert ids(period_range(parse_period(start), parse_period(end), cap=120)) == expected


@pytest.mark.parametrize("text", ["2024W3", "202401", "2024Q1", "2024", "20240101"])
def test_period_range_start_equals_end(text: str) -> None:
    p = parse_period(text)
    assert period_range(p, p, cap=1) == [p]


def test_period_range_start_after_end() -> None:
    with pytest.raises(PeriodError) as info:
        period_range(parse_period("202503"), parse_period("202501"), cap=120)
    assert str(info.value) == "start period 202503 is after end period 202501"
    assert isinstance(info.value, ValueError)


def test_period_range_over_cap() -> None:
    start, end = parse_period("202401"), parse_period("203412")
    with pytest.raises(PeriodError) as info:
        period_range(start, end, cap=120)
    message = str(info.value)
    assert "has 132 monthly periods, more than the cap of 120" in message
    assert "CHAP_SCHEDULER_PERIOD_CAP" in message and "start" in message
    assert "202401..203412" in message


def test_period_range_exactly_cap_is_allowed() -> None:
    periods = period_range(parse_period("202401"), parse_period("203312"), cap=120)
    assert len(periods) == 120


def test_period_range_different_types() -> None:
    with pytest.raises(PeriodError, match="monthly.*weekly.*same type"):
        period_range(parse_period("202401"), parse_period("2024W9"), cap=120)


@pytest.mark.parametrize("cap", [0, -1, 1.5, True])
def test_period_range_bad_cap(cap: object) -> None:
    with pytest.raises(PeriodError, match="cap"):
        period_range(
            parse_period("202401"), parse_period("202402"), cap=cap  # type: ignore[arg-type]
        )


# -- DHIS2 relative keywords -----------------------------------------------------------


@pytest.mark.parametrize(
    ("ptype", "keyword"),
    [
        (D, "LAST_180_DAYS"),
        (W, "LAST_52_WEEKS"),
        (M, "LAST_12_MONTHS"),
        (Q, "LAST_4_QUARTERS"),
        (Y, "LAST_10_YEARS"),
    ],
)
def test_probe_keyword(ptype: PeriodType, keyword: str) -> None:
    assert probe_keyword(ptype) == keyword
    assert probe_keyword(ptype.value) == keyword  # type: ignore[arg-type]
    assert keyword not in ("LAST_24_MONTHS", "LAST_104_WEEKS")


def probe_keyword_periods(today: date, ptype: PeriodType) -> list[Period]:
    """The periods DHIS2 (the sandbox's model of it) expands the scheduler's probe keyword to."""
    expanded = sandbox_periods.expand_relative(probe_keyword(ptype), today)
    assert expanded is not None, probe_keyword(ptype)
    return [parse_period(sandbox_periods.format_id(t, i), ptype) for t, i in expanded]


@pytest.mark.parametrize("today", [date(2022, 1, 1), date(2022, 1, 15), date(2022, 1, 31)])
def test_probe_keyword_periods_month(today: date) -> None:
    assert ids(probe_keyword_periods(today, M)) == [f"2021{m:02d}" for m in range(1, 13)]


def test_probe_keyword_periods_week() -> None:
    # Monday 2026-01-05 is in 2026W2; LAST_52_WEEKS = the 52 weeks before it
    periods = probe_keyword_periods(date(2026, 1, 5), W)
    assert len(periods) == 52
    assert periods[-1].id == "2026W1"
    assert periods[0].id == "2025W2"
    # across a 53-week year
    periods = probe_keyword_periods(date(2021, 1, 20), W)  # 2021W3
    assert ids(periods[-3:]) == ["2020W53", "2021W1", "2021W2"]
    assert periods[0].id == "2020W4"  # 2020 has 53 weeks


def test_probe_keyword_periods_year_quarter() -> None:
    assert ids(probe_keyword_periods(date(2026, 5, 7), Y)) == [str(y) for y in range(2016, 2026)]
    assert ids(probe_keyword_periods(date(2026, 5, 7), Q)) == [
        "2025Q2", "2025Q3", "2025Q4", "2026Q1",
    ]  # fmt: skip


@pytest.mark.parametrize("ptype", [W, M, Q, Y])  # the sandbox has no daily data
def test_probe_keyword_periods_exclude_current(ptype: PeriodType) -> None:
    today = date(2024, 12, 31)
    periods = probe_keyword_periods(today, ptype)
    assert periods[-1] == periods_back(today, ptype, 1)
    assert all(p.end < today for p in periods)


# -- speed -----------------------------------------------------------------------------


def test_id_and_parse_are_fast() -> None:
    import time

    rows = [f"2024W{i % 52 + 1}" for i in range(200_000)]
    t0 = time.perf_counter()
    out = [parse_period(r).id for r in rows]
    elapsed = time.perf_counter() - t0
    assert out[0] == "2024W1"
    assert elapsed < 2.0, elapsed


def test_dhis2_id_unpads_chap_weeks_and_keeps_the_unknown():
    from chap_scheduler_dagster.core.periods import dhis2_id

    assert [dhis2_id(p) for p in ("2027W01", "2027W1", "202401", "2024Q1", "not-a-period")] == [
        "2027W1", "2027W1", "202401", "2024Q1", "not-a-period"]


def test_calendar_order_sorts_weeks_by_date_not_text():
    from chap_scheduler_dagster.core.periods import calendar_order

    assert sorted(["2024W10", "2024W9", "2023W52", "junk"], key=calendar_order) == ["junk", "2023W52", "2024W9", "2024W10"]
