"""Pre-flight: each attribute of a lead's update shaped for its field's type, and held back,
without a call, when the field list says LeadSquared would refuse it.

An attribute held back is set aside with its value, as one LeadSquared names unknown is: the
lead's other attributes are sent, and a new value in the source tries it again. The reason
names the row, the column, the attribute, the value and the rule, for `lsq-sync status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Protocol

from connector.config import Config
from connector.fields import LeadFields, Refusal, shape_update
from connector.leads import LeadState
from connector.values import Values


@dataclass(frozen=True)
class Shaped:
    """An update as it goes on the wire, and the attributes held back with why."""

    wire: Values
    held: dict[str, str] = field(default_factory=dict)


class Shaper(Protocol):
    def shape(self, lead: LeadState, update: Values) -> Shaped:
        """`update` (canonical values) as sent, and what pre-flight holds back."""
        ...

    def doubted(self) -> None:
        """LeadSquared refused an attribute or a value pre-flight let through."""
        ...


def shape_in_zones(
    update: Values,
    fields: LeadFields,
    *,
    truncate: frozenset[str],
    zone: tzinfo,
    in_utc: frozenset[str],
) -> tuple[dict[str, str], dict[str, Refusal]]:
    """`fields.shape_update`, reading date-times without an offset in `zone`, but for the
    attributes `in_utc`."""
    local = {name: value for name, value in update.items() if name not in in_utc}
    utc = {name: value for name, value in update.items() if name in in_utc}
    wire, refused = shape_update(local, fields, truncate=truncate, timezone=zone)
    if utc:
        more_wire, more_refused = shape_update(utc, fields, truncate=truncate, timezone=UTC)
        wire |= more_wire
        refused |= more_refused
    return wire, refused


class AsSpelled:
    """No field list: values go as the source spells them, nothing is held back."""

    def shape(self, lead: LeadState, update: Values) -> Shaped:
        return Shaped(dict(update))

    def doubted(self) -> None:
        pass


class FieldsSource(Protocol):
    def current(self) -> LeadFields | None: ...
    def doubted(self) -> None: ...


class Preflight:
    """Shapes by the run's field list (`fields`); with none, as `AsSpelled`."""

    @classmethod
    def for_config(
        cls, config: Config, fields: FieldsSource, *, in_utc: frozenset[str]
    ) -> Preflight:
        columns = {attribute: column for column, attribute in config.attributes.items()}
        return cls(
            fields,
            columns=columns,
            truncate=config.truncated,
            zone=config.source.zone,
            in_utc=in_utc,
        )

    def __init__(
        self,
        fields: FieldsSource,
        *,
        columns: Mapping[str, str],
        truncate: frozenset[str],
        zone: tzinfo,
        in_utc: frozenset[str] = frozenset(),
    ) -> None:
        """`columns`: attribute -> the source column it is read from, for messages. `zone`
        is the one date-times without an offset are read in, but for the attributes
        `in_utc`, read from date and time columns: ingest spells those in UTC already."""
        self._fields = fields
        self._columns = columns
        self._truncate = truncate
        self._zone = zone
        self._in_utc = in_utc

    def shape(self, lead: LeadState, update: Values) -> Shaped:
        fields = self._fields.current()
        if fields is None:
            return Shaped(dict(update))
        wire, refused = shape_in_zones(
            update, fields, truncate=self._truncate, zone=self._zone, in_utc=self._in_utc
        )
        return Shaped(
            dict(wire),
            {name: self._reason(lead, name, refusal) for name, refusal in refused.items()},
        )

    def doubted(self) -> None:
        self._fields.doubted()

    def _reason(self, lead: LeadState, attribute: str, refusal: Refusal) -> str:
        column = self._columns.get(attribute, "?")
        return (
            f"row {lead.source_key}, column {column!r}, attribute {attribute}: "
            f"{refusal.message} [{refusal.rule.name.lower()}]; held back, not sent"
        )
