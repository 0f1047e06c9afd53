"""Pre-flight: each attribute of a lead's update shaped for its field's type, and held back,
without a call, when the field list says LeadSquared would refuse it.

An attribute held back is set aside with its value, as one LeadSquared names unknown is: the
lead's other attributes are sent, and a new value in the source tries it again. The reason
names the row, the column, the attribute, the value and the rule, for `lsq-sync status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Protocol

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

    def __init__(
        self,
        fields: FieldsSource,
        *,
        columns: Mapping[str, str],
        truncate: frozenset[str],
        zone: tzinfo,
    ) -> None:
        """`columns`: attribute -> the source column it is read from, for messages."""
        self._fields = fields
        self._columns = columns
        self._truncate = truncate
        self._zone = zone

    def shape(self, lead: LeadState, update: Values) -> Shaped:
        fields = self._fields.current()
        if fields is None:
            return Shaped(dict(update))
        wire, refused = shape_update(update, fields, truncate=self._truncate, timezone=self._zone)
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
