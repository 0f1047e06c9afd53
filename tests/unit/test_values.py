"""connector.values: the canonical strings, the diff, and Lead.Update's body."""

from __future__ import annotations

import enum
import ipaddress
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.types.range import Range

from connector.values import (
    UnsendableValueError,
    dumps,
    loads,
    normalise,
    normalise_json,
    normalise_json_array,
    normalise_sqlite_boolean,
    plan_update,
    to_payload,
)

IST = timezone(timedelta(hours=5, minutes=30))


class Plan(str, enum.Enum):  # noqa: UP042 (its str() is "Plan.GOLD": the case under test)
    GOLD = "gold"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-42, "-42"),
        (12345678901234567890, "12345678901234567890"),
        (2.5, "2.5"),
        (-0.125, "-0.125"),
        (3.0, "3"),
        (-7.0, "-7"),
        (0.0, "0"),
        (-0.0, "0"),
        (1e16, "10000000000000000"),
        (Decimal("12.50"), "12.5"),
        (Decimal("12.000"), "12"),
        (Decimal("0.00"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.5E+2"), "150"),
        (Decimal("2.5E-3"), "0.0025"),
        (Decimal("-100"), "-100"),
        (datetime(2016, 3, 26, 14, 15, 0, tzinfo=UTC), "2016-03-26 14:15:00"),
        (datetime(2016, 3, 26, 19, 45, 0, tzinfo=IST), "2016-03-26 14:15:00"),
        (datetime(2016, 1, 1, 2, 0, 0, tzinfo=IST), "2015-12-31 20:30:00"),
        (datetime(2016, 3, 26, 14, 15, 0), "2016-03-26 14:15:00"),
        (datetime(2016, 3, 26, 14, 15, 0, 999_999), "2016-03-26 14:15:00"),
        (date(2016, 3, 26), "2016-03-26"),
        (time(9, 5, 7), "09:05:07"),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        ("plain text", "plain text"),
        ("", None),  # LeadSquared keeps empty and null alike
    ],
    ids=repr,
)
def test_normalise(value: Any, expected: str | None) -> None:
    assert normalise(value) == expected


def test_bool_is_not_formatted_as_an_int() -> None:
    # bool is a subclass of int: the order of the checks matters.
    assert normalise(True) != normalise(1)


@pytest.mark.parametrize("value", [b"\x00\x01", bytearray(b"ab"), memoryview(b"ab")], ids=repr)
def test_binary_values_are_refused(value: Any) -> None:
    with pytest.raises(UnsendableValueError, match="binary"):
        normalise(value)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_integral_float_decimal_and_int_agree(number: int) -> None:
    # A column read as float on one database and Decimal on another must not look changed.
    expected = str(number)
    assert normalise(float(number)) == expected
    assert normalise(Decimal(number)) == expected
    assert normalise(Decimal(number).scaleb(2).scaleb(-2)) == expected
    assert normalise(Decimal(f"{number}.000")) == expected


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-8, max_value=8),
    st.integers(min_value=1, max_value=4),
)
def test_trailing_zeros_and_exponents_do_not_change_the_string(
    mantissa: int, exponent: int, zeros: int
) -> None:
    value = Decimal(mantissa).scaleb(exponent)
    sign, digits, exp = value.as_tuple()
    assert isinstance(exp, int)
    padded = Decimal((sign, (*digits, *([0] * zeros)), exp - zeros))
    assert padded == value
    assert normalise(padded) == normalise(value)
    assert "E" not in (normalise(value) or "").upper()
    assert Decimal(normalise(value) or "") == value


@given(st.datetimes(timezones=st.timezones()))
def test_aware_datetimes_of_one_instant_normalise_equal(moment: datetime) -> None:
    assert normalise(moment) == normalise(moment.astimezone(UTC))


# -- plan_update ----------------------------------------------------------------------------


def test_plan_holds_only_the_differing_attributes() -> None:
    desired = {"Phone": "111", "mx_City": "Goa", "mx_Plan": "pro"}
    pushed = {"Phone": "111", "mx_City": "Pune", "mx_Plan": "free"}
    attributes = frozenset(desired)
    assert plan_update(desired, pushed, attributes) == {"mx_City": "Goa", "mx_Plan": "pro"}


def test_plan_holds_only_mapped_attributes() -> None:
    desired = {"Phone": "111", "mx_Old": "x"}
    assert plan_update(desired, {}, frozenset({"Phone"})) == {"Phone": "111"}


def test_never_pushed_lead_gets_every_non_empty_value() -> None:
    desired = {"Phone": "111", "mx_City": None}
    assert plan_update(desired, {}, frozenset(desired)) == {"Phone": "111"}


def test_none_desired_equals_a_missing_pushed_value() -> None:
    # None means "empty", which a never-pushed attribute already is: nothing to send.
    assert plan_update({"mx_City": None}, {}, frozenset({"mx_City"})) == {}


def test_clearing_a_pushed_value_sends_none() -> None:
    plan = plan_update({"mx_City": None}, {"mx_City": "Pune"}, frozenset({"mx_City"}))
    assert plan == {"mx_City": None}


def test_value_set_back_to_the_pushed_one_sends_nothing() -> None:
    assert plan_update({"mx_City": "Pune"}, {"mx_City": "Pune"}, frozenset({"mx_City"})) == {}


ATTRIBUTE_POOL = ["Phone", "EmailAddress", "mx_City", "mx_Plan", "mx_Score", "mx_Old"]
values_st = st.dictionaries(
    st.sampled_from(ATTRIBUTE_POOL), st.none() | st.text(max_size=5), max_size=len(ATTRIBUTE_POOL)
)
attributes_st = st.frozensets(st.sampled_from(ATTRIBUTE_POOL))


@given(values_st, attributes_st)
def test_plan_against_itself_is_empty(
    desired: dict[str, str | None], attrs: frozenset[str]
) -> None:
    assert plan_update(desired, dict(desired), attrs) == {}


@given(values_st, values_st, attributes_st)
def test_applying_the_plan_reaches_the_desired_values(
    desired: dict[str, str | None], pushed: dict[str, str | None], attrs: frozenset[str]
) -> None:
    after = {**pushed, **plan_update(desired, pushed, attrs)}
    for attribute in attrs & desired.keys():
        assert after.get(attribute) == desired[attribute]
    assert plan_update(desired, after, attrs) == {}


@given(values_st, values_st, attributes_st)
def test_plan_never_holds_an_unmapped_attribute(
    desired: dict[str, str | None], pushed: dict[str, str | None], attrs: frozenset[str]
) -> None:
    assert plan_update(desired, pushed, attrs).keys() <= attrs


@given(values_st, values_st, attributes_st)
def test_plan_never_resends_an_unchanged_value(
    desired: dict[str, str | None], pushed: dict[str, str | None], attrs: frozenset[str]
) -> None:
    for attribute, value in plan_update(desired, pushed, attrs).items():
        assert pushed.get(attribute) != value


# -- to_payload and storage -----------------------------------------------------------------


def test_payload_sends_none_as_empty_string_sorted_by_attribute() -> None:
    payload = to_payload({"mx_City": None, "Phone": "111", "EmailAddress": "a@b.c"})
    assert payload == [
        {"Attribute": "EmailAddress", "Value": "a@b.c"},
        {"Attribute": "Phone", "Value": "111"},
        {"Attribute": "mx_City", "Value": ""},
    ]


def test_empty_update_gives_empty_payload() -> None:
    assert to_payload({}) == []


@given(values_st)
def test_payload_values_are_always_strings(update: dict[str, str | None]) -> None:
    payload = to_payload(update)
    assert [field["Attribute"] for field in payload] == sorted(update)
    assert all(isinstance(field["Value"], str) for field in payload)


@given(values_st)
def test_stored_values_round_trip(values: dict[str, str | None]) -> None:
    assert loads(dumps(values)) == values


def test_loads_refuses_what_is_not_an_object() -> None:
    with pytest.raises((TypeError, ValueError), match="not a JSON object"):
        loads("[1, 2]")


# -- exact numbers, whatever the decimal context ---------------------------------------------

THIRTY_EIGHT_DIGITS = "1234567890123456789012345678901234.5678"


def test_a_38_digit_numeric_is_spelled_exactly() -> None:
    assert normalise(Decimal(THIRTY_EIGHT_DIGITS)) == THIRTY_EIGHT_DIGITS


def test_a_change_in_the_last_of_38_digits_is_a_different_value() -> None:
    changed = THIRTY_EIGHT_DIGITS[:-1] + "9"
    assert normalise(Decimal(changed)) == changed
    assert normalise(Decimal(changed)) != normalise(Decimal(THIRTY_EIGHT_DIGITS))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("123.456789"), "123.456789"),
        (Decimal("12.50"), "12.5"),
        (Decimal("1.5E+7"), "15000000"),
        (Decimal(THIRTY_EIGHT_DIGITS), THIRTY_EIGHT_DIGITS),
        (123.456789, "123.456789"),
        (0.1, "0.1"),
    ],
    ids=repr,
)
def test_a_low_context_precision_changes_nothing(value: Any, expected: str) -> None:
    with localcontext(prec=5):
        assert normalise(value) == expected


@given(
    st.integers(min_value=-(10**20 - 1), max_value=10**20 - 1),  # at most 38 digits in all
    st.integers(min_value=-18, max_value=18),
    st.integers(min_value=1, max_value=27),
)
def test_normalising_is_exact_under_any_context(
    mantissa: int, exponent: int, precision: int
) -> None:
    value = Decimal(f"{mantissa}E{exponent}")  # exact: construction never rounds
    with localcontext(prec=precision):
        text = normalise(value)
    assert text is not None
    assert "E" not in text.upper()
    assert Decimal(text) == value


# -- numbers LeadSquared cannot store are held back, never sent ------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Decimal("NaN"), "not a number"),
        (Decimal("sNaN"), "not a number"),
        (Decimal("Infinity"), "infinite"),
        (Decimal("-Infinity"), "infinite"),
        (float("nan"), "not a number"),
        (float("inf"), "infinite"),
        (float("-inf"), "infinite"),
        (1e300, "more than 38 digits"),
        (5e-324, "more than 38 digits"),
        (10**38, "more than 38 digits"),
        (-(10**38), "more than 38 digits"),
        (Decimal("1E+38"), "more than 38 digits"),
        (Decimal("1E-39"), "more than 38 digits"),
        (Decimal("1.000000000000000000000000000000000000001"), "more than 38 digits"),
        (Decimal("1E+999999999"), "more than 38 digits"),
    ],
    ids=repr,
)
def test_a_number_leadsquared_cannot_store_is_refused(value: Any, reason: str) -> None:
    with pytest.raises(UnsendableValueError, match=reason):
        normalise(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10**38 - 1, "9" * 38),
        (-(10**38 - 1), "-" + "9" * 38),
        (Decimal("1E+37"), "1" + "0" * 37),
        (Decimal("1E-38"), "0." + "0" * 37 + "1"),
        (Decimal("-0.1000000000000000000000000000000000000000"), "-0.1"),
        (1e37, "1" + "0" * 37),
    ],
    ids=repr,
)
def test_numbers_of_up_to_38_digits_are_sent(value: Any, expected: str) -> None:
    assert normalise(value) == expected


# -- every type a driver hands back: a defined spelling, or held back; never a repr ----------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["trial", "à-la-carte"], '["trial","à-la-carte"]'),
        ([1, None, Decimal("2.50"), ""], '["1",null,"2.5",""]'),
        ([[1, 2], [3, 4]], '[["1","2"],["3","4"]]'),
        ([], "[]"),
        (("1", "a"), '["1","a"]'),
        ([date(2016, 3, 26), True], '["2016-03-26","true"]'),
        (['say "hi"\n'], '["say \\"hi\\"\\n"]'),
        ({"b": 1, "a": "é", "c": [1.5, None, False]}, '{"a":"é","b":1,"c":[1.5,null,false]}'),
        ([{"b": 2, "a": 1}], '[{"a":1,"b":2}]'),
        (ipaddress.ip_address("192.168.0.1"), "192.168.0.1"),
        (ipaddress.ip_address("2001:db8::1"), "2001:db8::1"),
        (ipaddress.ip_interface("10.1.2.3/24"), "10.1.2.3/24"),
        (ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
        (time(9, 0, tzinfo=IST), "03:30:00"),
        (date(1, 1, 1), "0001-01-01"),
        (datetime(999, 12, 31, 23, 59, 59), "0999-12-31 23:59:59"),
        (Plan.GOLD, "gold"),
    ],
    ids=repr,
)
def test_structured_and_other_values_have_one_defined_spelling(value: Any, expected: str) -> None:
    assert normalise(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (timedelta(days=32), "intervals"),
        (Range(1, 5), "values of type 'Range'"),
        (object(), "values of type 'object'"),
        ([b"\x00"], "binary"),
        ([1.5, float("nan")], "not a number"),
        ({"a": float("inf")}, "infinite"),
        ({1: "a"}, "JSON object keys"),
        ("a\x00b", "NUL"),
        (["a\x00b"], "NUL"),
        (datetime(1, 1, 1, tzinfo=IST), "out of range"),
    ],
    ids=repr,
)
def test_values_without_a_defined_spelling_are_refused(value: Any, reason: str) -> None:
    with pytest.raises(UnsendableValueError, match=reason):
        normalise(value)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ('{"b": 1, "a": [1.50, "x"]}', '{"a":[1.50,"x"],"b":1}'),
        ('{"a": 1.0000000000000000000001, "n": 12345678901234567890123}', None),
        ('"abc"', '"abc"'),
        ("null", "null"),
        ("  [ ]  ", "[]"),
        ('{"é": "ü\\u00e9", "t": "\\u0000"}', '{"t":"\\u0000","é":"üé"}'),
        ("", None),
        (5, "5"),
        (1.5, "1.5"),
        (None, None),
    ],
    ids=repr,
)
def test_json_text_is_sent_compact_with_sorted_keys_and_exact_numbers(
    stored: Any, expected: str | None
) -> None:
    if stored is not None and expected is None and stored != "":
        expected = stored.replace(": ", ":").replace(", ", ",")  # numbers kept digit for digit
    assert normalise_json(stored) == expected


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("not json", "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ("[Infinity]", "not valid JSON"),
        ('"\\ud800"', "lone surrogate"),
        ("[" * 100_000, "not valid JSON"),
        (b"{}", "binary"),
        (float("nan"), "not a number"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_json_that_is_not_json_is_refused(stored: Any, reason: str) -> None:
    with pytest.raises(UnsendableValueError, match=reason):
        normalise_json(stored)


def test_an_array_of_json_keeps_every_digit_and_nests_rows() -> None:
    elements = ['{"b": 1, "a": [2.50]}', None, '"s"', "12345678901234567890.123", ["1.0"]]
    expected = '[{"a":[2.50],"b":1},null,"s","12345678901234567890.123",["1.0"]]'
    assert normalise_json_array(elements) == expected
    assert normalise_json_array(None) is None


@pytest.mark.parametrize(
    ("stored", "expected"), [(1, "true"), (0, "false"), (None, None)], ids=repr
)
def test_a_sqlite_boolean_stored_as_1_or_0_is_true_or_false(
    stored: Any, expected: str | None
) -> None:
    assert normalise_sqlite_boolean(stored) == expected


@pytest.mark.parametrize("stored", ["f", "false", "true", 2, -1, 0.5, b"\x01"], ids=repr)
def test_any_other_sqlite_boolean_is_refused(stored: Any) -> None:
    with pytest.raises(UnsendableValueError, match="a boolean must be stored as 0 or 1"):
        normalise_sqlite_boolean(stored)


def test_an_array_nested_deeper_than_python_recurses_is_refused() -> None:
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(UnsendableValueError, match="an array nested too deeply"):
        normalise(nested)
    with pytest.raises(UnsendableValueError, match="an array nested too deeply"):
        normalise_json_array(["[" * 500 + "]" * 500])


def test_an_array_holding_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UnsendableValueError, match="an array holding a lone surrogate"):
        normalise_json_array(['"\\ud800"'])
