"""What the emulated account holds: its leads, the rules an update must pass, and the log of
requests it received.

`LeadStore` answers the lead endpoints; `RequestLog` keeps requests without their keys. Both
share the emulator's one condition, which the caller may already hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from connector.testing.emulator.schema import LeadSchema
from connector.testing.emulator.wire import (
    SUCCESS,
    Answer,
    Incoming,
    RequestOutcome,
    error,
    json_answer,
    parse_update,
)

MissingLeadError = Literal["MXInvalidEntityException", "MXInvalidEntityReferenceException"]

# Both have been seen from LeadSquared for a lead that is missing, deleted or merged.
MISSING_LEAD_MESSAGES: Final[dict[str, str]] = {
    "MXInvalidEntityException": "Lead does not exist in the system",
    "MXInvalidEntityReferenceException": "Lead not found",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it, without the keys or the query string."""

    method: str
    api: str
    """The API called, as its path reads after its service's prefix: ``Lead.Update``,
    ``Leads.GetById``, ``Leads.GetByEmailaddress``, ``RetrieveLeadByPhoneNumber``,
    ``Lead/Bulk/UpdateV2``, ``LeadsMetaData.Get`` (after ``/v2/LeadManagement.svc/``),
    ``UserByAccessKey.Get`` (after ``/v2/Authentication.svc/``); or the last path segment of
    an unknown API."""
    lead_id: str | None
    """The ``leadId`` (or ``id``) query parameter, if any; always None for a bulk call, whose
    leads are in its body."""
    body: Any
    """The parsed JSON body, or None when there was none or it was not JSON. For a bulk call,
    ``len(body["LeadPropertiesList"])`` is how many leads it carried."""
    status: int
    """The HTTP status answered; 0 when the connection was dropped without an answer."""
    outcome: RequestOutcome
    post_updated_lead: bool
    arrived_at: float = 0.0
    """The emulator clock's reading when the request arrived (``time.monotonic`` by default)."""


class RequestLog:
    """The requests received, in arrival order; waiting on it ends when enough have come."""

    def __init__(self, lock: threading.Condition) -> None:
        self._lock = lock
        self._entries: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(request)
            self._lock.notify_all()

    def entries(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def wait_for(self, count: int, timeout: float) -> list[RecordedRequest]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._entries) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._entries)} of {count} requests arrived within {timeout} s"
                )
            return list(self._entries)


def check_missing_lead_error(name: str) -> None:
    if name not in MISSING_LEAD_MESSAGES:
        raise ValueError(
            f"missing_lead_error must be one of {sorted(MISSING_LEAD_MESSAGES)}, got {name!r}"
        )


@dataclass(frozen=True)
class Refusal:
    """Why LeadSquared refuses an update: its ``ExceptionType`` and message, kept as data so
    that ``Lead.Update`` answers it as an error and a bulk update lists it per lead."""

    exception_type: str
    message: str

    def answer(self) -> Answer:
        """The refusal as ``Lead.Update`` answers it: HTTP 500, permanent."""
        return error(500, self.exception_type, self.message)


def _mandatory(parameter: str) -> Answer:
    return error(500, "MXMandatoryAttributeMissingException", f"{parameter} is mandatory")


class LeadStore:
    """The account's leads and what an update to them must pass, as LeadSquared checks it."""

    def __init__(
        self,
        lock: threading.Condition,
        *,
        attributes: Iterable[str] | None,
        schema: LeadSchema | None,
        unique_attributes: Iterable[str],
        auto_create_leads: bool,
        missing_lead_error: MissingLeadError,
    ) -> None:
        check_missing_lead_error(missing_lead_error)
        if schema is not None and attributes is not None:
            raise ValueError("give the lead fields as a schema or as attributes, not both")
        self._lock = lock
        self._schema = schema
        if schema is not None:
            attributes = schema.names
        self._attributes = None if attributes is None else frozenset(attributes)
        self._unique_attributes = frozenset(unique_attributes)
        self._auto_create_leads = auto_create_leads
        self._missing_lead_error: MissingLeadError = missing_lead_error
        self._leads: dict[str, dict[str, str]] = {}
        self._rejections: dict[str, list[tuple[Callable[[str], bool], str]]] = {}

    def put(self, lead_id: str, attributes: dict[str, str]) -> None:
        with self._lock:
            self._leads[lead_id] = dict(attributes)

    def all(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {lead_id: dict(values) for lead_id, values in self._leads.items()}

    def get(self, lead_id: str) -> dict[str, str] | None:
        with self._lock:
            values = self._leads.get(lead_id)
            return None if values is None else dict(values)

    def clear(self) -> None:
        with self._lock:
            self._leads.clear()

    @property
    def schema(self) -> LeadSchema | None:
        return self._schema

    def reject_values(
        self, attribute: str, predicate: Callable[[str], bool], exception_type: str
    ) -> None:
        with self._lock:
            self._rejections.setdefault(attribute, []).append((predicate, exception_type))

    # Endpoints (called with the lock held)

    def lead_update(self, incoming: Incoming) -> Answer:
        update = parse_update(incoming)
        if isinstance(update, Answer):
            return update
        lead_id, fields = update
        if lead_id not in self._leads and not self._auto_create_leads:
            return self.missing_lead.answer()
        refusal = self.refusal(lead_id, fields)
        if refusal is not None:
            return refusal.answer()
        self.apply(lead_id, fields)
        return SUCCESS

    def get_by_id(self, incoming: Incoming) -> Answer:
        lead_id = incoming.query.get("id", "")
        if not lead_id:
            return _mandatory("id")
        return self._found(self.matching("ProspectId", lead_id))

    def get_by_email(self, incoming: Incoming) -> Answer:
        """``Leads.GetByEmailaddress``: every lead with that email, ignoring case."""
        email = incoming.query.get("emailaddress", "")
        if not email.strip():
            return _mandatory("emailaddress")
        return self._found(self.matching("EmailAddress", email))

    def get_by_phone(self, incoming: Incoming) -> Answer:
        """``RetrieveLeadByPhoneNumber``: every lead whose Phone or Mobile is exactly that."""
        phone = incoming.query.get("phone", "")
        if not phone:
            return _mandatory("phone")
        # LeadSquared compares phone numbers as written: "+91 80" is not "+9180".
        found = [
            lead_id
            for lead_id, values in self._leads.items()
            if phone in (values.get("Phone"), values.get("Mobile"))
        ]
        return self._found(found)

    def matching(self, key: str, value: str) -> list[str]:
        """The ids of the leads `value` identifies by `key` (``ProspectId``, or an attribute;
        ``EmailAddress`` ignoring case and surrounding spaces), oldest first."""
        if key == "ProspectId":
            return [value] if value in self._leads else []
        if key == "EmailAddress":
            wanted = value.strip().casefold()
            # No email is not a match: many leads have none.
            return [
                lead_id
                for lead_id, values in self._leads.items()
                if wanted and values.get(key, "").strip().casefold() == wanted
            ]
        return [lead_id for lead_id, values in self._leads.items() if values.get(key) == value]

    def metadata(self, incoming: Incoming) -> Answer:
        """``LeadsMetaData.Get``: every field, or the one `schemaName` names (none: ``[]``)."""
        fields = () if self._schema is None else self._schema.fields
        wanted = incoming.query.get("schemaname")
        with_options = incoming.query.get("excludeoptionsets", "") not in ("1", "true")
        found = [f.metadata(with_options) for f in fields if wanted in (None, f.name)]
        return json_answer(200, found, "success")

    def _found(self, lead_ids: list[str]) -> Answer:
        """The leads as LeadSquared lists them: a JSON list, ``[]`` when none."""
        found = [{"ProspectID": lead_id, **self._leads[lead_id]} for lead_id in lead_ids]
        return json_answer(200, found, "success")

    # Judging an update (called with the lock held)

    @property
    def missing_lead(self) -> Refusal:
        """How an update to a lead that does not exist is refused."""
        return Refusal(self._missing_lead_error, MISSING_LEAD_MESSAGES[self._missing_lead_error])

    def refusal(self, lead_id: str, fields: dict[str, str]) -> Refusal | None:
        """Why LeadSquared refuses to set `fields` on `lead_id` (whether or not it exists);
        None when the update may be applied. One refusal rejects the whole update."""
        if self._attributes is not None:
            unknown = [name for name in fields if name not in self._attributes]
            if unknown:
                return Refusal(
                    "MXUnknownAttributeException",
                    "Attribute(s) does not exist - " + ", ".join(unknown),
                )
        invalid = self._invalid_value(fields)
        if invalid is not None:
            return invalid
        for attribute, value in fields.items():
            for predicate, exception_type in self._rejections.get(attribute, []):
                if predicate(value):
                    return Refusal(exception_type, f"Invalid value for attribute {attribute}")
        duplicate = self._duplicated_attribute(lead_id, fields)
        if duplicate is not None:
            return Refusal(
                "MXDuplicateEntryException", f"A Lead with same {duplicate} already exists."
            )
        return None

    def apply(self, lead_id: str, fields: dict[str, str]) -> None:
        """Set `fields` on `lead_id`, creating it if need be; `refusal` has let them pass."""
        self._leads.setdefault(lead_id, {}).update(fields)

    def _invalid_value(self, fields: dict[str, str]) -> Refusal | None:
        """The refusal of the first value the schema refuses, as LeadSquared words it."""
        for attribute, value in fields.items():
            lead_field = None if self._schema is None else self._schema.field(attribute)
            problem = None if lead_field is None else lead_field.problem(value)
            if problem is not None:
                message = f"Invalid value for attribute {attribute}: {problem}"
                return Refusal("MXInvalidInputException", message)
        return None

    def _duplicated_attribute(self, lead_id: str, fields: dict[str, str]) -> str | None:
        """The first unique attribute this update would set to another lead's value."""
        for attribute, value in fields.items():
            # Clearing a value never collides: many leads have no phone or email at all.
            if attribute not in self._unique_attributes or not value:
                continue
            wanted = value.casefold()
            for other_id, other in self._leads.items():
                if other_id != lead_id and other.get(attribute, "").casefold() == wanted:
                    return attribute
        return None
