"""The account's lead fields, as LeadsMetaData.Get last described them, kept in the
connector's tables (`lsq_sync_field_list`) per account.

`init` and `validate` read them from LeadSquared; a run reads them again once the copy is
older than `leadsquared.metadata_ttl_seconds` (or when there is none, `init` having failed to
read them), and once more after LeadSquared refused an attribute or a value the copy let
through. Without any copy, values are sent as the source spells them, with no pre-flight.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connector.client import LeadSquaredClient
from connector.clock import Clock
from connector.config import Config
from connector.database import upsert
from connector.errors import BudgetExhaustedError, CallCancelledError, LeadSquaredError
from connector.fields import LeadFields, MetadataError, parse_metadata
from connector.schema import field_list

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeptFields:
    fields: LeadFields
    fetched_at: datetime


class FieldList:
    """The copy of one account's field list; each method is one transaction."""

    def __init__(self, engine: Engine, account: str) -> None:
        self.engine = engine
        self.account = account

    def kept(self) -> KeptFields | None:
        query = sa.select(field_list.c.fields, field_list.c.fetched_at).where(
            field_list.c.account == self.account
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        try:
            return KeptFields(LeadFields.from_json(row.fields), row.fetched_at)
        except MetadataError:  # written by another version: read again from LeadSquared
            return None

    def save(self, fields: LeadFields, now: datetime) -> None:
        values = {"account": self.account, "fields": fields.to_json(), "fetched_at": now}
        with self.engine.begin() as connection:
            upsert(connection, field_list, values, ["account"])

    def keep(self, client: LeadSquaredClient, now: datetime) -> None:
        """Read and keep the fields, as `init` does. Without them values go as the source
        spells them, until a run reads them: `init` does not fail for that."""
        try:
            fields = self.fetch(client, now)
        except (LeadSquaredError, MetadataError) as exc:
            log.warning(
                "the account's lead fields could not be read: values are sent as the source "
                "spells them, and nothing is checked before it is sent, until a run reads them",
                extra={"error": str(exc)},
            )
            return
        log.info("lead fields read", extra={"fields": len(fields)})

    def fetch(self, client: LeadSquaredClient, now: datetime) -> LeadFields:
        """Read the fields from LeadSquared and keep them. Raises LeadSquaredError or
        MetadataError."""
        fields = parse_metadata(client.lead_fields())
        self.save(fields, now)
        return fields


class RunFields:
    """The fields one run shapes values by: the copy kept, read again from LeadSquared when
    it is older than `ttl`, and at most once more after `doubted` is called."""

    @classmethod
    def for_config(
        cls, config: Config, store: FieldList, client: LeadSquaredClient, clock: Clock
    ) -> RunFields:
        return cls(store, client, clock, timedelta(seconds=config.leadsquared.metadata_ttl_seconds))

    def __init__(
        self, store: FieldList, client: LeadSquaredClient, clock: Clock, ttl: timedelta
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._loaded = False
        self._fields: LeadFields | None = None
        self._refreshed_after_doubt = False

    def doubted(self) -> None:
        """LeadSquared refused an attribute or a value: read the fields again, once a run."""
        with self._lock:
            if self._fields is not None and not self._refreshed_after_doubt:
                self._refreshed_after_doubt = True
                self._refresh()

    def current(self) -> LeadFields | None:
        with self._lock:
            if not self._loaded:
                self._loaded = True
                kept = self._store.kept()
                if kept is None or self._clock.now() - kept.fetched_at > self._ttl:
                    # None kept: `init` could not read them; a run tries once.
                    self._fields = None if kept is None else kept.fields
                    self._refresh()
                else:
                    self._fields = kept.fields
            return self._fields

    def _refresh(self) -> None:
        """Read the fields again, keeping the copy when that fails."""
        try:
            self._fields = self._store.fetch(self._client, self._clock.now())
        except CallCancelledError:
            pass
        except (LeadSquaredError, MetadataError, BudgetExhaustedError) as exc:
            # The copy kept is better than none: values are still shaped and checked by it.
            log.warning(
                "the account's lead fields could not be read again; using the copy kept",
                extra={"error": str(exc)},
            )
