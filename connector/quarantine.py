"""Rows that cannot be read or stored: found by splitting the work that failed, so that one
bad row holds back only itself while every other row goes on.

Only data errors are isolated: a value the driver cannot convert, text that is not UTF-8, a
value too long for the lead table. Anything else (a lost connection, a missing table) is not
about one row and still fails the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connector.errors import UnreadableRowsError

T = TypeVar("T")

# What a reason may take of a driver's message; a value quoted in it can be long.
_REASON_CHARACTERS = 300
# sqlite3 reports text that is not UTF-8 as an OperationalError, like a locked database.
_SQLITE_NOT_UTF8 = "Could not decode to UTF-8"


def reason_of(error: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's decorations."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    text = lines[0] if lines else type(original).__name__
    if len(text) > _REASON_CHARACTERS:
        text = text[: _REASON_CHARACTERS - 1] + "…"
    return text


def is_data_error(error: sa.exc.DBAPIError) -> bool:
    """Whether a driver error is about the values of the rows at hand."""
    if isinstance(error, sa.exc.DataError):
        return True
    return isinstance(error, sa.exc.OperationalError) and _SQLITE_NOT_UTF8 in str(error.orig)


@contextmanager
def data_errors() -> Iterator[None]:
    """Raise a driver's data error as UnreadableRowsError; let every other error through."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if not is_data_error(exc):
            raise
        raise UnreadableRowsError(reason_of(exc)) from exc


@dataclass
class Isolated(Generic[T]):
    """What the parts that worked returned, and each key that failed alone, with why."""

    results: list[T] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def isolate(
    connection: Connection, keys: Sequence[str], attempt: Callable[[Sequence[str]], T]
) -> Isolated[T]:
    """Run `attempt` over the keys in a savepoint; if a data error fails it, run it over each
    half in turn, down to single keys. One bad key among n costs about 2 log2(n) attempts,
    each undone whole when it fails, and none on the happy path but the savepoint."""
    outcome: Isolated[T] = Isolated()
    pending = [list(keys)]
    while pending:
        part = pending.pop()
        try:
            with connection.begin_nested(), data_errors():
                result = attempt(part)
        except UnreadableRowsError as exc:
            if len(part) == 1:
                outcome.failed[part[0]] = str(exc)
            else:
                middle = len(part) // 2
                pending.extend([part[middle:], part[:middle]])
            continue
        outcome.results.append(result)
    return outcome
