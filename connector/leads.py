"""Per-lead state, and how source rows and push results change it. Pure code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from connector.values import Values, plan_update


@dataclass(frozen=True)
class SourceRow:
    key: str
    lead_id: str | None
    values: Values
    # Set when a mapped value cannot be sent: why the connector holds the lead back.
    hold: str | None = None


@dataclass(frozen=True)
class RowProblem:
    """A source row that cannot be ingested at all: held back with why, until it changes."""

    key: str
    reason: str
    lead_id: str | None = None  # when it could be read
    column: str | None = None  # the source column at fault, when one is

    def described(self) -> str:
        """As a lead's hold names a value that cannot be sent: row, column, reason."""
        column = f", column {self.column!r}" if self.column else ""
        return f"row {self.key}{column}: {self.reason}"


@dataclass(frozen=True)
class LeadState:
    lead_id: str
    source_key: str
    desired: Values
    pushed: Values
    pending: bool
    # When its oldest change not yet pushed was ingested: its place in push's queue, oldest
    # first (then by lead id).
    waiting_since: datetime | None = None
    rejected: bool = False
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    pushed_at: datetime | None = None
    set_aside: Values = field(default_factory=dict)
    # Why each attribute set aside is: LeadSquared's answer, or pre-flight's rule.
    aside_reasons: dict[str, str] = field(default_factory=dict)
    # Why the connector itself holds the lead back (no call is made); not LeadSquared's word.
    hold: str | None = None
    # Another row that claimed this lead id: nothing is sent while both point to it.
    other_key: str | None = None


@dataclass(frozen=True)
class DesiredChange:
    """A lead's desired values as the source holds them now, as ingest will write them."""

    lead_id: str
    source_key: str
    desired: Values
    hold: str | None = None
    other_key: str | None = None  # another row of the same batch with this lead id


@dataclass(frozen=True)
class FoldResult:
    changes: list[DesiredChange]
    rows_without_lead: int
    problems: list[RowProblem] = field(default_factory=list)
    # Rows read whole whose lead is held back for a value that cannot be sent.
    rows_holding_lead: int = 0


def fold_rows(rows: Iterable[SourceRow | RowProblem]) -> FoldResult:
    """Fold the current values of changed rows into one desired state per lead.

    Whether a lead then needs a call is decided at push time, against what was pushed; ingest
    only has to notice that the desired values moved, which the database does in the upsert.
    Several rows with one lead id leave the last one's values and another one's key: the
    lead is held back until only one row points to it (connector.ownership).
    """
    latest: dict[str, SourceRow] = {}
    others: dict[str, str] = {}
    problems: list[RowProblem] = []
    without_lead = holding = 0
    for row in rows:
        if isinstance(row, RowProblem):
            problems.append(row)
            continue
        if row.lead_id is None:
            without_lead += 1
        else:
            holding += row.hold is not None
            if row.lead_id in latest:
                others[row.lead_id] = latest[row.lead_id].key
            latest[row.lead_id] = row
    changes = [
        DesiredChange(lead_id, row.key, row.values, row.hold, others.get(lead_id))
        for lead_id, row in latest.items()
    ]
    return FoldResult(changes, without_lead, problems, holding)


def after_push(
    desired: Values,
    pushed: Values,
    sent: Mapping[str, str | None],
    attributes: frozenset[str],
    set_aside: Mapping[str, str | None] | None = None,
    *,
    kept_when_empty: frozenset[str] = frozenset(),
) -> tuple[Values, Values, bool]:
    """What LeadSquared now holds, what stays set aside, and whether the lead needs a push.

    `desired` is re-read at record time: it may have moved on while the call was in flight.
    An attribute stays set aside only while its desired value is still the one refused: not
    once it was accepted, nor once the source moved on (back to what LeadSquared holds, say).
    """
    now_pushed = {**pushed, **sent}
    still_aside = {
        a: v
        for a, v in (set_aside or {}).items()
        if a not in sent and a in desired and desired[a] == v
    }
    pending = plan_update(
        desired, now_pushed, attributes, still_aside, kept_when_empty=kept_when_empty
    )
    return now_pushed, still_aside, bool(pending)


def reasons_kept(reasons: Mapping[str, str], set_aside: Mapping[str, str | None]) -> dict[str, str]:
    """Why each attribute still set aside is: the reasons of the others are gone with them."""
    return {name: reason for name, reason in reasons.items() if name in set_aside}


def after_failure(
    desired_now: Values,
    failed_with: Values,
    attempts: int,
    *,
    rejected: bool,
    next_attempt_at: datetime | None,
) -> tuple[int, bool, datetime | None]:
    """A failed push's tries, rejection and retry time, as recorded.

    `desired_now` is re-read at record time. A rejection or a retry delay holds only for the
    values that failed (`failed_with`): values ingest wrote while the call was in flight were
    never sent, so they go at the next chance.
    """
    still_same = desired_now == failed_with
    return attempts + 1, rejected and still_same, next_attempt_at if still_same else None
