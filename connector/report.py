"""Human-readable views of the connector's state, for `lsq-sync status` and the demo."""

from __future__ import annotations

from connector.leads import LeadState, RowProblem
from connector.sync import Connector


def describe_lead(state: LeadState) -> str:
    """One line saying where a lead stands and why."""
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
    if state.pending and state.last_error:
        when = state.next_attempt_at.strftime("%H:%M:%S") if state.next_attempt_at else "next run"
        return f"will retry at {when}: {state.last_error}"
    if state.pending:
        return "waiting for the next run"
    return "in sync"


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


def print_status(connector: Connector) -> None:
    connector.check_ready()
    tables = connector.tables
    with connector.engine.connect() as connection:
        leads = tables.leads.all_leads(connection)
        backlog = tables.changes.pending_changes(connection)
        problems = tables.problems.row_problems(connection)
    runs = tables.runs.recent_runs(limit=5)
    not_in_sync = [
        s for s in leads if s.pending or s.rejected or s.set_aside or s.hold or s.other_key
    ]
    print(
        f"connector {connector.config.name}: {len(leads)} leads known, "
        f"{len(not_in_sync)} not in sync, {backlog} captured changes not yet ingested"
    )
    for state in not_in_sync:
        print(f"  lead {state.lead_id} (row {state.source_key}): {describe_lead(state)}")
    if problems:
        rows = "row" if len(problems) == 1 else "rows"
        print(f"{len(problems)} {rows} held back: they cannot be ingested until they change")
        for problem in problems:
            print(f"  {describe_row_problem(problem)}")
    print("recent runs:")
    for run in runs:
        finished = run.finished_at.strftime("%Y-%m-%d %H:%M:%S") if run.finished_at else "-"
        print(
            f"  #{run.run_id} {run.status:<8} finished {finished}  "
            f"ingested {run.changes_ingested}, pushed {run.leads_pushed}, "
            f"rejected {run.leads_rejected}, calls {run.calls}"
            + (f"  error: {run.error}" if run.error else "")
        )
