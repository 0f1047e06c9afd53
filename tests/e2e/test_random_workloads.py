"""Random application workloads, synced by `lsq-sync run` subprocesses at random points.

Each run is checked against a model computed from the source table alone: which leads net
changed since the previous run, and exactly which attributes each of them must be sent.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from connector.testing.emulator import Emulator
from tests.e2e.harness import Project, assert_only_mapped, lead_updates
from tests.support import MAPPING, source_values

SEEDS = [11, 23, 37]
ROWS = 12
STEPS = 40
RUNS_BEFORE_THE_LAST = 2
OPERATIONS = 7  # kinds of write in Workload._pick

CHOICES: dict[str, list[Any]] = {
    "phone": ["111", "222", "333", None],
    "city": ["Pune", "Goa", "Delhi", "Agra", None],
    "plan": ["free", "pro", None],
    "score": [1, 2, 3, None],
}
UNMAPPED: dict[str, list[Any]] = {
    "name": ["Ada", "Bob", "Cy", None],
    "notes": ["vip", "call back", "", None],
}
# What the triggers watch: a change to any of these must be captured, nothing else.
CAPTURED = (*MAPPING, "lsq_prospect_id")

Values = dict[str, str | None]
State = dict[str, Values]


def net_changes(before: State, after: State) -> dict[str, dict[str, str]]:
    """Per lead, the attributes LeadSquared must be sent to go from `before` to `after`.

    A lead absent from `before` is empty in LeadSquared (the emulator seeded it so), and
    clearing a value sends "" (see connector.values.to_payload).
    """
    changes = {}
    for lead_id, values in after.items():
        old = before.get(lead_id, {})
        sent = {a: "" if v is None else v for a, v in values.items() if v != old.get(a)}
        if sent:
            changes[lead_id] = sent
    return changes


class Workload:
    """Random writes to `customers`, counting the changes the capture triggers must record."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = 1
        self.captured_changes = 0
        self.performed: Counter[str] = Counter()

    def transaction(self, connection: sa.Connection) -> None:
        for _ in range(self.rng.randint(1, 3)):
            operation = self._pick()
            operation(connection)
            self.performed[operation.__name__] += 1

    def _write(self, connection: sa.Connection, statement: str, params: dict[str, Any]) -> None:
        """One statement; every row whose captured columns it really changed is one change."""
        before = _captured(connection)
        connection.execute(sa.text(statement), params)
        after = _captured(connection)
        changed = [key for key, values in after.items() if before.get(key) != values]
        self.captured_changes += len(changed)

    def _pick(self) -> Callable[[sa.Connection], None]:
        operations: list[tuple[Callable[[sa.Connection], None], int]] = [
            (self._insert, 3 if self.next_id <= ROWS else 0),
            (self._update_mapped, 5),
            (self._no_op_update, 2),
            (self._update_unmapped, 2),
            (self._change_and_change_back, 1),
            (self._link_lead, 2),
            (self._bulk_update, 1),
        ]
        if self.next_id == 1:
            return self._insert
        functions, weights = zip(*operations, strict=True)
        return self.rng.choices(functions, weights)[0]

    def _random_row(self, connection: sa.Connection) -> int:
        ids = sorted(connection.exec_driver_sql("SELECT id FROM customers").scalars())
        return self.rng.choice(ids)

    def _insert(self, connection: sa.Connection) -> None:
        row_id = self.next_id
        self.next_id += 1
        values = {column: self.rng.choice(choices) for column, choices in CHOICES.items()}
        values |= {column: self.rng.choice(choices) for column, choices in UNMAPPED.items()}
        values["lsq_prospect_id"] = f"L{row_id}" if self.rng.random() < 0.6 else None
        columns = ", ".join(values)
        self._write(
            connection,
            f"INSERT INTO customers (id, {columns}) "
            f"VALUES (:id, {', '.join(':' + c for c in values)})",
            {"id": row_id, **values},
        )

    def _set(self, connection: sa.Connection, row_id: int, values: dict[str, Any]) -> None:
        assignments = ", ".join(f"{column} = :{column}" for column in values)
        self._write(
            connection,
            f"UPDATE customers SET {assignments} WHERE id = :id",
            {"id": row_id, **values},
        )

    def _update_mapped(self, connection: sa.Connection) -> None:
        columns = self.rng.sample(sorted(CHOICES), self.rng.randint(1, 2))
        values = {column: self.rng.choice(CHOICES[column]) for column in columns}
        self._set(connection, self._random_row(connection), values)

    def _random_cell(self, connection: sa.Connection) -> tuple[int, str, Any]:
        """A random row, one of its mapped columns, and the value that column holds now."""
        row_id = self._random_row(connection)
        column = self.rng.choice(sorted(CHOICES))
        current = connection.execute(
            sa.text(f"SELECT {column} FROM customers WHERE id = :id"), {"id": row_id}
        ).scalar_one()
        return row_id, column, current

    def _no_op_update(self, connection: sa.Connection) -> None:
        row_id, column, current = self._random_cell(connection)
        self._set(connection, row_id, {column: current})

    def _update_unmapped(self, connection: sa.Connection) -> None:
        column = self.rng.choice(sorted(UNMAPPED))
        value = self.rng.choice(UNMAPPED[column])
        self._set(connection, self._random_row(connection), {column: value})

    def _change_and_change_back(self, connection: sa.Connection) -> None:
        row_id, column, current = self._random_cell(connection)
        other = self.rng.choice([v for v in CHOICES[column] if v != current])
        self._set(connection, row_id, {column: other})
        self._set(connection, row_id, {column: current})

    def _link_lead(self, connection: sa.Connection) -> None:
        unlinked = sorted(
            connection.exec_driver_sql(
                "SELECT id FROM customers WHERE lsq_prospect_id IS NULL"
            ).scalars()
        )
        if unlinked:
            row_id = self.rng.choice(unlinked)
            self._set(connection, row_id, {"lsq_prospect_id": f"L{row_id}"})

    def _bulk_update(self, connection: sa.Connection) -> None:
        # One statement touching several rows: the PostgreSQL trigger is statement-level.
        self._write(
            connection,
            "UPDATE customers SET score = COALESCE(score, 0) + 1 WHERE MOD(id, 3) = :r",
            {"r": self.rng.randrange(3)},
        )


def _captured(connection: sa.Connection) -> dict[int, tuple[Any, ...]]:
    rows = connection.exec_driver_sql(f"SELECT id, {', '.join(CAPTURED)} FROM customers")
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.mark.parametrize("seed", SEEDS)
def test_random_workload_converges_sending_only_net_changes(
    seed: int, project: Project, emulator: Emulator
) -> None:
    rng = random.Random(seed)
    for row_id in range(1, ROWS + 1):
        emulator.add_lead(f"L{row_id}")
    project.init()
    workload = Workload(rng)
    run_after = set(rng.sample(range(STEPS - 1), RUNS_BEFORE_THE_LAST)) | {STEPS - 1}
    init_again_after = rng.randrange(STEPS - 1)

    pushed: State = {}  # the source's mapped values as of the previous run
    in_leadsquared: dict[str, dict[str, str]] = emulator.leads()
    changes_seen = 0
    for step in range(STEPS):
        with project.engine.begin() as connection:
            workload.transaction(connection)
        if step == init_again_after:
            # Regenerating the triggers mid-workload must lose no captured change.
            project.init()
        if step not in run_after:
            continue
        desired = source_values(project.url)
        expected = net_changes(pushed, desired)
        emulator.clear_requests()

        summary = project.run()

        calls = lead_updates(emulator)
        assert_only_mapped(calls)
        sent = dict(calls)
        assert len(sent) == len(calls), f"a lead got more than one call in one run: {calls}"
        for lead_id, attributes in calls:
            before = in_leadsquared[lead_id]
            unchanged = {a for a, v in attributes.items() if before.get(a, "") == v}
            assert not unchanged, f"{lead_id}: {unchanged} sent with the value it already had"
        assert len(calls) == len(expected), "one call per lead with a net change"
        assert sent == expected
        assert summary.status == "ok"
        assert (summary.pushed, summary.calls) == (len(expected), len(expected))
        assert (summary.rejected, summary.deferred) == (0, 0)
        assert summary.changes == workload.captured_changes - changes_seen
        changes_seen = workload.captured_changes

        for lead_id, attributes in expected.items():
            in_leadsquared[lead_id] = {**in_leadsquared[lead_id], **attributes}
        assert emulator.leads() == in_leadsquared
        pushed = desired

    assert len(workload.performed) == OPERATIONS, f"some kinds never ran: {workload.performed}"
    final = source_values(project.url)
    assert final == pushed
    assert {
        lead_id: {a: v for a, v in values.items() if v != ""}
        for lead_id, values in emulator.leads().items()
        if lead_id in final
    } == {
        lead_id: {a: v for a, v in values.items() if v is not None}
        for lead_id, values in final.items()
    }
    never_linked = set(emulator.leads()) - set(final)
    assert all(emulator.lead(lead_id) == {} for lead_id in never_linked)
