"""The account's lead fields, and what a value must become for its field to accept it.

Owns the connector's model of ``LeadsMetaData.Get`` (`parse_metadata`, and the JSON the
connector caches it as) and `shape`: the one decision of what goes on the wire for an
attribute, or why it is refused before any call. Refusing here matters because LeadSquared
rejects a whole Lead.Update, valid attributes included, for one attribute it will not take.
Pure: no I/O, no clock.

Values arrive spelled as `connector.values.normalise` spells them; by DataType, what is
accepted, and what is sent:

- Text, Email, Phone, Website, and any type not listed here: any text, sent as it is.
- Number: a decimal number, optionally signed, with an exponent or not, spaces around it;
  sent in `values.plain_decimal`'s spelling (``+1.50`` and ``15e-1`` become ``1.5``).
- Date: ``YYYY-MM-DD``, sent as ``YYYY-MM-DD 00:00:00`` and not moved (a calendar date has
  no time zone); or an ISO 8601 date and time (``T`` or a space, seconds optional, a
  fraction dropped), sent in UTC as ``YYYY-MM-DD HH:MM:SS``, LeadSquared's documented form.
  A ``Z`` or an offset says where the time is. Without one, the connector's own spelling
  ``YYYY-MM-DD HH:MM:SS`` is taken as UTC (as `normalise` spells a ``timestamp`` without
  time zone too, its wall time is taken as UTC), and any other is read in the source's
  time zone; a local time that a daylight-saving change skips or repeats is refused.
- Time: ``HH:MM`` or ``HH:MM:SS`` (a fraction dropped), sent as ``HH:MM:SS``, not moved.
- Boolean: true/false, yes/no, y/n, t/f or 1/0, in any case, sent as ``true``/``false``.
- Select: one of the options, ignoring case and surrounding spaces, sent as the account
  spells the option; any value when the options were not fetched.

An empty value (None or "") clears the field, unless the field is mandatory. MaxLength is
checked on the value sent, in UTF-16 code units, as .NET and SQL Server count a string
(LeadSquared's API is WCF): a character beyond U+FFFF counts twice. Never looser than
counting characters, so a value that fits here fits either way.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as FixedOffset
from decimal import Decimal
from typing import Any, Final, TypeAlias

from connector.errors import LsqSyncError
from connector.values import MAX_DIGITS, UnsendableValueError, plain_decimal


class MetadataError(LsqSyncError, ValueError):
    """The account's lead fields cannot be read from LeadsMetaData.Get's answer or the cache."""


class DataType(enum.StrEnum):
    """The data types LeadSquared documents; a field of any other type is shaped as TEXT."""

    TEXT = "Text"
    NUMBER = "Number"
    EMAIL = "Email"
    PHONE = "Phone"
    WEBSITE = "Website"
    DATE = "Date"
    TIME = "Time"
    SELECT = "Select"
    BOOLEAN = "Boolean"


class Rule(enum.Enum):
    """Why a value is not sent."""

    UNKNOWN_ATTRIBUTE = "unknown attribute"
    NOT_AN_OPTION = "not an option"
    TOO_LONG = "too long"
    NOT_A_NUMBER = "not a number"
    NOT_A_DATE = "not a date"
    NOT_A_TIME = "not a time"
    NOT_A_BOOLEAN = "not a boolean"
    MANDATORY_CLEARED = "mandatory cleared"


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A value held back, the rule it breaks, and a message naming only the value and field."""

    rule: Rule
    message: str


# The wire value ("" clears the field), or why there is none.
Shaped: TypeAlias = str | Refusal

_KINDS: Final = {kind.value.casefold(): kind for kind in DataType}
# Only these may be cut to fit: a cut number, date or option would be another value.
_CUTTABLE: Final = frozenset({DataType.TEXT, DataType.EMAIL, DataType.PHONE, DataType.WEBSITE})

_SHOWN_CHARACTERS: Final = 60
_OPTIONS_SHOWN: Final = 5

# Stands for "two options fold alike" among the casefolded choices.
_AMBIGUOUS: Final = ""


@dataclasses.dataclass(frozen=True)
class LeadField:
    """One lead field, as LeadsMetaData.Get describes it.

    `data_type` is the account's own word for the type, `kind` how values are shaped for it.
    `max_length` None means no limit. `options` are a Select field's values: none when the
    metadata was fetched without them (``excludeOptionSets``), and then any value is sent.
    """

    name: str
    data_type: str = DataType.TEXT.value
    max_length: int | None = None
    options: tuple[str, ...] = ()
    mandatory: bool = False
    kind: DataType = dataclasses.field(init=False, repr=False, compare=False)
    # Built once per field, as shape runs per attribute per lead: option text, stripped and
    # casefolded -> the option, or _AMBIGUOUS.
    _choices: Mapping[str, str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("a field's max_length is None (no limit) or at least 1")
        object.__setattr__(
            self, "kind", _KINDS.get(self.data_type.strip().casefold(), DataType.TEXT)
        )
        object.__setattr__(self, "_choices", _fold_options(self.options))

    def shape(self, value: str | None, *, truncate: bool = False, timezone: tzinfo = UTC) -> Shaped:
        """The wire value for `value` (see the module's docstring), or why it is refused.

        `truncate` cuts text that is too long instead of refusing it (text kinds only);
        `timezone` is the one a date and time without an offset is read in.
        """
        if not value:
            if self.mandatory:
                return Refusal(
                    Rule.MANDATORY_CLEARED,
                    "an empty value would clear the field, which the account marks mandatory",
                )
            return ""
        kind = self.kind
        if kind in _CUTTABLE:
            return self._fit(value, truncate)
        if kind is DataType.SELECT:
            shaped = self._option(value)
        elif kind is DataType.NUMBER:
            shaped = _number(value)
        elif kind is DataType.DATE:
            shaped = _date(value, timezone)
        elif kind is DataType.TIME:
            shaped = _time(value)
        else:
            shaped = _boolean(value)
        if isinstance(shaped, Refusal):
            return shaped
        return self._fit(shaped, truncate=False)

    def _fit(self, value: str, truncate: bool) -> Shaped:
        limit = self.max_length
        if limit is None or len(value) * 2 <= limit:  # fits however it is counted
            return value
        units = len(value) if value.isascii() else _utf16_units(value)
        if units <= limit:
            return value
        if truncate:
            return _cut(value, limit, exact=units == len(value))
        counted = " as LeadSquared counts them (in UTF-16)" if units != len(value) else ""
        return Refusal(
            Rule.TOO_LONG,
            f"{_shown(value)} is {units} characters{counted}, longer than the field's "
            f"MaxLength of {limit}",
        )

    def _option(self, value: str) -> Shaped:
        if not self.options:
            return value
        option = self._choices.get(value.strip().casefold())
        if option:
            return option
        if option == _AMBIGUOUS:
            for candidate in (value, value.strip()):
                if candidate in self.options:
                    return candidate
            alike = [o for o in self.options if o.strip().casefold() == value.strip().casefold()]
            return Refusal(
                Rule.NOT_AN_OPTION,
                f"{_shown(value)} matches more than one of the field's options when case is "
                f"ignored ({_listed(alike)})",
            )
        return Refusal(
            Rule.NOT_AN_OPTION,
            f"{_shown(value)} is not one of the field's options ({_listed(self.options)})",
        )


@dataclasses.dataclass(frozen=True)
class LeadFields(Mapping[str, LeadField]):
    """The account's lead fields by schema name (matched exactly, as Lead.Update does), and
    what was odd in the metadata they were read from."""

    fields: tuple[LeadField, ...] = ()
    warnings: tuple[str, ...] = ()
    _by_name: dict[str, LeadField] = dataclasses.field(init=False, repr=False, compare=False)
    _by_folded: dict[str, tuple[str, ...]] = dataclasses.field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_name = {lead_field.name: lead_field for lead_field in self.fields}
        if len(by_name) != len(self.fields):
            raise MetadataError("each lead field must be listed once")
        by_folded: dict[str, tuple[str, ...]] = {}
        for name in by_name:
            folded = name.casefold()
            by_folded[folded] = (*by_folded.get(folded, ()), name)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_folded", by_folded)

    def __getitem__(self, name: str) -> LeadField:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def ignoring_case(self, name: str) -> tuple[str, ...]:
        """The schema names equal to `name` when case is ignored: "did you mean" candidates
        for an attribute the account does not have."""
        return self._by_folded.get(name.casefold(), ())

    def to_json(self) -> str:
        """The fields as JSON text, for the connector's cache; `from_json` reads it back."""
        return json.dumps(
            {
                "format": _CACHE_FORMAT,
                "fields": [
                    {
                        "name": f.name,
                        "data_type": f.data_type,
                        "max_length": f.max_length,
                        "options": list(f.options),
                        "mandatory": f.mandatory,
                    }
                    for f in self.fields
                ],
                "warnings": list(self.warnings),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LeadFields:
        """Fields that `to_json` wrote; MetadataError for anything else."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MetadataError(f"the cached lead fields are not JSON ({exc})") from None
        return _cached(data)


def shape(
    value: str | None,
    field: LeadField | None,
    *,
    truncate: bool = False,
    timezone: tzinfo = UTC,
) -> Shaped:
    """The wire value of `value` for `field` (None: the account has no such field)."""
    if field is None:
        return _unknown(value, ())
    return field.shape(value, truncate=truncate, timezone=timezone)


def shape_update(
    update: Mapping[str, str | None],
    fields: LeadFields,
    *,
    truncate: frozenset[str] = frozenset(),
    timezone: tzinfo = UTC,
) -> tuple[dict[str, str], dict[str, Refusal]]:
    """The wire values of an update's attributes, and the attributes refused.

    Only the attributes in `truncate` are cut to fit their field's MaxLength.
    """
    send: dict[str, str] = {}
    refused: dict[str, Refusal] = {}
    for attribute, value in update.items():
        lead_field = fields.get(attribute)
        if lead_field is None:
            shaped: Shaped = _unknown(value, fields.ignoring_case(attribute))
        else:
            shaped = lead_field.shape(value, truncate=attribute in truncate, timezone=timezone)
        if isinstance(shaped, Refusal):
            refused[attribute] = shaped
        else:
            send[attribute] = shaped
    return send, refused


def _unknown(value: str | None, alike: tuple[str, ...]) -> Refusal:
    hint = f" (did you mean {' or '.join(map(repr, alike))}?)" if alike else ""
    subject = _shown(value) if value else "an empty value"
    return Refusal(
        Rule.UNKNOWN_ATTRIBUTE,
        f"{subject} cannot be sent: the account has no lead field of this name{hint}",
    )


def parse_metadata(body: object) -> LeadFields:
    """The lead fields in LeadsMetaData.Get's answer (its JSON, parsed).

    MetadataError when the answer is not a list, or when any entry has no SchemaName: the
    answer is then not what this module understands. Odd properties of a named field are
    tolerated, each read as the least limiting value, and listed in `warnings`: a DataType
    not listed in DataType is shaped as Text, a MaxLength that is not a whole number is no
    limit, options that are not text are left out, an IsMandatory that is not true or false
    is false. A field listed twice keeps its first entry.
    """
    if not isinstance(body, list):
        raise MetadataError(
            f"LeadsMetaData.Get's answer is not a list of fields but {_json_kind(body)}"
        )
    unnamed: list[int] = []
    warnings: list[str] = []
    fields: dict[str, LeadField] = {}
    for index, entry in enumerate(body):
        name = entry.get("SchemaName") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            unnamed.append(index)
        elif name in fields:
            warnings.append(f"{name!r} is listed more than once; its first entry is used")
        elif not unnamed:  # past the first unnamed entry, only the others are of interest
            fields[name] = _metadata_field(name, entry, warnings)
    if unnamed:
        shown = ", ".join(map(str, unnamed[:_PROBLEMS_SHOWN]))
        more = ", ..." if len(unnamed) > _PROBLEMS_SHOWN else ""
        raise MetadataError(
            f"LeadsMetaData.Get's answer has {len(unnamed)} of {len(body)} entries without "
            f"a SchemaName (at positions {shown}{more})"
        )
    return LeadFields(tuple(fields.values()), tuple(warnings))


_PROBLEMS_SHOWN: Final = 5


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _metadata_field(name: str, entry: dict[str, Any], warnings: list[str]) -> LeadField:
    return LeadField(
        name=name,
        data_type=_metadata_type(name, entry.get("DataType"), warnings),
        max_length=_metadata_max_length(name, entry.get("MaxLength"), warnings),
        options=_metadata_options(name, entry.get("Options"), warnings),
        mandatory=_metadata_mandatory(name, entry.get("IsMandatory"), warnings),
    )


def _metadata_type(name: str, raw: object, warnings: list[str]) -> str:
    if not isinstance(raw, str) or not raw.strip():
        warnings.append(f"{name!r} has no DataType ({_short(repr(raw))}); shaped as Text")
        return DataType.TEXT.value
    if raw.strip().casefold() not in _KINDS:
        warnings.append(f"{name!r} has DataType {_short(raw)!r}, unknown here; shaped as Text")
    return raw


# Past this many digits a MaxLength is no limit in practice, and int() would refuse it.
_MAX_LENGTH_DIGITS: Final = 18


def _metadata_max_length(name: str, raw: object, warnings: list[str]) -> int | None:
    if raw is None or raw == "":
        return None
    number: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
    elif isinstance(raw, float) and raw.is_integer():
        number = int(raw)
    elif isinstance(raw, str) and re.fullmatch(r"[0-9]+", raw.strip()):
        digits = raw.strip().lstrip("0")
        number = int(digits or "0") if len(digits) <= _MAX_LENGTH_DIGITS else 0
    if number is None or number < 0:
        warnings.append(
            f"{name!r} has MaxLength {_short(repr(raw))}, not a whole number; taken as no limit"
        )
        return None
    return number or None  # LeadSquared's 0 means no limit


def _metadata_options(name: str, raw: object, warnings: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        warnings.append(f"{name!r} has Options that are not a list; taken as not fetched")
        return ()
    options: list[str] = []
    for item in raw:
        option = _metadata_option(item)
        if option is None:
            warnings.append(f"{name!r} has an option that is not text: {_short(repr(item))}")
        else:
            options.append(option)
    return tuple(dict.fromkeys(options))


def _metadata_option(item: object) -> str | None:
    if isinstance(item, dict):
        item = item.get("Value", item.get("Text"))
    if isinstance(item, str):
        return item
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    return None


def _metadata_mandatory(name: str, raw: object, warnings: list[str]) -> bool:
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return False
    if isinstance(raw, str) and raw.strip().casefold() in ("true", "false"):
        return raw.strip().casefold() == "true"
    if isinstance(raw, int) and raw in (0, 1):
        return raw == 1
    warnings.append(f"{name!r} has IsMandatory {_short(repr(raw))}; taken as false")
    return False


_CACHE_FORMAT: Final = 1


def _cached(data: object) -> LeadFields:
    """LeadFields from the parsed JSON of to_json, checked strictly: it is the connector's
    own text, so anything unexpected means it is damaged, not that LeadSquared changed."""
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
        raise MetadataError(f"the cached lead fields are not in format {_CACHE_FORMAT}")
    entries, warnings = data.get("fields"), data.get("warnings")
    if not isinstance(entries, list) or not isinstance(warnings, list) or not _all_text(warnings):
        raise MetadataError("the cached lead fields lack their fields or warnings")
    try:
        return LeadFields(tuple(map(_cached_field, entries)), tuple(warnings))
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"the cached lead fields are damaged: {exc}") from None


def _cached_field(entry: object) -> LeadField:
    if not isinstance(entry, dict) or set(entry) != _CACHED_KEYS:
        raise TypeError(f"a field is not an object with the keys {sorted(_CACHED_KEYS)}")
    name, data_type, max_length = entry["name"], entry["data_type"], entry["max_length"]
    options, mandatory = entry["options"], entry["mandatory"]
    if not (
        isinstance(name, str)
        and name
        and isinstance(data_type, str)
        and (max_length is None or (type(max_length) is int and max_length > 0))
        and _all_text(options)
        and isinstance(mandatory, bool)
    ):
        raise TypeError(f"field {_short(repr(name))} has a property of the wrong type")
    return LeadField(name, data_type, max_length, tuple(options), mandatory)


_CACHED_KEYS: Final = frozenset({"name", "data_type", "max_length", "options", "mandatory"})


def _all_text(items: object) -> bool:
    return isinstance(items, list) and all(isinstance(item, str) for item in items)


def _shown(value: str) -> str:
    if len(value) <= _SHOWN_CHARACTERS:
        return repr(value)
    return repr(value[: _SHOWN_CHARACTERS - 3]) + "..."


def _listed(options: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(_short(option) for option in options[:_OPTIONS_SHOWN])
    return shown + (", ..." if len(options) > _OPTIONS_SHOWN else "")


def _short(text: str) -> str:
    return text if len(text) <= 30 else text[:27] + "..."


def _fold_options(options: tuple[str, ...]) -> dict[str, str]:
    choices: dict[str, str] = {}
    for option in options:
        folded = option.strip().casefold()
        if choices.get(folded, option) != option:
            choices[folded] = _AMBIGUOUS
        else:
            choices[folded] = option
    # A blank option can never be chosen: an empty value clears the field instead.
    choices.pop("", None)
    return choices


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut(text: str, limit: int, *, exact: bool) -> str:
    """The longest start of `text` of at most `limit` UTF-16 units, never half a character."""
    if exact:
        return text[:limit]
    units = 0
    for index, character in enumerate(text):
        units += 2 if character > "\uffff" else 1
        if units > limit:
            return text[:index]
    return text


_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(value: str) -> Shaped:
    text = value.strip()
    if _NUMBER.fullmatch(text) is None:
        return Refusal(Rule.NOT_A_NUMBER, f"{_shown(value)} is not a number")
    try:
        return plain_decimal(Decimal(text))
    except (ArithmeticError, UnsendableValueError):  # an exponent past Decimal's, too
        return Refusal(
            Rule.NOT_A_NUMBER,
            f"{_shown(value)} is a number of more than {MAX_DIGITS} digits, which is not sent",
        )


_DATE_TIME: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:([Tt ])([0-9]{2}):([0-9]{2})(?::([0-9]{2})([.,][0-9]+)?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?"
)


def _date(value: str, source_zone: tzinfo) -> Shaped:
    text = value.strip()
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return Refusal(
            Rule.NOT_A_DATE,
            f"{_shown(value)} is not a date (YYYY-MM-DD, or an ISO 8601 date and time)",
        )
    year, month, day, separator, hour, minute, second, _fraction, zulu, sign, *offset = (
        match.groups()
    )
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return Refusal(Rule.NOT_A_DATE, f"{_shown(value)} is not a date on the calendar")
    if separator is None or zulu:
        return _spelled(moment)
    if sign:
        hours, minutes = int(offset[0]), int(offset[1] or 0)
        if hours > 23 or minutes > 59:
            return Refusal(Rule.NOT_A_DATE, f"{_shown(value)} has no valid UTC offset")
        shift = timedelta(hours=hours, minutes=minutes)
        zone: tzinfo = FixedOffset(-shift if sign == "-" else shift)
    else:
        zone = source_zone
    return _in_utc(value, moment.replace(tzinfo=zone))


def _in_utc(value: str, moment: datetime) -> Shaped:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("the source time zone gives no UTC offset")
    if offset != moment.replace(fold=1).utcoffset():
        return Refusal(
            Rule.NOT_A_DATE,
            f"{_shown(value)} is not one moment in the source's time zone (a daylight-saving "
            "change skips or repeats it)",
        )
    try:
        return _spelled(moment.astimezone(UTC))
    except OverflowError:
        return Refusal(Rule.NOT_A_DATE, f"{_shown(value)} is out of range once in UTC")


def _spelled(moment: datetime) -> str:
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


_TIME: Final = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]+)?)?")


def _time(value: str) -> Shaped:
    match = _TIME.fullmatch(value.strip())
    if match is not None:
        hour, minute, second = (int(part or 0) for part in match.groups())
        if hour < 24 and minute < 60 and second < 60:
            return f"{hour:02d}:{minute:02d}:{second:02d}"
    return Refusal(Rule.NOT_A_TIME, f"{_shown(value)} is not a time of day (HH:MM or HH:MM:SS)")


# LeadSquared's metadata and API speak of booleans as true and false; the emulator takes
# only those, so every other spelling is sent as one of them.
_BOOLEANS: Final = {
    **dict.fromkeys(("true", "t", "yes", "y", "1"), "true"),
    **dict.fromkeys(("false", "f", "no", "n", "0"), "false"),
}


def _boolean(value: str) -> Shaped:
    spelled = _BOOLEANS.get(value.strip().casefold())
    if spelled is None:
        return Refusal(
            Rule.NOT_A_BOOLEAN,
            f"{_shown(value)} is not a boolean (true/false, yes/no, y/n, t/f or 1/0)",
        )
    return spelled
