"""The emulated account's lead schema: each field's data type, max length and dropdown
options, as ``LeadsMetaData.Get`` describes them, and the check a ``Lead.Update`` value must
pass against it.

A schema file (YAML, or JSON, which YAML reads too) maps schema names to their properties::

    fields:
      FirstName: {type: Text, max_length: 100}
      EmailAddress: {type: Email, display_name: Email}
      mx_Plan: {type: Select, options: [Free, Pro], mandatory: true}
      mx_Seats: {type: Number}

``type`` is one of LeadSquared's data types (default ``Text``); ``max_length`` caps a value's
characters; ``options`` (``Select`` only, and required there) lists the values allowed;
``mandatory`` and ``display_name`` are reported by ``LeadsMetaData.Get`` and not enforced.
An empty value clears a field and always passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

FieldType = Literal[
    "Text", "Number", "Email", "Phone", "Website", "Date", "Time", "Select", "Boolean"
]
FIELD_TYPES: Final[tuple[str, ...]] = get_args(FieldType)
_PROPERTIES: Final = frozenset({"type", "max_length", "options", "mandatory", "display_name"})

_NUMBER: Final = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE: Final = re.compile(r"\+?[0-9][0-9 ()\-]*")
_WEBSITE: Final = re.compile(r"(https?://)?[^\s/.]+(\.[^\s/.]+)+(/\S*)?", re.IGNORECASE)


class SchemaError(ValueError):
    """The lead schema is not valid; the message lists every problem found."""


def _parses(*formats: str) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        for fmt in formats:
            try:
                datetime.strptime(value, fmt)  # the shape is checked; no time zone is needed
            except ValueError:
                continue
            return True
        return False

    return check


# What each data type accepts, and how a refusal names it; Text and Select are checked apart.
_SHAPES: Final[dict[str, tuple[Callable[[str], bool], str]]] = {
    "Number": (lambda value: _NUMBER.fullmatch(value) is not None, "not a number"),
    "Email": (lambda value: _EMAIL.fullmatch(value) is not None, "not an email address"),
    "Phone": (lambda value: _PHONE.fullmatch(value) is not None, "not a phone number"),
    "Website": (lambda value: _WEBSITE.fullmatch(value) is not None, "not a website"),
    "Date": (
        _parses("%Y-%m-%d", "%Y-%m-%d %H:%M:%S"),
        "not a date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)",
    ),
    "Time": (_parses("%H:%M:%S", "%H:%M"), "not a time (HH:MM:SS or HH:MM)"),
    "Boolean": (lambda value: value.lower() in ("true", "false"), "not true or false"),
}


@dataclass(frozen=True)
class LeadField:
    """One lead field of the schema."""

    name: str
    type: FieldType = "Text"
    max_length: int | None = None
    options: tuple[str, ...] = ()
    mandatory: bool = False
    display_name: str | None = None

    def problem(self, value: str) -> str | None:
        """Why LeadSquared would refuse `value` for this field; None when it is valid."""
        if not value:
            return None
        if self.max_length is not None and len(value) > self.max_length:
            return f"longer than {self.max_length} characters"
        if self.type == "Select":
            return None if value in self.options else "not one of the field's options"
        shape = _SHAPES.get(self.type)
        if shape is not None and not shape[0](value):
            return shape[1]
        return None

    def metadata(self, with_options: bool = True) -> dict[str, Any]:
        """The field as ``LeadsMetaData.Get`` lists it."""
        entry: dict[str, Any] = {
            "SchemaName": self.name,
            "DisplayName": self.display_name or self.name,
            "DataType": self.type,
            "IsMandatory": self.mandatory,
            # LeadSquared sends MaxLength as text.
            "MaxLength": "" if self.max_length is None else str(self.max_length),
        }
        if with_options and self.type == "Select":
            entry["Options"] = [{"Value": option} for option in self.options]
        return entry


@dataclass(frozen=True)
class LeadSchema:
    """The lead fields an account has; updates naming any other attribute are refused."""

    fields: tuple[LeadField, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [lead_field.name for lead_field in self.fields]
        if len(set(names)) != len(names):
            raise SchemaError("a lead schema names each field once")

    @property
    def names(self) -> frozenset[str]:
        return frozenset(lead_field.name for lead_field in self.fields)

    def field(self, name: str) -> LeadField | None:
        return next((f for f in self.fields if f.name == name), None)

    @classmethod
    def from_mapping(cls, data: object) -> LeadSchema:
        """A schema from the file shape in this module's docstring; every problem at once."""
        if not isinstance(data, Mapping) or set(data) != {"fields"}:
            raise SchemaError("a lead schema is a mapping with one key, 'fields'")
        fields = data["fields"]
        if not isinstance(fields, Mapping) or not fields:
            raise SchemaError("'fields' must map each field's schema name to its properties")
        problems: list[str] = []
        parsed = [_parse_field(name, props, problems) for name, props in fields.items()]
        if problems:
            raise SchemaError("; ".join(problems))
        return cls(tuple(f for f in parsed if f is not None))

    @classmethod
    def load(cls, path: str | Path) -> LeadSchema:
        """A schema read from a YAML or JSON file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SchemaError(f"{path} is neither YAML nor JSON: {exc}") from exc
        try:
            return cls.from_mapping(data)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from exc


def _parse_field(name: object, props: object, problems: list[str]) -> LeadField | None:
    where = f"fields.{name}"
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: a field's schema name must be text")
        return None
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        problems.append(f"{where}: must be a mapping of properties")
        return None
    count = len(problems)
    for unknown in sorted(set(map(str, props)) - _PROPERTIES):
        problems.append(f"{where}.{unknown}: unknown property; expected {sorted(_PROPERTIES)}")
    kind = props.get("type", "Text")
    if kind not in FIELD_TYPES:
        problems.append(f"{where}.type: must be one of {list(FIELD_TYPES)}, got {kind!r}")
    max_length = props.get("max_length")
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        problems.append(f"{where}.max_length: must be a whole number of at least 1")
    options = props.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str | int) for o in options):
        problems.append(f"{where}.options: must be a list of values")
        options = []
    if kind == "Select" and not options:
        problems.append(f"{where}.options: a Select field needs at least one option")
    if kind != "Select" and options:
        problems.append(f"{where}.options: only a Select field has options")
    mandatory = props.get("mandatory", False)
    if not isinstance(mandatory, bool):
        problems.append(f"{where}.mandatory: must be true or false")
    display_name = props.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        problems.append(f"{where}.display_name: must be text")
    if len(problems) > count:
        return None
    return LeadField(
        name=name,
        type=kind,
        max_length=max_length,
        options=tuple(str(option) for option in options),
        mandatory=mandatory,
        display_name=display_name,
    )
