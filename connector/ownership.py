"""Which source row feeds each lead, checked just before a push: a lead is sent only while
exactly one row points to it, and only that row's values.

Ingest sees the rows that changed, not the leads they left, and deletes are not captured; so
the push phase looks for itself. For every lead about to be pushed, one lookup by key tells
whether the row it was stored from (and the other row that claimed it, if any) still has its
lead id. Only a lead whose claimants changed is counted again by lead id, which may cost a
scan of the source table: that happens once per resolved conflict, not per run.

What a lead no row points to any more becomes: kept, "detached" in its hold, never sent to;
a row that takes its lead id again brings it back (ingest rewrites the hold).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.engine import Connection

from connector.leadrows import LeadRows
from connector.leads import LeadState, RowProblem, SourceRow
from connector.quarantine import isolate
from connector.rowproblems import RowProblems
from connector.source import SourceTable

log = logging.getLogger(__name__)


class Look(enum.Enum):
    """What one lookup by key says about a lead."""

    SEND = "its row still has its lead id, and no other row claimed it"
    SHARED = "its row and the other that claimed it both still have its lead id"
    DETACHED = "no row it knows of has its lead id any more"
    RECOUNT = "a row that claimed it left: count the rows that have its lead id"


def first_look(state: LeadState, lead_ids_now: Mapping[str, str | None]) -> Look:
    """The verdict from the lead ids the lead's known rows have now (None: gone or none)."""
    owner_here = lead_ids_now.get(state.source_key) == state.lead_id
    if state.other_key is None:
        return Look.SEND if owner_here else Look.DETACHED
    if owner_here and lead_ids_now.get(state.other_key) == state.lead_id:
        return Look.SHARED
    return Look.RECOUNT


@dataclass(frozen=True)
class Settlement:
    """A lead's rows counted: stored from `owner`, shared with `other` while it is set."""

    owner: str | None  # None: no row has the lead id; the lead is detached
    other: str | None = None


def settle(state: LeadState, pointing: Sequence[str]) -> Settlement:
    """Who owns a lead, given every row that has its lead id now (sorted)."""
    if not pointing:
        return Settlement(None)
    owner = state.source_key if state.source_key in pointing else pointing[0]
    others = [key for key in pointing if key != owner]
    return Settlement(owner, others[0] if others else None)


def detached_reason(state: LeadState, lead_ids_now: Mapping[str, str | None]) -> str:
    moved_to = lead_ids_now.get(state.source_key)
    where = (
        f"row {state.source_key} now has lead id {moved_to}"
        if moved_to is not None
        else f"row {state.source_key} was deleted or has no usable lead id"
    )
    return f"detached: {where}; no row has this lead id, so nothing is sent to it"


@dataclass
class Checked:
    """The leads to push, and the ids of those held back or detached instead."""

    to_push: list[LeadState] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)


def check_owners(
    connection: Connection,
    *,
    rows: LeadRows,
    problems: RowProblems,
    source: SourceTable,
    leads: Sequence[LeadState],
    now: datetime,
) -> Checked:
    """Decide for each lead whether it is pushed, and record what changed on the way."""
    return _OwnerCheck(connection, rows, problems, source, now).run(leads)


class _OwnerCheck:
    def __init__(
        self,
        connection: Connection,
        rows: LeadRows,
        problems: RowProblems,
        source: SourceTable,
        now: datetime,
    ) -> None:
        self.connection = connection
        self.rows = rows
        self.problems = problems
        self.source = source
        self.now = now
        self.checked = Checked()

    def run(self, leads: Sequence[LeadState]) -> Checked:
        leads = self._claimed_by_rows_held_back(leads)
        keys = {s.source_key for s in leads} | {s.other_key for s in leads if s.other_key}
        lead_ids_now = self.source.lead_ids_now(self.connection, sorted(keys))
        recount: list[LeadState] = []
        for state in leads:
            look = first_look(state, lead_ids_now)
            if look is Look.SEND:
                self._push_unless_held(state)
            elif look is Look.SHARED:
                self.checked.shared.append(state.lead_id)
            elif look is Look.DETACHED:
                self._detach(state, detached_reason(state, lead_ids_now))
            else:
                recount.append(state)
        if recount:
            self._recount(recount, lead_ids_now)
        return self.checked

    def _claimed_by_rows_held_back(self, leads: Sequence[LeadState]) -> list[LeadState]:
        """The leads, each shared with a row held back at ingest that had its lead id: that
        row's values are unknown, but it has the lead id too (first_look checks it still
        does). Whichever was ingested first, the lead is not sent while both point to it."""
        unshared = [s.lead_id for s in leads if s.other_key is None]
        held_back = self.problems.rows_held_back_with(self.connection, unshared)
        claimed = []
        for state in leads:
            key = held_back.get(state.lead_id)
            if state.other_key is None and key is not None and key != state.source_key:
                self.rows.share_lead(self.connection, state.lead_id, key, self.now)
                claimed.append(replace(state, other_key=key))
            else:
                claimed.append(state)
        return claimed

    def _recount(self, leads: Sequence[LeadState], lead_ids_now: Mapping[str, str | None]) -> None:
        pointing = self.source.keys_pointing_to(self.connection, [s.lead_id for s in leads])
        for state in leads:
            keys_now = pointing.get(state.lead_id)
            if keys_now is None:  # a row of it cannot be read: hold on until it can
                self.checked.shared.append(state.lead_id)
                continue
            settlement = settle(state, keys_now)
            if settlement.owner is None:
                self._detach(state, detached_reason(state, lead_ids_now))
            else:
                self._resettle(state, settlement.owner, settlement.other)

    def _push_unless_held(self, state: LeadState) -> None:
        # Held for a value of its own row (it came for its shared state, now settled).
        if state.hold is None:
            self.checked.to_push.append(state)

    def _detach(self, state: LeadState, reason: str) -> None:
        self.rows.detach_lead(self.connection, state.lead_id, reason, self.now)
        self.checked.detached.append(state.lead_id)
        log.warning("lead detached: no row has its lead id", extra={"lead_id": state.lead_id})

    def _resettle(self, state: LeadState, owner: str, other: str | None) -> None:
        """Record a lead's counted owner; push it when it is no longer shared."""
        if owner == state.source_key:
            self.rows.share_lead(self.connection, state.lead_id, other, self.now)
            settled = replace(state, other_key=other)
        else:
            row = self._read_row(owner)
            if row is None or (isinstance(row, SourceRow) and row.lead_id != state.lead_id):
                # Changed since it was counted: the next run counts again.
                self.checked.shared.append(state.lead_id)
                return
            if isinstance(row, RowProblem):
                self.problems.note_row_problems(self.connection, [], [row], self.now, forget=False)
                row = SourceRow(row.key, state.lead_id, state.desired, hold=row.described())
            settled = self.rows.adopt_row(self.connection, state.lead_id, row, other, self.now)
        if settled.other_key is not None:
            self.checked.shared.append(state.lead_id)
        else:
            self._push_unless_held(settled)

    def _read_row(self, key: str) -> SourceRow | RowProblem | None:
        """The row's current values; a RowProblem when they cannot be read."""
        isolated = isolate(
            self.connection, [key], lambda keys: self.source.read(self.connection, keys)
        )
        if isolated.failed:
            return self.source.diagnose(self.connection, key, isolated.failed[key])
        rows = [row for part in isolated.results for row in part]
        return rows[0] if rows else None
