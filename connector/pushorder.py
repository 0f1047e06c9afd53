"""The order a push sends leads in: single changes first, then the backlog and bursts in turns.

The queue is ordered by `LeadState.waiting_since` (then lead id). A push reads it in three ways:
- single changes: what the push takes in meanwhile (`took_in`, about every second) comes in
  windows, one per take-in. A window of at most `burst_leads` leads (what one rate window's
  calls carry) holds single changes: those go first, oldest first, so that a change committed
  during a long push goes out within a few calls, in the order it came;
- the oldest end: the backlog (what was due when the push began), first in first out, so the
  lead waiting longest always gets a call soon, whatever keeps arriving;
- the rest: the larger windows (bursts), oldest first, then the backlog's newest end, towards
  the oldest end's place.

Single changes take up to `FRESH_TURNS` calls in a row; then one call goes to the oldest end
or to the rest, which take turns. So a stream of single changes cannot starve the backlog or a
burst (a quarter of the calls stay theirs), and a burst cannot starve single changes.

The push ends once the backlog's two ends meet. While it waits for its last calls, single
changes taken in still go out; bursts not yet read are the next run's backlog. Each stretch of
the queue is read by one reader at a time, between the places it has reached and the places
the other has, so no lead is handed out twice at once (one changed during its call is due
again once it is answered, and goes out again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from connector.leads import LeadState

# Calls in a row single changes may take before the backlog or a burst gets one: three quarters
# of the calls while they keep coming, and never less than a quarter for the others.
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
    """Hands out the push's groups: single changes first, then the backlog and bursts."""

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
        # Whatever is due already is the backlog, even dated after `began` (the clock was set
        # back since): no take-in window would cover it.
        newest = read(None, 1, newest_first=True)
        if newest and newest[0].waiting_since is not None:
            began = max(began, newest[0].waiting_since)
        self._backlog = _Backlog(read, began)
        self._burst_leads = page if burst_leads is None else burst_leads
        # From `began`: a lead changed while its call was in flight is due again from the
        # moment its call is answered, which may come before the first take-in.
        self._windows = [_Window(read, began)]
        self._mark = began
        self._oldest = _Reader(
            self._backlog.oldest, owned, leads_per_call=leads_per_call, page=page
        )
        self._singles: _Reader | None = None
        self._rest: _Reader | None = None
        if both_ends:
            # A call's worth at a time: a change taken in must not wait behind leads read ahead.
            self._singles = _Reader(
                self._single_changes, owned, leads_per_call=leads_per_call, page=leads_per_call
            )
            self._rest = _Reader(
                self._bursts_then_newest, owned, leads_per_call=leads_per_call, page=page
            )
        self._singles_in_a_row = 0
        self._oldest_next = True

    @property
    def done(self) -> bool:
        """The backlog is all handed out: the push ends once its calls are answered, and
        until then only single changes taken in are handed out."""
        return (
            self._backlog.done and self._oldest.empty and (self._rest is None or self._rest.empty)
        )

    def took_in(self, mark: datetime) -> None:
        """A take-in that began at `mark` may have made leads due."""
        if mark <= self._mark:
            # The clock was set back: a window from `mark` would cover leads already handed
            # out, which could go out again while their calls are in flight. The current
            # window stays open; what this take-in made due falls in the backlog's range or an
            # earlier window's, and goes out when a reader reaches it, or in the next run.
            return
        self._mark = mark
        self._windows[-1].until = mark
        self._windows.append(_Window(self._read, mark))

    def next_group(self) -> list[LeadState] | None:
        """The next call's leads; None while nothing more is to be handed out."""
        if self._singles is None or self._rest is None:
            return self._oldest.next_group()
        if self._singles_in_a_row < FRESH_TURNS:
            group = self._singles.next_group()
            if group is not None:
                self._singles_in_a_row += 1
                return group
        others = (self._oldest, self._rest) if self._oldest_next else (self._rest, self._oldest)
        for reader in others:
            group = reader.next_group()
            if group is not None:
                self._oldest_next = reader is self._rest
                self._singles_in_a_row = 0
                return group
        return self._singles.next_group()  # nothing else is left to take the turn

    def _single_changes(self, limit: int) -> list[LeadState]:
        return self._from_windows(limit, bursts=False)

    def _bursts_then_newest(self, limit: int) -> list[LeadState]:
        """The bursts taken in, oldest first, then the backlog's newest end."""
        if self._backlog.done:
            return []  # the push is ending: bursts wait for the next run, as its backlog
        return self._from_windows(limit, bursts=True) or self._backlog.newest(limit)

    def _from_windows(self, limit: int, *, bursts: bool) -> list[LeadState]:
        """Up to `limit` leads of the take-ins that were (or were not) bursts, oldest first."""
        leads: list[LeadState] = []
        for window in list(self._windows):
            if window.is_burst(self._burst_leads) != bursts:
                continue
            leads += window.oldest(limit - len(leads))
            if len(leads) >= limit:
                break
            if window.closed:
                self._windows.remove(window)  # read to its end
        return leads
