"""The order a push sends leads in: single changes first, the backlog and bursts from both ends.

The queue is ordered by `LeadState.waiting_since` (then lead id). A push has two ends to take
calls from:
- the oldest end reads the backlog (what was due when the push began) first in first out, so
  the lead waiting longest always gets a call soon, whatever keeps arriving;
- the fresh end serves what the push takes in meanwhile (`took_in`, about every second). Each
  take-in is a window of leads. One that made at most `burst_leads` leads due (what one rate
  window's calls carry) holds single changes: those windows go first, oldest first, so a change
  committed during a long push goes out within a few calls, in the order it came. A larger one
  is a burst: it waits behind them, as the backlog does. Then the fresh end reads the
  backlog's newest end, towards the oldest end's place.

The fresh end takes up to `FRESH_TURNS` calls in a row while it serves single changes, and
every other call otherwise: a stream of single changes cannot starve the backlog or a burst
(every fourth call is theirs), and a burst cannot starve single changes.

The push ends once the backlog's two ends meet. While it waits for its last calls, single
changes taken in still go out; bursts and whatever was not reached are the next run's backlog.
Each stretch of the queue is read by one reader at a time, between the places it has reached
and the places the other has, so no lead is handed out twice by one push.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from connector.leads import LeadState

# Calls in a row the fresh end may take while it serves single changes, before the oldest end
# gets one: single changes get three quarters of the calls, and the backlog never less than a
# quarter.
FRESH_TURNS = 3


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


class _Window:
    """The leads one take-in made due: waiting since after `mark`, and at the latest the next
    take-in's mark (set when it comes); read oldest first."""

    def __init__(self, read: PendingLeads, mark: datetime) -> None:
        self._read = read
        self._mark = mark
        self.until: datetime | None = None
        self._last: LeadState | None = None
        self._burst: bool | None = None

    @property
    def closed(self) -> bool:
        """The next take-in has come: no lead joins this window any more."""
        return self.until is not None

    def is_burst(self, burst_leads: int) -> bool:
        """Whether the take-in made more than `burst_leads` leads due, decided at first sight
        (when its take-in is over)."""
        if self._burst is None:
            seen = self._read(None, burst_leads + 1, newer_than=self._mark, until=self.until)
            self._burst = len(seen) > burst_leads
        return self._burst

    def oldest(self, limit: int) -> list[LeadState]:
        leads = self._read(self._last, limit, newer_than=self._mark, until=self.until)
        if leads:
            self._last = leads[-1]
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
    """Hands out the push's groups: single changes first, and the backlog from both ends."""

    def __init__(
        self,
        read: PendingLeads,
        owned: Callable[[list[LeadState]], list[LeadState]],
        *,
        began: datetime,
        leads_per_call: int,
        page: int,
        both_ends: bool,
        burst_leads: int | None = None,
    ) -> None:
        """Without `both_ends`, only the oldest end: the backlog, first in first out. A take-in
        of more than `burst_leads` leads (by default `page`) is a burst."""
        self._read = read
        self._backlog = _Backlog(read, began)
        self._windows: list[_Window] = []
        self._burst_leads = page if burst_leads is None else burst_leads
        self._oldest = _Reader(
            self._backlog.oldest, owned, leads_per_call=leads_per_call, page=page
        )
        # A call's worth at a time: a change taken in must not wait behind leads read ahead.
        self._fresh = (
            _Reader(self._fresh_end, owned, leads_per_call=leads_per_call, page=leads_per_call)
            if both_ends
            else None
        )
        self._single = False  # whether the fresh end's last read was of single changes
        self._fresh_in_a_row = 0

    @property
    def done(self) -> bool:
        """The backlog is all handed out: the push ends once its calls are answered, and
        until then only single changes taken in are handed out."""
        return (
            self._backlog.done and self._oldest.empty and (self._fresh is None or self._fresh.empty)
        )

    def took_in(self, mark: datetime) -> None:
        """A take-in that began at `mark` may have made leads due."""
        if self._windows:
            self._windows[-1].until = mark
        self._windows.append(_Window(self._read, mark))

    def next_group(self) -> list[LeadState] | None:
        """The next call's leads; None while nothing more is to be handed out."""
        if self._fresh is None:
            return self._oldest.next_group()
        turns = FRESH_TURNS if self._single else 1
        fresh_first = self._fresh_in_a_row < turns
        for reader in (self._fresh, self._oldest) if fresh_first else (self._oldest, self._fresh):
            group = reader.next_group()
            if group is not None:
                self._fresh_in_a_row = self._fresh_in_a_row + 1 if reader is self._fresh else 0
                return group
        return None

    def _fresh_end(self, limit: int) -> list[LeadState]:
        self._single = False
        for window in list(self._windows):
            if window.is_burst(self._burst_leads):
                continue
            leads = window.oldest(limit)
            if leads:
                self._single = True
                return leads
            if window.closed:
                self._windows.remove(window)  # read to its end
        if self._backlog.done:
            return []  # the push is ending: bursts wait for the next run, as its backlog
        for window in list(self._windows):  # the bursts left, oldest first
            leads = window.oldest(limit)
            if leads:
                return leads
            if window.closed:
                self._windows.remove(window)
        return self._backlog.newest(limit)
