"""connector.fields: the account's lead fields, and shaping values for them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from connector.fields import (
    DataType,
    LeadField,
    LeadFields,
    MetadataError,
    Refusal,
    Rule,
    parse_metadata,
    shape,
    shape_update,
)
from connector.testing.emulator import schema as emulator
from connector.values import UnsendableValueError, normalise

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")

TEXT = LeadField("mx_Notes")
NUMBER = LeadField("mx_Seats", "Number")
DATE = LeadField("mx_Renewal", "Date")
TIME = LeadField("mx_CallAt", "Time")
BOOLEAN = LeadField("mx_Active", "Boolean")
PLAN = LeadField("mx_Plan", "Select", options=("Gold", "Silver", "Bronze"))


def refused(shaped: str | Refusal, rule: Rule) -> Refusal:
    assert isinstance(shaped, Refusal), f"expected a refusal, got {shaped!r}"
    assert shaped.rule is rule, shaped
    return shaped


# --- Empty values ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*DataType, "MultiSelect"])
@pytest.mark.parametrize("value", [None, ""])
def test_an_empty_value_clears_a_field_of_any_type(kind: str, value: str | None) -> None:
    assert shape(value, LeadField("mx_F", kind, options=("A",))) == ""


@pytest.mark.parametrize("kind", [*DataType, "MultiSelect"])
@pytest.mark.parametrize("value", [None, ""])
def test_an_empty_value_is_refused_for_a_mandatory_field(kind: str, value: str | None) -> None:
    field = LeadField("mx_F", kind, options=("A",), mandatory=True)
    message = refused(shape(value, field), Rule.MANDATORY_CLEARED).message
    assert message == "an empty value would clear the field, which the account marks mandatory"


def test_a_mandatory_field_still_takes_a_value() -> None:
    assert shape("Gold", LeadField("mx_Plan", "Select", options=("Gold",), mandatory=True)) == (
        "Gold"
    )


# --- Unknown attributes ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["London", "", None])
def test_an_attribute_without_a_field_is_refused(value: str | None) -> None:
    message = refused(shape(value, None), Rule.UNKNOWN_ATTRIBUTE).message
    assert "the account has no lead field of this name" in message
    assert message.startswith("'London'" if value else "an empty value")


# --- Text, Email, Phone, Website and unknown types -------------------------------------


@pytest.mark.parametrize("kind", ["Text", "Email", "Phone", "Website", "Textarea", "DateTime"])
@pytest.mark.parametrize("value", ["  spaced  ", "not an email", "é😀", "1e3", "2024-03-01"])
def test_text_like_types_send_the_value_as_it_is(kind: str, value: str) -> None:
    assert shape(value, LeadField("mx_F", kind)) == value


def test_text_up_to_max_length_passes_and_one_more_character_is_too_long() -> None:
    field = LeadField("mx_City", "Text", max_length=5)
    assert shape("abcde", field) == "abcde"
    message = refused(shape("abcdef", field), Rule.TOO_LONG).message
    assert message == "'abcdef' is 6 characters, longer than the field's MaxLength of 5"


def test_max_length_counts_utf16_units_as_leadsquared_does() -> None:
    field = LeadField("mx_City", "Text", max_length=4)
    assert shape("😀😀", field) == "😀😀"  # two characters, four units
    message = refused(shape("a😀😀", field), Rule.TOO_LONG).message
    assert message == (
        "'a😀😀' is 5 characters as LeadSquared counts them (in UTF-16), longer than the "
        "field's MaxLength of 4"
    )


def test_a_refusal_shows_a_long_value_shortened() -> None:
    message = refused(shape("x" * 312, LeadField("mx_F", max_length=200)), Rule.TOO_LONG).message
    assert message == (
        f"{'x' * 57!r}... is 312 characters, longer than the field's MaxLength of 200"
    )


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("abcdef", 4, "abcd"),
        ("abcd", 4, "abcd"),
        ("é" * 10, 3, "ééé"),
        ("ab😀c", 3, "ab"),  # the emoji's two units do not both fit: never half of it
        ("ab😀c", 4, "ab😀"),
        ("😀😀😀", 5, "😀😀"),
    ],
)
def test_truncate_cuts_text_to_max_length(value: str, limit: int, expected: str) -> None:
    assert shape(value, LeadField("mx_F", max_length=limit), truncate=True) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (LeadField("mx_N", "Number", max_length=3), "12345"),
        (LeadField("mx_D", "Date", max_length=10), "2024-03-01"),
        (LeadField("mx_T", "Time", max_length=5), "10:00"),
        (LeadField("mx_B", "Boolean", max_length=4), "false"),
        (LeadField("mx_S", "Select", max_length=3, options=("Gold",)), "Gold"),
    ],
)
def test_truncate_never_cuts_a_typed_value(field: LeadField, value: str) -> None:
    refused(shape(value, field, truncate=True), Rule.TOO_LONG)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@given(st.text(), st.integers(min_value=1, max_value=20))
def test_truncated_text_is_the_longest_start_that_fits(text: str, limit: int) -> None:
    shaped = shape(text, LeadField("mx_F", max_length=limit), truncate=True)
    assert isinstance(shaped, str)
    assert text.startswith(shaped)
    assert _utf16_units(shaped) <= limit
    assert shaped == text or _utf16_units(text[: len(shaped) + 1]) > limit


# --- Number ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", "42"),
        ("-0.125", "-0.125"),
        ("1.50", "1.5"),
        ("+7", "7"),
        (" 12 ", "12"),
        ("1e3", "1000"),
        ("1.5E+2", "150"),
        ("25e-3", "0.025"),
        ("-0", "0"),
        ("0.000", "0"),
        (".5", "0.5"),
        ("5.", "5"),
        ("9" * 38, "9" * 38),
    ],
)
def test_a_number_is_sent_as_a_plain_decimal(value: str, expected: str) -> None:
    assert shape(value, NUMBER) == expected


@pytest.mark.parametrize(
    "value",
    ["1,234", "NaN", "nan", "inf", "-Infinity", "   ", "12abc", "1e", "--1", "0x1A", "١٢٣", "½"],
)
def test_text_that_is_not_a_number_is_refused(value: str) -> None:
    message = refused(shape(value, NUMBER), Rule.NOT_A_NUMBER).message
    assert message == f"{value!r} is not a number"


@pytest.mark.parametrize("value", ["9" * 39, "1e38", "1e-39", "1e999999999999999999999999"])
def test_a_number_of_more_than_38_digits_is_refused(value: str) -> None:
    message = refused(shape(value, NUMBER), Rule.NOT_A_NUMBER).message
    assert message.endswith("is a number of more than 38 digits, which is not sent")


@given(st.decimals(allow_nan=False, allow_infinity=False) | st.integers())
def test_a_canonical_number_is_sent_unchanged(number: Decimal | int) -> None:
    try:
        canonical = normalise(number)
    except UnsendableValueError:  # more than 38 digits: no canonical spelling
        return
    assert canonical is not None
    assert shape(canonical, NUMBER) == canonical


# --- Date --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2016-03-26 14:15:00", "2016-03-26 08:45:00"),  # no offset: in the source zone
        ("2024-03-01", "2024-03-01 00:00:00"),
        ("0001-01-01", "0001-01-01 00:00:00"),
        ("2024-03-01T10:00:00Z", "2024-03-01 10:00:00"),
        ("2024-03-01t10:00:00z", "2024-03-01 10:00:00"),
        ("2024-03-01T10:00Z", "2024-03-01 10:00:00"),
        ("2024-03-01T10:00:00.999999Z", "2024-03-01 10:00:00"),
        ("2024-03-01 10:00:00,5+00:00", "2024-03-01 10:00:00"),
        ("2024-03-01T10:00:00+05:30", "2024-03-01 04:30:00"),
        ("2024-03-01T10:00:00+0530", "2024-03-01 04:30:00"),
        ("2024-03-01T01:00:00-05", "2024-03-01 06:00:00"),
        ("2024-03-01T02:00:00+05:30", "2024-02-29 20:30:00"),
        ("  2024-03-01T10:00:00Z  ", "2024-03-01 10:00:00"),
    ],
)
def test_a_date_is_sent_in_utc(value: str, expected: str) -> None:
    assert shape(value, DATE, timezone=KOLKATA) == expected


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        ("2024-01-15T12:00:00", LONDON, "2024-01-15 12:00:00"),  # GMT
        ("2024-07-15T12:00:00", LONDON, "2024-07-15 11:00:00"),  # BST
        ("2024-01-15 12:00", NEW_YORK, "2024-01-15 17:00:00"),  # EST
        ("2024-07-15 12:00", NEW_YORK, "2024-07-15 16:00:00"),  # EDT
        ("2024-07-15T12:00:00.5", KOLKATA, "2024-07-15 06:30:00"),
        ("2024-01-01T03:00:00", KOLKATA, "2023-12-31 21:30:00"),
        ("2024-03-31T00:59:59", LONDON, "2024-03-31 00:59:59"),  # just before the change
        ("2024-03-31T02:00:00", LONDON, "2024-03-31 01:00:00"),  # just after it
        ("2024-03-01T10:00:00", timezone(timedelta(hours=-3)), "2024-03-01 13:00:00"),
    ],
)
def test_a_date_and_time_without_offset_is_read_in_the_source_zone(
    value: str, zone: ZoneInfo, expected: str
) -> None:
    assert shape(value, DATE, timezone=zone) == expected


@pytest.mark.parametrize(
    ("value", "zone"),
    [
        ("2024-03-31T01:30:00", LONDON),  # skipped: clocks go forward at 01:00
        ("2024-10-27T01:30:00", LONDON),  # twice: clocks go back at 02:00
        ("2024-03-10 02:30", NEW_YORK),
        ("2024-11-03 01:30", NEW_YORK),
    ],
)
def test_a_local_time_that_is_not_one_moment_is_refused(value: str, zone: ZoneInfo) -> None:
    message = refused(shape(value, DATE, timezone=zone), Rule.NOT_A_DATE).message
    assert message == (
        f"{value!r} is not one moment in the source's time zone (a daylight-saving change "
        "skips or repeats it)"
    )


def test_the_source_zone_moves_a_date_time_without_offset_but_not_a_date_alone() -> None:
    # Date and time columns are spelled in UTC by ingest and shaped with UTC (preflight);
    # text in the same form is the source's local time.
    assert shape("2024-07-15 12:00:00", DATE, timezone=NEW_YORK) == "2024-07-15 16:00:00"
    assert shape("2024-07-15 12:00:00", DATE) == "2024-07-15 12:00:00"
    assert shape("2024-07-15", DATE, timezone=KOLKATA) == "2024-07-15 00:00:00"
    # ...but an offset always counts.
    assert shape("2024-07-15 12:00:00Z", DATE, timezone=NEW_YORK) == "2024-07-15 12:00:00"
    assert shape("2024-07-15 12:00:00-04:00", DATE, timezone=KOLKATA) == "2024-07-15 16:00:00"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("01/03/2024", "is not a date (YYYY-MM-DD, or an ISO 8601 date and time)"),
        ("2024-3-1", "is not a date (YYYY-MM-DD, or an ISO 8601 date and time)"),
        ("2024-03-01T", "is not a date (YYYY-MM-DD, or an ISO 8601 date and time)"),
        ("2024-03-01Z", "is not a date (YYYY-MM-DD, or an ISO 8601 date and time)"),
        ("20240301", "is not a date (YYYY-MM-DD, or an ISO 8601 date and time)"),
        ("tomorrow", "is not a date (YYYY-MM-DD, or an ISO 8601 date and time)"),
        ("2024-02-30", "is not a date on the calendar"),
        ("0000-01-01", "is not a date on the calendar"),
        ("2024-03-01 24:00:00", "is not a date on the calendar"),
        ("2024-03-01 23:59:60", "is not a date on the calendar"),
        ("2024-03-01T10:00+24:00", "has no valid UTC offset"),
        ("2024-03-01T10:00+05:60", "has no valid UTC offset"),
        ("9999-12-31T23:00:00-05:00", "is out of range once in UTC"),
        ("0001-01-01T01:00:00+05:30", "is out of range once in UTC"),
    ],
)
def test_a_value_that_is_not_a_date_is_refused(value: str, message: str) -> None:
    assert refused(shape(value, DATE), Rule.NOT_A_DATE).message == f"{value!r} {message}"


@given(st.datetimes(timezones=st.timezones()), st.sampled_from(["T", " "]))
def test_an_iso_date_with_offset_is_sent_as_values_normalise_spells_it(
    moment: datetime, separator: str
) -> None:
    offset = moment.utcoffset()
    assume(offset is not None and offset.seconds % 60 == 0)  # ISO 8601 offsets are minutes
    try:
        expected = normalise(moment)
    except ValueError:  # out of range once in UTC
        expected = None
    text = moment.isoformat(separator)
    shaped = shape(text, DATE)
    if expected is None:
        refused(shaped, Rule.NOT_A_DATE)
    else:
        assert shaped == expected


@given(st.datetimes(), st.timezones())
def test_a_local_time_sent_reads_back_as_the_same_local_time(
    naive: datetime, zone: ZoneInfo
) -> None:
    shaped = shape(naive.isoformat(), DATE, timezone=zone)
    if isinstance(shaped, Refusal):
        assert shaped.rule is Rule.NOT_A_DATE
        assert shaped.message.endswith(("out of range once in UTC", "skips or repeats it)"))
        return
    sent = datetime.strptime(shaped, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert sent.astimezone(zone).replace(tzinfo=None) == naive.replace(microsecond=0)


# --- Time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("14:15:00", "14:15:00"),
        ("14:15", "14:15:00"),
        ("9:05", "09:05:00"),
        ("00:00", "00:00:00"),
        ("23:59:59.999", "23:59:59"),
        (" 07:30 ", "07:30:00"),
    ],
)
def test_a_time_is_sent_as_hh_mm_ss(value: str, expected: str) -> None:
    assert shape(value, TIME) == expected


@pytest.mark.parametrize(
    "value", ["24:00", "12:60", "12:00:60", "1200", "12", "12:5", "noon", "12:00 PM", "T12:00"]
)
def test_a_value_that_is_not_a_time_is_refused(value: str) -> None:
    message = refused(shape(value, TIME), Rule.NOT_A_TIME).message
    assert message == f"{value!r} is not a time of day (HH:MM or HH:MM:SS)"


@given(st.times())
def test_a_canonical_time_is_sent_unchanged(moment: time) -> None:
    canonical = normalise(moment)
    assert canonical is not None
    assert shape(canonical, TIME) == canonical


# --- Boolean -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(word, "true") for word in ("true", "TRUE", "True", "t", "T", "yes", "Y", "1")],
        *[(word, "false") for word in ("false", "FALSE", "f", "No", "n", "0", " false ")],
    ],
)
def test_a_boolean_is_sent_as_true_or_false(value: str, expected: str) -> None:
    assert shape(value, BOOLEAN) == expected


@pytest.mark.parametrize("value", ["2", "on", "off", "truthy", "yess", "-1", "1.0", "null"])
def test_a_value_that_is_not_a_boolean_is_refused(value: str) -> None:
    message = refused(shape(value, BOOLEAN), Rule.NOT_A_BOOLEAN).message
    assert message == f"{value!r} is not a boolean (true/false, yes/no, y/n, t/f or 1/0)"


# --- Select ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Gold", "Gold"), ("gold", "Gold"), ("SILVER", "Silver"), ("  bronze ", "Bronze")],
)
def test_a_select_value_is_sent_as_the_option_exactly(value: str, expected: str) -> None:
    assert shape(value, PLAN) == expected


def test_case_folding_matches_beyond_ascii() -> None:
    field = LeadField("mx_Street", "Select", options=("Straße", "Öl"))
    assert shape("STRASSE", field) == "Straße"
    assert shape("öl", field) == "Öl"


def test_a_value_that_is_not_an_option_is_refused_naming_some_options() -> None:
    message = refused(shape("Platinum", PLAN), Rule.NOT_AN_OPTION).message
    assert message == "'Platinum' is not one of the field's options (Gold, Silver, Bronze)"
    many = LeadField("mx_Size", "Select", options=tuple("ABCDEFG"))
    message = refused(shape("Z", many), Rule.NOT_AN_OPTION).message
    assert message == "'Z' is not one of the field's options (A, B, C, D, E, ...)"


def test_options_that_differ_only_in_case_are_matched_exactly_or_refused() -> None:
    field = LeadField("mx_Code", "Select", options=("ab", "AB", "Cd"))
    assert shape("ab", field) == "ab"
    assert shape("AB", field) == "AB"
    assert shape("cd", field) == "Cd"
    message = refused(shape("Ab", field), Rule.NOT_AN_OPTION).message
    assert message == (
        "'Ab' matches more than one of the field's options when case is ignored (ab, AB)"
    )


def test_a_select_without_known_options_sends_the_value_as_it_is() -> None:
    assert shape(" Platinum ", LeadField("mx_Plan", "Select")) == " Platinum "


def test_a_blank_option_is_never_chosen() -> None:
    field = LeadField("mx_Plan", "Select", options=(" ", "Gold"))
    refused(shape("  ", field), Rule.NOT_AN_OPTION)


def test_a_select_is_not_matched_on_a_non_select_field() -> None:
    # Options on another type (as LeadsMetaData.Get may list for them) do not restrict it.
    assert shape("other", LeadField("mx_F", "Text", options=("Gold",))) == "other"


# --- The data type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "kind"),
    [
        ("Number", DataType.NUMBER),
        ("number", DataType.NUMBER),
        (" Boolean ", DataType.BOOLEAN),
        ("DateTime", DataType.TEXT),
        ("LargeOptionSet", DataType.TEXT),
        ("", DataType.TEXT),
    ],
)
def test_the_data_type_decides_the_kind_and_unknown_types_are_text(
    data_type: str, kind: DataType
) -> None:
    assert LeadField("mx_F", data_type).kind is kind


@pytest.mark.parametrize("max_length", [0, -1])
def test_a_field_cannot_have_a_max_length_below_one(max_length: int) -> None:
    with pytest.raises(ValueError, match="max_length"):
        LeadField("mx_F", max_length=max_length)


# --- shape_update ------------------------------------------------------------------------

FIELDS = LeadFields(
    (
        LeadField("mx_City", "Text", max_length=5),
        LeadField("mx_Seats", "Number"),
        PLAN,
        LeadField("mx_Since", "Date"),
    )
)


def test_shape_update_splits_the_update_into_wire_values_and_refusals() -> None:
    send, refusals = shape_update(
        {
            "mx_City": "London",
            "mx_Seats": "+3",
            "mx_Plan": "platinum",
            "mx_since": "2024-03-01",
            "mx_Since": "2024-07-15T12:00:00",
        },
        FIELDS,
        truncate=frozenset({"mx_City"}),
        timezone=LONDON,
    )
    assert send == {"mx_City": "Londo", "mx_Seats": "3", "mx_Since": "2024-07-15 11:00:00"}
    assert {name: refusal.rule for name, refusal in refusals.items()} == {
        "mx_Plan": Rule.NOT_AN_OPTION,
        "mx_since": Rule.UNKNOWN_ATTRIBUTE,
    }
    assert refusals["mx_since"].message == (
        "'2024-03-01' cannot be sent: the account has no lead field of this name "
        "(did you mean 'mx_Since'?)"
    )


def test_shape_update_truncates_only_the_attributes_named() -> None:
    send, refusals = shape_update({"mx_City": "London", "mx_Seats": "1"}, FIELDS)
    assert send == {"mx_Seats": "1"}
    assert refusals["mx_City"].rule is Rule.TOO_LONG


def test_a_refusal_names_only_its_own_value() -> None:
    update = {"mx_Plan": "Platinum", "mx_City": "secret-elsewhere", "mx_Seats": "many"}
    _, refusals = shape_update(update, FIELDS)
    for attribute, refusal in refusals.items():
        others = [value for name, value in update.items() if name != attribute]
        assert not any(other in refusal.message for other in others), refusal


def test_shape_update_clears_with_an_empty_string() -> None:
    assert shape_update({"mx_City": None, "mx_Seats": ""}, FIELDS) == (
        {"mx_City": "", "mx_Seats": ""},
        {},
    )


# --- LeadFields --------------------------------------------------------------------------


def test_lead_fields_are_a_mapping_by_exact_schema_name() -> None:
    fields = LeadFields((LeadField("mx_City"), LeadField("mx_CITY"), LeadField("Phone")))
    assert list(fields) == ["mx_City", "mx_CITY", "Phone"]
    assert len(fields) == 3
    assert fields["mx_City"] == LeadField("mx_City")
    assert "mx_city" not in fields
    assert fields.get("mx_city") is None
    assert fields.ignoring_case("MX_city") == ("mx_City", "mx_CITY")
    assert fields.ignoring_case("Mobile") == ()


def test_lead_fields_name_each_field_once() -> None:
    with pytest.raises(MetadataError, match="listed once"):
        LeadFields((LeadField("mx_City"), LeadField("mx_City", "Number")))


# --- parse_metadata ----------------------------------------------------------------------


def test_metadata_is_parsed_into_fields() -> None:
    body = [
        {
            "SchemaName": "mx_Plan",
            "DisplayName": "Plan",
            "DataType": "Select",
            "IsMandatory": True,
            "MaxLength": "200",
            "Options": [{"Value": "Gold"}, {"Text": "Silver tier", "Value": "Silver"}],
        },
        {"SchemaName": "mx_Seats", "DataType": "Number", "IsMandatory": "false"},
        {"SchemaName": "EmailAddress", "DataType": "Email", "MaxLength": "", "IsMandatory": False},
    ]
    fields = parse_metadata(body)
    assert fields == LeadFields(
        (
            LeadField("mx_Plan", "Select", 200, ("Gold", "Silver"), mandatory=True),
            LeadField("mx_Seats", "Number"),
            LeadField("EmailAddress", "Email"),
        )
    )
    assert fields.warnings == ()


def test_the_emulators_metadata_parses_back_into_the_same_fields() -> None:
    lead_schema = emulator.LeadSchema(
        (
            emulator.LeadField("mx_Plan", "Select", 20, ("Gold", "Silver"), mandatory=True),
            emulator.LeadField("mx_Seats", "Number"),
            emulator.LeadField("FirstName", max_length=100),
        )
    )
    fields = parse_metadata([f.metadata() for f in lead_schema.fields])
    assert fields == LeadFields(
        (
            LeadField("mx_Plan", "Select", 20, ("Gold", "Silver"), mandatory=True),
            LeadField("mx_Seats", "Number"),
            LeadField("FirstName", max_length=100),
        )
    )
    without_options = parse_metadata([f.metadata(with_options=False) for f in lead_schema.fields])
    assert without_options["mx_Plan"].options == ()


def test_an_empty_list_is_an_account_without_fields() -> None:
    assert parse_metadata([]) == LeadFields()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (None, "null"),
        ({"Status": "Error", "ExceptionMessage": "x"}, "an object"),
        ("[]", "text"),
        (42, "a number"),
        (True, "true or false"),
        ((), "a tuple"),
    ],
)
def test_a_body_that_is_not_a_list_is_refused(body: object, kind: str) -> None:
    with pytest.raises(MetadataError) as caught:
        parse_metadata(body)
    assert str(caught.value) == f"LeadsMetaData.Get's answer is not a list of fields but {kind}"


def test_entries_without_a_schema_name_are_refused_naming_where() -> None:
    body: list[Any] = [
        {"SchemaName": "mx_A"},
        None,
        {"DataType": "Text"},
        {"SchemaName": ""},
        {"SchemaName": 7},
        "mx_B",
        [],
        {"SchemaName": None},
    ]
    with pytest.raises(MetadataError) as caught:
        parse_metadata(body)
    assert str(caught.value) == (
        "LeadsMetaData.Get's answer has 7 of 8 entries without a SchemaName "
        "(at positions 1, 2, 3, 4, 5, ...)"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("200", 200),
        (" 200 ", 200),
        ("0200", 200),
        (200, 200),
        (200.0, 200),
        ("", None),
        (None, None),
        ("0", None),
        (0, None),
        ("9" * 5000, None),
    ],
)
def test_max_length_forms(raw: object, expected: int | None) -> None:
    fields = parse_metadata([{"SchemaName": "mx_F", "DataType": "Text", "MaxLength": raw}])
    assert fields["mx_F"].max_length == expected
    assert fields.warnings == ()


def test_a_missing_max_length_is_no_limit() -> None:
    assert parse_metadata([{"SchemaName": "mx_F", "DataType": "Text"}])["mx_F"].max_length is None


@pytest.mark.parametrize("raw", ["abc", "-5", -5, "2.5", 2.5, True, [], {}, "1e3", "٣"])
def test_an_odd_max_length_is_no_limit_with_a_warning(raw: object) -> None:
    fields = parse_metadata([{"SchemaName": "mx_F", "DataType": "Text", "MaxLength": raw}])
    assert fields["mx_F"].max_length is None
    assert fields.warnings == (
        f"'mx_F' has MaxLength {raw!r}, not a whole number; taken as no limit",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(True, True), (False, False), ("true", True), (" TRUE ", True), ("False", False), (1, True)],
)
def test_is_mandatory_forms(raw: object, expected: bool) -> None:
    fields = parse_metadata([{"SchemaName": "mx_F", "DataType": "Text", "IsMandatory": raw}])
    assert fields["mx_F"].mandatory is expected
    assert fields.warnings == ()


@pytest.mark.parametrize("raw", ["yes", 2, [], "mandatory"])
def test_an_odd_is_mandatory_is_false_with_a_warning(raw: object) -> None:
    fields = parse_metadata([{"SchemaName": "mx_F", "DataType": "Text", "IsMandatory": raw}])
    assert fields["mx_F"].mandatory is False
    assert fields.warnings == (f"'mx_F' has IsMandatory {raw!r}; taken as false",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ()),
        ([], ()),
        ([{"Value": "Gold"}, {"Value": "Silver"}], ("Gold", "Silver")),
        ([{"Text": "Gold label", "Value": "Gold"}], ("Gold",)),
        ([{"Text": "Gold"}], ("Gold",)),
        (["Gold", "Silver"], ("Gold", "Silver")),
        ([{"Value": 3}, {"Value": "3"}], ("3",)),
    ],
)
def test_options_forms(raw: object, expected: tuple[str, ...]) -> None:
    fields = parse_metadata([{"SchemaName": "mx_F", "DataType": "Select", "Options": raw}])
    assert fields["mx_F"].options == expected
    assert fields.warnings == ()


def test_odd_options_are_left_out_with_a_warning() -> None:
    body = [
        {"SchemaName": "mx_F", "DataType": "Select", "Options": [{"Value": "A"}, None, 2.5]},
        {"SchemaName": "mx_G", "DataType": "Select", "Options": "A;B"},
    ]
    fields = parse_metadata(body)
    assert fields["mx_F"].options == ("A",)
    assert fields["mx_G"].options == ()
    assert fields.warnings == (
        "'mx_F' has an option that is not text: None",
        "'mx_F' has an option that is not text: 2.5",
        "'mx_G' has Options that are not a list; taken as not fetched",
    )


def test_odd_data_types_are_text_with_a_warning() -> None:
    body = [
        {"SchemaName": "mx_A", "DataType": "DateTime"},
        {"SchemaName": "mx_B"},
        {"SchemaName": "mx_C", "DataType": 3},
        {"SchemaName": "mx_D", "DataType": "number"},
    ]
    fields = parse_metadata(body)
    assert [fields[name].kind for name in fields] == [
        DataType.TEXT,
        DataType.TEXT,
        DataType.TEXT,
        DataType.NUMBER,
    ]
    assert fields["mx_A"].data_type == "DateTime"
    assert fields.warnings == (
        "'mx_A' has DataType 'DateTime', unknown here; shaped as Text",
        "'mx_B' has no DataType (None); shaped as Text",
        "'mx_C' has no DataType (3); shaped as Text",
    )


def test_a_field_listed_twice_keeps_its_first_entry() -> None:
    fields = parse_metadata(
        [
            {"SchemaName": "mx_F", "DataType": "Number"},
            {"SchemaName": "mx_F", "DataType": "Text"},
        ]
    )
    assert fields["mx_F"].kind is DataType.NUMBER
    assert fields.warnings == ("'mx_F' is listed more than once; its first entry is used",)


def test_a_huge_body_is_parsed() -> None:
    body = [
        {"SchemaName": f"mx_F{i}", "DataType": "Select", "Options": [{"Value": str(i)}] * 3}
        for i in range(50_000)
    ]
    fields = parse_metadata(body)
    assert len(fields) == 50_000
    assert fields["mx_F49999"].options == ("49999",)


def test_a_warning_shows_an_odd_value_shortened() -> None:
    fields = parse_metadata([{"SchemaName": "mx_F", "DataType": "x" * 1000}])
    (warning,) = fields.warnings
    assert len(warning) < 100


# --- The cache -------------------------------------------------------------------------

lead_fields_st = st.lists(
    st.builds(
        LeadField,
        name=st.text(min_size=1),
        data_type=st.sampled_from([*DataType, "DateTime", "Ünïcode"]),
        max_length=st.none() | st.integers(min_value=1),
        options=st.lists(st.text()).map(tuple),
        mandatory=st.booleans(),
    ),
    unique_by=lambda lead_field: lead_field.name,
).flatmap(
    lambda fields: st.builds(LeadFields, st.just(tuple(fields)), st.lists(st.text()).map(tuple))
)


@given(lead_fields_st)
def test_to_json_reads_back_as_the_same_fields(fields: LeadFields) -> None:
    assert LeadFields.from_json(fields.to_json()) == fields
    assert LeadFields.from_json(fields.to_json().encode()) == fields


def test_to_json_is_stable_text() -> None:
    fields = LeadFields((LeadField("mx_Plan", "Select", 20, ("Gold",), True),), ("odd",))
    assert json.loads(fields.to_json()) == {
        "format": 1,
        "fields": [
            {
                "name": "mx_Plan",
                "data_type": "Select",
                "max_length": 20,
                "options": ["Gold"],
                "mandatory": True,
            }
        ],
        "warnings": ["odd"],
    }


def _cache(**changes: Any) -> str:
    entry = {
        "name": "mx_F",
        "data_type": "Text",
        "max_length": None,
        "options": [],
        "mandatory": False,
    }
    entry.update(changes)
    return json.dumps({"format": 1, "fields": [entry], "warnings": []})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "the cached lead fields are not JSON"),
        ("[" * 100_000, "the cached lead fields are not JSON"),
        ("[]", "not in format 1"),
        ('{"format": 2, "fields": [], "warnings": []}', "not in format 1"),
        ('{"format": 1, "fields": {}, "warnings": []}', "lack their fields or warnings"),
        ('{"format": 1, "fields": []}', "lack their fields or warnings"),
        ('{"format": 1, "fields": [], "warnings": [1]}', "lack their fields or warnings"),
        ('{"format": 1, "fields": [3], "warnings": []}', "damaged: a field is not an object"),
        (_cache(extra=1), "damaged: a field is not an object"),
        (_cache(name=""), "damaged: field '' has a property of the wrong type"),
        (_cache(max_length=0), "damaged: field 'mx_F' has a property of the wrong type"),
        (_cache(max_length=True), "damaged: field 'mx_F' has a property of the wrong type"),
        (_cache(max_length="200"), "damaged: field 'mx_F' has a property of the wrong type"),
        (_cache(options=[1]), "damaged: field 'mx_F' has a property of the wrong type"),
        (_cache(options="A"), "damaged: field 'mx_F' has a property of the wrong type"),
        (_cache(mandatory="false"), "damaged: field 'mx_F' has a property of the wrong type"),
        (_cache(data_type=None), "damaged: field 'mx_F' has a property of the wrong type"),
    ],
)
def test_a_damaged_cache_is_refused(text: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        LeadFields.from_json(text)


def test_a_cache_naming_a_field_twice_is_refused() -> None:
    entry = {
        "name": "mx_F",
        "data_type": "Text",
        "max_length": None,
        "options": [],
        "mandatory": False,
    }
    text = json.dumps({"format": 1, "fields": [entry, entry], "warnings": []})
    with pytest.raises(MetadataError, match="damaged: each lead field must be listed once"):
        LeadFields.from_json(text)


# --- Every value sent passes the emulator's check --------------------------------------

# Email, Phone and Website are sent as they are (LeadSquared's own checks for them are not
# documented), so the emulator may refuse them: test_text_like_types_send_the_value_as_it_is.
CHECKED_TYPES = ["Text", "Number", "Date", "Time", "Select", "Boolean"]

emulator_fields = st.builds(
    lambda kind, max_length, options, mandatory: emulator.LeadField(
        "mx_F",
        kind,
        max_length,
        tuple(options) if kind == "Select" else (),
        mandatory,
    ),
    st.sampled_from(CHECKED_TYPES),
    st.none() | st.integers(min_value=1, max_value=40),
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True),
    st.booleans(),
)


def _spellings(option: str) -> st.SearchStrategy[str]:
    return st.sampled_from([option, option.upper(), option.lower(), f" {option.swapcase()} "])


def _candidates(lead_field: emulator.LeadField) -> st.SearchStrategy[str]:
    """Values of every form some data type accepts, and then some."""
    moments = st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.none() | st.timezones(),
    )
    return st.one_of(
        st.text(),
        st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: f" {d:+e} "),
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        moments.map(lambda m: m.isoformat(" ")),
        moments.map(lambda m: m.isoformat("T", timespec="minutes")),
        st.dates().map(date.isoformat),
        st.times().map(lambda t: t.isoformat(timespec="minutes")),
        st.times().map(time.isoformat),
        st.sampled_from(["TRUE", "no", "y", "0", "1", " f "]),
        *([st.sampled_from(lead_field.options).flatmap(_spellings)] if lead_field.options else []),
    )


@given(st.data(), emulator_fields, st.timezones(), st.booleans())
def test_every_value_sent_passes_the_emulators_check(
    data: st.DataObject, lead_field: emulator.LeadField, zone: ZoneInfo, truncate: bool
) -> None:
    ours = parse_metadata([lead_field.metadata()])[lead_field.name]
    value = data.draw(_candidates(lead_field))
    shaped = shape(value, ours, truncate=truncate, timezone=zone)
    if not isinstance(shaped, Refusal):
        assert lead_field.problem(shaped) is None, (value, shaped)
