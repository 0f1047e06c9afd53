"""`lsq-sync run --dry-run`: what the next run would send, without a call or a write.

The next run first ingests the changes captured since the last one, so a plan that left them
out would show stale values. Rather than a second, read-only copy of ingest, the real ingest
runs here inside one transaction that is rolled back (its own transactions become savepoints
of it): the plan comes from the code that will do the work, and nothing it wrote survives.
The leads due are then planned as push plans them (connector.push): ownership checked, the
update worked out, values shaped by the account's field list as kept. Nothing reaches
LeadSquared: no field list is read from it, and a lead found by email address or phone number
is only said to need its lookup.

On SQLite that transaction holds the database's write lock while it ingests, as a run does
batch by batch: with a large backlog, the application's writes wait meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from connector.fields import LeadFields
from connector.ingest import ingest
from connector.leads import LeadState
from connector.ownership import check_owners
from connector.preflight import AsSpelled, Preflight, Shaper
from connector.values import Values, plan_update

if TYPE_CHECKING:
    from connector.source import SourceTable
    from connector.sync import Connector

_LOOKUP = {"EmailAddress": "Leads.GetByEmailaddress", "Phone": "RetrieveLeadByPhoneNumber"}


@dataclass(frozen=True)
class PlannedLead:
    """One lead's update as the next run would send it."""

    lead_id: str
    row: str
    values: dict[str, str | None]  # attribute -> the value as it goes on the wire
    held: dict[str, str] = field(default_factory=dict)  # attribute -> why pre-flight holds it
    lookup: str | None = None  # the lookup call that would find its ProspectId first


@dataclass(frozen=True)
class DryRun:
    connector: str
    skipped: str | None = None  # why nothing was planned (a run holds the run lock)
    changes_to_ingest: int = 0
    leads_due: int = 0
    calls: str = ""  # the kind of call the run would make
    shaped_by: str = ""  # how values are shaped
    planned: list[PlannedLead] = field(default_factory=list)
    leads_checked: int = 0  # due leads looked at to find those planned
    nothing_to_send: int = 0  # among them: due, but nothing differs (the run settles them)
    held_shared: list[str] = field(default_factory=list)  # several rows have the lead id
    detached: list[str] = field(default_factory=list)  # no row has the lead id any more

    @classmethod
    def skipped_because(cls, connector: str, reason: str) -> DryRun:
        return cls(connector, skipped=reason)

    def lines(self, limit: int) -> list[str]:
        if self.skipped is not None:
            return [f"dry run skipped: {self.skipped}"]
        lines = [
            f"dry run of connector {self.connector}: nothing was sent or recorded",
            f"the next run would ingest {_count(self.changes_to_ingest, 'captured change')}, "
            f"then push {_count(self.leads_due, 'lead')} due, through {self.calls}",
            f"values as they would be sent: {self.shaped_by}",
        ]
        for lead in self.planned:
            values = ", ".join(f"{name}={_shown(value)}" for name, value in lead.values.items())
            lines.append(f"  lead {lead.lead_id} (row {lead.row}): {values or '(nothing)'}")
            lines.extend(f"    held back: {name}: {why}" for name, why in lead.held.items())
            if lead.lookup:
                lines.append(f"    {lead.lookup}")
        unseen = self.leads_due - self.leads_checked
        if unseen > 0:
            lines.append(
                f"  ... and {_count(unseen, 'more lead')} due, not shown (--limit {limit})"
            )
        if self.nothing_to_send:
            lines.append(
                f"{_count(self.nothing_to_send, 'lead')} due with nothing to send (recorded as "
                "in sync, no call)"
            )
        if self.held_shared:
            lines.append(
                f"held back, nothing sent: several rows have the lead id of "
                f"{', '.join(self.held_shared)}"
            )
        if self.detached:
            lines.append(
                f"detached, nothing sent: no row has the lead id of {', '.join(self.detached)}"
            )
        return lines

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _shown(value: str | None) -> str:
    return "(empty)" if value is None else repr(value)


def print_dry_run(connector: Connector, limit: int, *, as_json: bool) -> int:
    plan = connector.dry_run(limit)
    print(plan.as_json() if as_json else "\n".join(plan.lines(limit)))
    return 0


def plan_next_run(connector: Connector, source: SourceTable, limit: int) -> DryRun:
    """Plan the next run in a transaction that is rolled back; see the module's docstring.
    The caller holds the run lock."""
    config = connector.config
    tables = connector.tables
    # Read before the transaction: on SQLite another connection would wait for it.
    kept = connector.field_list.kept() if config.leadsquared.check_fields else None
    shaper: Shaper = AsSpelled()
    if kept is not None:
        shaper = Preflight.for_config(config, _Fixed(kept.fields), in_utc=source.spelled_in_utc)
    now = connector.clock.now()
    attributes = frozenset(config.attributes.values())
    planned: list[PlannedLead] = []
    checked = nothing = 0
    shared: list[str] = []
    detached: list[str] = []
    with connector.engine.connect() as connection, _rolled_back(connection):
        changes = tables.changes.pending_changes(connection)
        ingest(
            _Savepoints(connection),
            tables=tables,
            source=source,
            clock=connector.clock,
            batch_size=config.sync.ingest_batch_size,
        )
        queue = tables.queue(source)
        due = queue.count_due(connection, now)
        after: str | None = None
        while len(planned) < limit:
            page = queue.due_leads(connection, now, after, config.sync.push_batch_size)
            if not page:
                break
            after = page[-1].lead_id
            owners = check_owners(
                connection,
                rows=tables.leads,
                problems=tables.problems,
                source=source,
                leads=page,
                now=now,
            )
            shared += owners.shared
            detached += owners.detached
            checked += len(owners.shared) + len(owners.detached)
            for state in owners.to_push:
                if len(planned) >= limit:
                    break
                checked += 1
                lead = _planned(state, attributes, shaper, config.kept_when_empty)
                if lead is None:
                    nothing += 1
                else:
                    planned.append(lead)
    bulk = _bulk(connector, due)
    if not bulk and config.lead_id.match != "ProspectId":
        planned = [_with_lookup(connector, lead, now) for lead in planned]
    return DryRun(
        connector=config.name,
        changes_to_ingest=changes,
        leads_due=due,
        calls="Lead/Bulk/UpdateV2 calls, up to 25 leads each"
        if bulk
        else "Lead.Update calls, one lead each",
        shaped_by=_shaped_by(connector, kept.fetched_at if kept else None),
        planned=planned,
        leads_checked=checked,
        nothing_to_send=nothing,
        held_shared=shared[:limit],
        detached=detached[:limit],
    )


def _planned(
    state: LeadState, attributes: frozenset[str], shaper: Shaper, kept_when_empty: frozenset[str]
) -> PlannedLead | None:
    """As `Pusher._planned` works it out; None when nothing would be sent."""
    update = plan_update(
        state.desired, state.pushed, attributes, state.set_aside, kept_when_empty=kept_when_empty
    )
    if not update:
        return None
    shaped = shaper.shape(state, update)
    values: Values = {name: shaped.wire[name] for name in update if name not in shaped.held}
    if not values and not shaped.held:
        return None
    return PlannedLead(state.lead_id, state.source_key, dict(sorted(values.items())), shaped.held)


def _bulk(connector: Connector, due: int) -> bool:
    """Whether the run would push through bulk calls (as connector.calls.call_for decides)."""
    bulk = connector.config.leadsquared.bulk
    wanted = bulk.mode == "always" or (bulk.mode == "auto" and due >= bulk.min_leads)
    return wanted and connector.config.lead_id.match != "Phone"


def _with_lookup(connector: Connector, lead: PlannedLead, now: datetime) -> PlannedLead:
    match = connector.config.lead_id.match
    ttl = timedelta(seconds=connector.config.lead_id.lookup_ttl_seconds)
    kept = connector.tables.matches.get(lead.lead_id)
    if kept is not None and now - kept.found_at <= ttl:
        return lead
    lookup = (
        f"its ProspectId would be looked up first ({_LOOKUP.get(match, match)} by {match}); "
        "not now: a dry run makes no call"
    )
    return PlannedLead(lead.lead_id, lead.row, lead.values, lead.held, lookup)


def _shaped_by(connector: Connector, fetched_at: datetime | None) -> str:
    if not connector.config.leadsquared.check_fields:
        return "as the source spells them (leadsquared.check_fields is off)"
    if fetched_at is None:
        return (
            "as the source spells them: no field list is kept yet, and the run would read it "
            "from LeadSquared first (not now: a dry run makes no call)"
        )
    kept = fetched_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"shaped by the account's field list kept at {kept}"


class _Fixed:
    """The field list kept, as the run's field source: never read again (that is a call)."""

    def __init__(self, fields: LeadFields) -> None:
        self._fields = fields

    def current(self) -> LeadFields | None:
        return self._fields

    def doubted(self) -> None:
        pass


class _Savepoints:
    """Stands in for the engine in ingest: every transaction it opens is a savepoint of the
    one transaction the dry run rolls back."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        yield self._connection

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self._connection.begin_nested():
            yield self._connection


@contextmanager
def _rolled_back(connection: Connection) -> Iterator[None]:
    transaction = connection.begin()
    try:
        yield
    finally:
        transaction.rollback()
