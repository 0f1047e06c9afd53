"""Per-lead state, and how source rows and push results change it. Pure code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from connector.values import Values, plan_update


@dataclass(frozen=True)
class SourceRow:
    key: str
    lead_id: str | None
    values: Values
    # Set when a mapped value cannot be sent; the lead is held back with this as its error.
    problem: str | None = None


@dataclass(frozen=True)
class LeadState:
    lead_id: str
    source_key: str
    desired: Values
    pushed: Values
    pending: bool
    rejected: bool = False
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    pushed_at: datetime | None = None


@dataclass(frozen=True)
class DesiredChange:
    """New desired values for a lead, as ingest will write them."""

    lead_id: str
    source_key: str
    desired: Values
    pending: bool
    problem: str | None = None


@dataclass(frozen=True)
class FoldResult:
    changes: list[DesiredChange]
    rows_without_lead: int


def fold_rows(
    rows: Iterable[SourceRow], existing: Mapping[str, LeadState], attributes: frozenset[str]
) -> FoldResult:
    """Fold the current values of changed rows into per-lead desired values.

    Leads whose desired values did not change are left out: nothing to write, nothing to send.
    """
    latest: dict[str, SourceRow] = {}
    without_lead = 0
    for row in rows:
        if row.lead_id is None:
            without_lead += 1
        else:
            latest[row.lead_id] = row
    changes = []
    for lead_id, row in latest.items():
        before = existing.get(lead_id)
        unchanged = before is not None and (before.desired, before.source_key) == (
            row.values,
            row.key,
        )
        if unchanged and row.problem is None:
            continue
        pushed = before.pushed if before is not None else {}
        changes.append(
            DesiredChange(
                lead_id=lead_id,
                source_key=row.key,
                desired=row.values,
                pending=bool(plan_update(row.values, pushed, attributes)),
                problem=row.problem,
            )
        )
    return FoldResult(changes, without_lead)


def after_push(
    desired: Values, pushed: Values, sent: Mapping[str, str | None], attributes: frozenset[str]
) -> tuple[Values, bool]:
    """What LeadSquared now holds, and whether the lead still needs a push.

    `desired` is re-read at record time: it may have moved on while the call was in flight.
    """
    now_pushed = {**pushed, **sent}
    return now_pushed, bool(plan_update(desired, now_pushed, attributes))
