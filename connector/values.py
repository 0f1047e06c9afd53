"""Turning source values into the strings LeadSquared stores, and deciding what to send.

Pure code: no I/O, no clock. `plan_update` is the diff at the heart of the connector.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
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


def normalise(value: Any) -> str | None:
    """The one canonical string for a source value, so equal values compare equal.

    An empty string becomes None: LeadSquared stores both as an empty field, so treating them
    alike saves no-op calls.
    """
    if type(value) is str:
        return value or None  # the common case, first
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
        return _decimal(Decimal(repr(value)))
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise UnsendableValueError("binary values cannot be sent to LeadSquared")
    return str(value)


def _decimal(value: Decimal) -> str:
    """The plain decimal spelling of `value`, exactly, without trailing zeros or an exponent.

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


def desired_values(row: Mapping[str, Any], mapping: Mapping[str, str]) -> Values:
    """The mapped attributes of one source row, normalised."""
    return {attribute: normalise(row[column]) for column, attribute in mapping.items()}


def plan_update(
    desired: Mapping[str, str | None],
    pushed: Mapping[str, str | None],
    attributes: frozenset[str],
    set_aside: Mapping[str, str | None] | None = None,
) -> Values:
    """The mapped attributes whose desired value differs from the one last pushed.

    An attribute LeadSquared refused as unknown is left out while its desired value is still
    the one refused (`set_aside`); a new value gets it tried again.
    """
    refused = set_aside or {}
    return {
        attribute: value
        for attribute, value in desired.items()
        if attribute in attributes
        and value != pushed.get(attribute)
        and not (attribute in refused and refused[attribute] == value)
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
