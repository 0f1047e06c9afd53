"""Turning source values into the strings LeadSquared stores, and deciding what to send.

Pure code: no I/O, no clock. `plan_update` is the diff at the heart of the connector.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID


class UnsendableValueError(ValueError):
    """A source value that cannot be sent to LeadSquared as it is; its lead is held back."""


# A number is sent when its plain spelling has at most this many digits, integer and fraction
# together (a sign, or a lone 0 before the point, not counted): what a NUMERIC(38) holds, and
# beyond which a value is more likely a unit or conversion mistake than a figure to store.
MAX_DIGITS = 38
_TOO_MANY_DIGITS = f"numbers of more than {MAX_DIGITS} digits cannot be sent to LeadSquared"


# attribute -> normalised value; None means "empty", which a never-pushed lead already is.
Values = dict[str, str | None]

# What `resync` records as pushed: a NUL, which no normalised value holds, so that it differs
# from every desired value, an empty one included, and each is sent again.
FORGOTTEN = "\x00"

_IP_VALUES = (
    ipaddress.IPv4Address
    | ipaddress.IPv6Address
    | ipaddress.IPv4Interface
    | ipaddress.IPv6Interface
    | ipaddress.IPv4Network
    | ipaddress.IPv6Network
)
# Any date will do: a time's UTC offset is fixed, so no daylight-saving rule applies.
_SOME_DAY = date(2000, 1, 3)


def normalise(value: Any) -> str | None:
    """The one canonical string for a source value, so equal values compare equal.

    An empty string becomes None: LeadSquared stores both as an empty field, so treating them
    alike saves no-op calls. A value with no defined spelling raises UnsendableValueError
    (the README's table of value formats lists them all).
    """
    if type(value) is str:
        return _text(value) or None  # the common case, first
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) >= 10**MAX_DIGITS:
            raise UnsendableValueError(_TOO_MANY_DIGITS)
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that round-trips, and Decimal reads it without rounding
        # (NaN and the infinities included).
        return plain_decimal(Decimal(repr(value)))
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, str):  # an enum or other subclass: its text, not its str()
        return _text(str.__str__(value)) or None
    return _structured(value)


def _structured(value: Any) -> str:
    """normalise() of the less common types."""
    if isinstance(value, datetime):
        return _datetime(value)
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, time):
        return _time(value)
    if isinstance(value, UUID | _IP_VALUES):
        return str(value)
    if isinstance(value, list | tuple):
        return _array(value)
    if isinstance(value, dict):
        return _json(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise UnsendableValueError("binary values cannot be sent to LeadSquared")
    if isinstance(value, timedelta):
        raise UnsendableValueError("intervals (durations) cannot be sent to LeadSquared")
    raise UnsendableValueError(
        f"values of type {type(value).__name__!r} cannot be sent to LeadSquared"
    )


def in_zone(zone: tzinfo) -> Callable[[Any], str | None]:
    """normalise() for a column of date-times without a time zone, which hold the time in
    `zone`: each is sent in UTC. A local time that a clock change skips or repeats is read
    as the earlier of its readings (fold 0)."""

    def normalise_local(value: Any) -> str | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return normalise(value)

    return normalise_local


def _text(value: str) -> str:
    if "\x00" in value:
        raise UnsendableValueError("text holding a NUL character cannot be sent to LeadSquared")
    return value


def _datetime(value: datetime) -> str:
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise UnsendableValueError("the time is out of range once in UTC") from None
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )


def _time(value: time) -> str:
    if value.utcoffset() is not None:
        value = datetime.combine(_SOME_DAY, value).astimezone(UTC).timetz()
    return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"


def _array(items: list[Any] | tuple[Any, ...]) -> str:
    """A JSON array of the elements' normalised values: strings, or null for NULL; nested
    arrays and JSON objects stay arrays and objects. An empty string stays "" here: inside an
    array, unlike a whole field, it is not the same as a missing element."""
    try:
        text = _array_text(items)
    except RecursionError:  # a JSON array in an array of json can nest as deep as it likes
        raise UnsendableValueError("an array nested too deeply to be sent") from None
    return _utf8(text, "an array")


def _array_text(items: list[Any] | tuple[Any, ...]) -> str:
    return "[" + ",".join(map(_element, items)) + "]"


def _element(item: Any) -> str:
    if item is None:
        return "null"
    if type(item) is str:
        return _json_string(_text(item))
    if isinstance(item, list | tuple):
        return _array_text(item)
    if isinstance(item, dict):
        return _json(item)
    return _json_string(normalise(item) or "")


class _JsonNumber(str):
    """A number exactly as a JSON text spelled it: re-spelled, it could lose digits."""

    __slots__ = ()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def normalise_json(value: Any) -> str | None:
    """normalise() of a json or jsonb column, read as text: the JSON text, compact, with
    object keys sorted, numbers digit for digit, and text past ASCII as it is. A JSON string
    is sent as JSON too (with its quotes), so that every value of the column is JSON."""
    if value is None:
        return None
    if isinstance(value, bool | int | float | Decimal):  # SQLite keeps a bare number as one
        return normalise(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return normalise(value)
    if not isinstance(value, str):
        return _json(value)
    if not value.strip():
        return None
    return _json(_parsed_json(value))


def normalise_json_array(value: Any) -> str | None:
    """normalise() of an array of json or jsonb, read as text[]: an array (see _array) of
    the elements' JSON, each parsed as normalise_json parses it, numbers digit for digit."""
    if value is None:
        return None
    return _array(_parsed_elements(value))


def _parsed_elements(items: list[Any]) -> list[Any]:
    parsed: list[Any] = []
    for item in items:
        if isinstance(item, list):  # a multidimensional array's row
            parsed.append(_parsed_elements(item))
        else:
            parsed.append(None if item is None else _parsed_json(item))
    return parsed


def _parsed_json(text: str) -> Any:
    try:
        return json.loads(
            text, parse_float=_JsonNumber, parse_int=_JsonNumber, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError) as exc:
        raise UnsendableValueError(f"not valid JSON ({_first_words(exc)})") from None


_SQLITE_STORAGE = {float: "a real number", str: "text", bytes: "binary data"}


def normalise_sqlite_boolean(value: Any) -> str | None:
    """normalise() of a SQLite column declared BOOLEAN, read as stored. SQLite keeps booleans
    as 0 and 1, but such a column holds whatever was written: 'f' or 'false', which a truth
    test would read as true, are held back rather than guessed at."""
    if value is None:
        return None
    if type(value) is int and value in (0, 1):
        return "true" if value else "false"
    kind = type(value)
    stored = str(value) if kind is int else _SQLITE_STORAGE.get(kind, kind.__name__)
    raise UnsendableValueError(f"a boolean must be stored as 0 or 1, not as {stored}")


def _json(value: Any) -> str:
    """Compact JSON with sorted keys, of a value as json.loads or a driver builds it."""
    try:
        text = _json_value(value)
    except RecursionError:
        raise UnsendableValueError("JSON nested too deeply to be sent") from None
    return _utf8(text, "JSON")


def _utf8(text: str, what: str) -> str:
    """`text`, unless a UTF-8 request body cannot carry it: a lone surrogate, which a JSON
    string's escape can make (json, unlike jsonb, keeps "\\ud800" as written)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsendableValueError(
                f"{what} holding a lone surrogate (\\ud800-\\udfff) cannot be sent"
            ) from None
    return text


def _json_value(value: Any) -> str:
    if isinstance(value, _JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return _json_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        return normalise(value) or "0"  # finite, and spelled without an exponent
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(_json_value, value)) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise UnsendableValueError("JSON object keys must be text")
        members = sorted(value.items())
        return "{" + ",".join(f"{_json_string(k)}:{_json_value(v)}" for k, v in members) + "}"
    return normalise(value) or "null"


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _first_words(exc: BaseException) -> str:
    return str(exc).split(":", 1)[0] if str(exc) else type(exc).__name__


def plain_decimal(value: Decimal) -> str:
    """The plain decimal spelling of `value`, exactly, without trailing zeros or an exponent;
    UnsendableValueError for NaN, the infinities and numbers of more than MAX_DIGITS digits.

    Built from the digits themselves: Decimal arithmetic (normalize, quantize) rounds to the
    context's precision, which any code in the process may have lowered.
    """
    sign, digit_tuple, exponent = value.as_tuple()
    if exponent == "F":
        raise UnsendableValueError("infinite numbers cannot be sent to LeadSquared")
    if not isinstance(exponent, int):  # "n" or "N": a quiet or a signalling NaN
        raise UnsendableValueError("not a number (NaN), cannot be sent")
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    significant = digits.rstrip("0")
    if not significant:
        return "0"
    exponent += len(digits) - len(significant)
    # Counted before spelling, so 1E+999999999 is refused without writing its zeros.
    if _plain_digits(len(significant), exponent) > MAX_DIGITS:
        raise UnsendableValueError(_TOO_MANY_DIGITS)
    if exponent >= 0:
        whole, fraction = significant + "0" * exponent, ""
    elif len(significant) > -exponent:
        whole, fraction = significant[:exponent], significant[exponent:]
    else:
        whole, fraction = "0", "0" * (-exponent - len(significant)) + significant
    return ("-" if sign else "") + whole + ("." + fraction if fraction else "")


def _plain_digits(significant: int, exponent: int) -> int:
    """Digits in the plain spelling of a number with these significant digits and exponent."""
    if exponent >= 0:
        return significant + exponent
    return max(significant, -exponent)


def plan_update(
    desired: Mapping[str, str | None],
    pushed: Mapping[str, str | None],
    attributes: frozenset[str],
    set_aside: Mapping[str, str | None] | None = None,
    *,
    kept_when_empty: frozenset[str] = frozenset(),
) -> Values:
    """The mapped attributes whose desired value differs from the one last pushed.

    An attribute set aside (refused by LeadSquared, or held back by pre-flight) is left out
    while its desired value is still the one refused (`set_aside`); a new value gets it tried
    again. An empty value of an attribute in `kept_when_empty` (mapping `empty: skip`) is
    never sent: the field keeps what it holds.
    """
    refused = set_aside or {}
    return {
        attribute: value
        for attribute, value in desired.items()
        if attribute in attributes
        and value != pushed.get(attribute)
        and not (attribute in refused and refused[attribute] == value)
        and not (value is None and attribute in kept_when_empty)
    }


def to_payload(update: Mapping[str, str | None]) -> list[dict[str, str]]:
    """Lead.Update's body; an empty value clears the field."""
    return [
        {"Attribute": attribute, "Value": "" if value is None else value}
        for attribute, value in sorted(update.items())
    ]


# One encoder for every call: json.dumps builds a new one per call when given options.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def dumps(values: Mapping[str, str | None]) -> str:
    return _ENCODER.encode(values)


def loads(text: str) -> Values:
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise TypeError("stored values are not a JSON object")
    return loaded
