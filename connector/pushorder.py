"""The order a push sends leads in: from both ends of the queue, taking turns.

The queue is ordered by `LeadState.waiting_since` (then lead id). A push reads it from two ends:
- the oldest end, first in first out: the lead waiting longest always gets every other call,
  so nothing waits forever, whatever keeps arriving;
- the newest end: the leads made due most recently go next, so a change committed during a
  long push (taken in by `took_in`, about every second) goes out within a few calls, instead of
  after a burst that came before it.
The backlog is what was due when the push began; the push ends once its two ends meet. Fresh
leads not yet sent then are the newest end of the next run's backlog, so they still go first.

Each stretch of the queue is read by one reader at a time, between the places it has reached
and the places the other has, so no lead is handed out twice by one push.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from connector.leads import LeadState


class PendingLeads(Protocol):
    def __call__(
        self,
        after: LeadState | None,
        limit: int,
        *,
        before: LeadState | None = None,
        newer_than: datetime | None = None,
        until: datetime | None = None,
        newest_first: bool = False,
    ) -> list[LeadState]:
        """Due leads strictly between `after` and `before` in the queue's order, waiting
        since after `newer_than` and at the latest `until`; newest first if asked."""
        ...


class _Backlog:
    """The leads due when the push began, read from both ends towards each other."""

    def __init__(self, read: PendingLeads, until: datetime) -> None:
        self._read = read
        self._until = until
        self._oldest: LeadState | None = None  # the last lead read from the old end
        self._newest: LeadState | None = None  # the last lead read from the new end
        self.done = False

    def oldest(self, limit: int) -> list[LeadState]:
        if self.done:
            return []
        leads = self._read(self._oldest, limit, before=self._newest, until=self._until)
        if leads:
            self._oldest = leads[-1]
        self.done = not leads
        return leads

    def newest(self, limit: int) -> list[LeadState]:
        if self.done:
            return []
        leads = self._read(
            self._oldest, limit, before=self._newest, until=self._until, newest_first=True
        )
        if leads:
            self._newest = leads[-1]
        self.done = not leads
        return leads


class _Fresh:
    """The leads one take-in made due: waiting since after `mark`, and at the latest the next
    take-in's mark (set when it comes); read newest first."""

    def __init__(self, read: PendingLeads, mark: datetime) -> None:
        self._read = read
        self._mark = mark
        self.until: datetime | None = None
        self._newest: LeadState | None = None

    def newest(self, limit: int) -> list[LeadState]:
        leads = self._read(
            None,
            limit,
            before=self._newest,
            newer_than=self._mark,
            until=self.until,
            newest_first=True,
        )
        if leads:
            self._newest = leads[-1]
        return leads


class _Reader:
    """Leads from one end, a page at a time, handed out a call's worth (a group) at a time."""

    def __init__(
        self,
        read: Callable[[int], list[LeadState]],
        owned: Callable[[list[LeadState]], list[LeadState]],
        *,
        leads_per_call: int,
        page: int,
    ) -> None:
        self._read = read
        self._owned = owned
        self._leads_per_call = leads_per_call
        self._page = page
        self._groups: deque[list[LeadState]] = deque()

    @property
    def empty(self) -> bool:
        return not self._groups

    def next_group(self) -> list[LeadState] | None:
        while not self._groups:
            leads = self._read(self._page)
            if not leads:
                return None
            owned = self._owned(leads)
            size = self._leads_per_call
            self._groups.extend(owned[i : i + size] for i in range(0, len(owned), size))
        return self._groups.popleft()


class PushOrder:
    """Hands out the push's groups, taking turns between the two ends of the queue."""

    def __init__(
        self,
        read: PendingLeads,
        owned: Callable[[list[LeadState]], list[LeadState]],
        *,
        began: datetime,
        leads_per_call: int,
        page: int,
        both_ends: bool,
    ) -> None:
        """Without `both_ends`, only the oldest end: the backlog, first in first out."""
        self._read = read
        self._backlog = _Backlog(read, began)
        self._fresh: list[_Fresh] = []
        self._readers = [
            _Reader(self._backlog.oldest, owned, leads_per_call=leads_per_call, page=page)
        ]
        if both_ends:
            self._readers.append(
                _Reader(self._newest, owned, leads_per_call=leads_per_call, page=page)
            )
        self._turn = 0

    @property
    def done(self) -> bool:
        """The backlog is all handed out: the push ends once its calls are answered."""
        return self._backlog.done and all(reader.empty for reader in self._readers)

    def took_in(self, mark: datetime) -> None:
        """A take-in that began at `mark` may have made leads due."""
        if self._fresh:
            self._fresh[-1].until = mark
        self._fresh.append(_Fresh(self._read, mark))

    def next_group(self) -> list[LeadState] | None:
        """The next call's leads; None while nothing more is to be handed out."""
        for offset in range(len(self._readers)):
            reader = self._readers[(self._turn + offset) % len(self._readers)]
            group = reader.next_group()
            if group is not None:
                self._turn += 1
                return group
        return None

    def _newest(self, limit: int) -> list[LeadState]:
        if self._backlog.done:
            return []  # the push is ending: fresh leads wait for the next run
        for fresh in reversed(list(self._fresh)):
            leads = fresh.newest(limit)
            if leads:
                return leads
            if fresh.until is not None:
                self._fresh.remove(fresh)  # closed and read to its end
        return self._backlog.newest(limit)
