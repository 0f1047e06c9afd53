"""Views of the connector's state for `lsq-sync status` (text or JSON) and the demo."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from connector.leads import LeadState, RowProblem
from connector.status import DEFAULT_LIMIT, CallsUsed, RunInFlight, Status, read_status
from connector.sync import Connector


def lead_state_name(state: LeadState, in_flight: RunInFlight | None = None) -> str:
    """Where a lead stands, as one stable word (the JSON view's `state`)."""
    if state.other_key is not None:
        return "conflict"
    if state.hold is not None:
        return "held_back"
    if state.rejected:
        return "rejected"
    if state.set_aside and not state.pending:
        return "attributes_set_aside"
    if _being_pushed(state, in_flight):
        return "being_pushed"
    if state.pending and state.last_error:
        return "retrying"
    if state.pending:
        return "pending"
    return "in_sync"


def _being_pushed(state: LeadState, in_flight: RunInFlight | None) -> bool:
    """Pending and due while a run holds the run lock: that run's to push."""
    if in_flight is None or not state.pending:
        return False
    return state.next_attempt_at is None or state.next_attempt_at <= in_flight.seen_at


def describe_lead(state: LeadState, in_flight: RunInFlight | None = None) -> str:
    """One line saying where a lead stands and why. A lead waiting while a run holds the run
    lock is that run's to push (calls in flight are not recorded lead by lead)."""
    if state.other_key is not None:
        return (
            f"held back by the connector, nothing sent: rows {state.source_key} and "
            f"{state.other_key} both have lead id {state.lead_id}; give one of them another "
            "lead id (or none)"
        )
    if state.hold is not None:
        return f"held back by the connector, nothing sent: {state.hold}"
    if state.rejected:
        # Refused by LeadSquared, or not found there (a lead looked up by email or phone).
        return f"rejected, waiting for new values or `lsq-sync retry`: {state.last_error}"
    if state.set_aside and not state.pending:
        names = ", ".join(sorted(state.set_aside))
        return (
            f"in sync except {names}, held back until the value changes (or, once the field "
            f"in LeadSquared takes it, `lsq-sync retry --lead {state.lead_id}`): "
            f"{_reasons(state)}"
        )
    if in_flight is not None and _being_pushed(state, in_flight):
        return f"being pushed by {_run_name(in_flight)}, in progress"
    if state.pending and state.last_error:
        when = state.next_attempt_at.strftime("%H:%M:%S") if state.next_attempt_at else "next run"
        return f"will retry at {when}: {state.last_error}"
    if state.pending:
        return "waiting for the next run"
    return "in sync"


def _run_name(in_flight: RunInFlight) -> str:
    return "a run" if in_flight.run_id is None else f"run #{in_flight.run_id}"


def _reasons(state: LeadState) -> str | None:
    """Why the lead's attributes are set aside, each reason once."""
    reasons = [
        state.aside_reasons[name] for name in sorted(state.set_aside) if name in state.aside_reasons
    ]
    return "; ".join(dict.fromkeys(reasons)) or state.last_error


def describe_row_problem(problem: RowProblem) -> str:
    """One line naming a row held back at ingest, its lead when known, and why."""
    lead = f" (lead {problem.lead_id})" if problem.lead_id is not None else ""
    column = f", column {problem.column!r}" if problem.column else ""
    return f"row {problem.key}{lead}{column}: {problem.reason}"


def print_status(
    connector: Connector, limit: int = DEFAULT_LIMIT, *, as_json: bool = False
) -> None:
    """`lsq-sync status`: the connector's status, each list capped at `limit` entries."""
    status = read_status(connector, limit)
    if as_json:
        print(status_json(status))
        return
    for line in status_lines(status):
        print(line)


def status_lines(status: Status) -> list[str]:
    counts = status.leads
    lines = [
        f"connector {status.connector}: {_count(counts.known, 'lead')} known, "
        f"{counts.not_in_sync} not in sync, "
        f"{_count(status.changes_not_ingested, 'captured change')} not yet ingested",
        f"backlog: {_count(counts.pending, 'lead')} to push"
        + (f" ({counts.retrying_later} waiting out a retry delay)" if counts.retrying_later else "")
        + f"; lag {_lag(status)}",
    ]
    if status.run_in_flight is not None:
        flight = status.run_in_flight
        started = f", started {_time(flight.started_at)}" if flight.started_at else ""
        lines.append(
            f"{_run_name(flight)} is in progress{started} (heartbeat "
            f"{flight.heartbeat_age_seconds:.1f} s ago): it pushes the pending leads"
        )
    lines.append(f"calls: {_calls(status.calls)}")
    if status.bulk_calls is not None:
        lines.append(f"bulk calls: {_calls(status.bulk_calls)}")
    lines.append(
        "not sent: "
        + ", ".join(
            [
                f"{_count(status.rows_without_lead_id, 'row')} with no lead id",
                f"{_count(counts.conflicts, 'conflict')} (several rows with one lead id)",
                f"{_count(status.rows_held_back, 'bad row')} (held at ingest)",
                f"{_count(counts.held_back, 'lead')} held back by the connector",
                f"{_count(counts.attributes_set_aside, 'lead')} with attributes set aside",
                f"{_count(counts.rejected, 'lead')} rejected",
            ]
        )
    )
    if status.not_in_sync:
        lines.append("leads not in sync:")
        lines.extend(
            f"  lead {state.lead_id} (row {state.source_key}): "
            f"{describe_lead(state, status.run_in_flight)}"
            for state in status.not_in_sync
        )
        lines.extend(_more(counts.not_in_sync - len(status.not_in_sync), "lead", status.limit))
    if status.problems:
        lines.append(
            f"{_count(status.rows_held_back, 'row')} held back at ingest: they cannot be "
            "ingested until they change"
        )
        lines.extend(f"  {describe_row_problem(problem)}" for problem in status.problems)
        lines.extend(_more(status.rows_held_back - len(status.problems), "row", status.limit))
    if status.runs:
        lines.append("recent runs:")
        for run in status.runs:
            finished = _time(run.finished_at) if run.finished_at else "-"
            lines.append(
                f"  #{run.run_id} {run.status:<8} finished {finished}  "
                f"ingested {run.changes_ingested}, pushed {run.leads_pushed}, "
                f"rejected {run.leads_rejected}, calls {run.calls}"
                + (f"  error: {run.error}" if run.error else "")
            )
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _more(hidden: int, noun: str, limit: int) -> list[str]:
    if hidden <= 0:
        return []
    return [f"  ... and {hidden} more {noun if hidden == 1 else noun + 's'} (--limit {limit})"]


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _lag(status: Status) -> str:
    lag, oldest = status.lag_seconds, status.oldest_waiting
    if lag is None or oldest is None:
        return "none (no lead waits to be pushed)"
    return f"{_duration(lag)} (the oldest lead waiting since {_time(oldest)})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _calls(used: CallsUsed) -> str:
    text = (
        f"{used.in_window} of {used.limit} in the current {used.window_seconds:g} s window, "
        f"{used.today} today (UTC)"
    )
    text += (
        f" of a daily budget of {used.daily_budget}" if used.daily_budget else ", no daily budget"
    )
    if used.blocked_until is not None:
        text += f"; held back by a throttle until {_time(used.blocked_until)}"
    return text


def status_json(status: Status) -> str:
    """The status as one JSON document: stable keys, ISO 8601 times in UTC, lists capped."""
    counts = status.leads
    document = {
        "connector": status.connector,
        "at": status.now,
        "limit": status.limit,
        "backlog": {
            "changes_not_ingested": status.changes_not_ingested,
            "leads_pending": counts.pending,
            "leads_retrying_later": counts.retrying_later,
            "lag_seconds": status.lag_seconds,
            "oldest_waiting_since": status.oldest_waiting,
        },
        "run_in_flight": None if status.run_in_flight is None else asdict(status.run_in_flight),
        "calls": asdict(status.calls),
        "bulk_calls": None if status.bulk_calls is None else asdict(status.bulk_calls),
        "leads": asdict(counts),
        "rows": {
            "without_lead_id": status.rows_without_lead_id,
            "held_back": status.rows_held_back,
        },
        "not_in_sync": [_lead_json(state, status.run_in_flight) for state in status.not_in_sync],
        "not_in_sync_not_shown": max(0, counts.not_in_sync - len(status.not_in_sync)),
        "rows_held_back": [
            {
                "row": problem.key,
                "lead_id": problem.lead_id,
                "column": problem.column,
                "reason": problem.reason,
            }
            for problem in status.problems
        ],
        "rows_held_back_not_shown": max(0, status.rows_held_back - len(status.problems)),
        "recent_runs": [asdict(run) for run in status.runs],
    }
    return json.dumps(_json_value(document), indent=2)


def _lead_json(state: LeadState, in_flight: RunInFlight | None) -> dict[str, Any]:
    return {
        "lead_id": state.lead_id,
        "row": state.source_key,
        "state": lead_state_name(state, in_flight),
        "description": describe_lead(state, in_flight),
        "error": state.last_error,
        "attempts": state.attempts,
        "next_attempt_at": state.next_attempt_at,
        "attributes_set_aside": sorted(state.set_aside),
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value
