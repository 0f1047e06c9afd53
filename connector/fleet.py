"""Many connectors in one daemon, and many daemons sharing them, with the database as the only
coordinator.

A daemon *owns* a connector while it holds the connector's run lock (connector.runlock): it
takes the lock once and keeps it, with its lease, epoch and watchdog, across cycles, instead of
once per cycle. So each connector is active on one daemon at a time, with the run lock's
fencing, and a daemon that dies loses its locks with its sessions: its connectors' leases go
stale within `stale_seconds`, and the other daemons take them over.

How many a daemon takes is its *fair share*: ceil(its connectors / live daemons). On
PostgreSQL, a daemon is live while it holds a session advisory lock on one of the *member
slots* of the connectors' schema (`pg_locks` counts them; no table, no heartbeat to go stale:
the slot dies with the daemon's session, like the run locks). Every `claim_seconds` a daemon
reads the number of members, releases its newest connectors beyond its share (after the cycle
in flight), and claims free ones (no lease, a released one, or one gone stale) up to its share.
The shares add up to at least the number of connectors, so every connector has an owner once
the daemons have seen each other. On SQLite (one host) there are no members: each daemon tries
for every connector, and the run lock's lock file decides.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.config import Config
from connector.database import create_engine, lock_session_engine, translate_errors
from connector.errors import LsqSyncError
from connector.runlock import Lease, NotHeld, lock_session_scope
from connector.schema import lease as lease_table

if TYPE_CHECKING:
    from connector.sync import Connector, RunReport

log = logging.getLogger(__name__)

# More daemons than this on one schema find no slot, and run as if alone there.
MEMBER_SLOTS = 256
# A daemon's pool per PostgreSQL database, however many connectors use it: at most 15
# sessions, 5 of them kept while idle.
POOL_SIZE, POOL_OVERFLOW, POOL_TIMEOUT_SECONDS = 5, 10, 120.0

SlotState = Literal["idle", "claiming", "owned"]


@dataclass(frozen=True)
class FleetTiming:
    """How often a daemon looks at the other daemons, claims and releases connectors."""

    claim_seconds: float = 1.0


def daemon_identity() -> str:
    """How this daemon is named in the logs: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fair_share(connectors: int, daemons: int) -> int:
    """The most connectors one of `daemons` live daemons should run: the shares cover them all."""
    return math.ceil(connectors / max(daemons, 1))


@dataclass(frozen=True)
class Moves:
    claim: tuple[str, ...] = ()
    release: tuple[str, ...] = ()


def plan_moves(owned: Sequence[str], free: Sequence[str], share: int) -> Moves:
    """What a daemon does next: `owned` are its connectors (claimed or being claimed), oldest
    first; `free` those no daemon owns, in the order to try them. It gives up its newest
    beyond its share (the oldest have run longest here), or claims free ones up to it."""
    if len(owned) > share:
        return Moves(release=tuple(owned[share:]))
    return Moves(claim=tuple(name for name in free if name not in owned)[: share - len(owned)])


def member_key(scope: str) -> int:
    """The first half of the member slots' two-part advisory key (the slot is the second)."""
    return zlib.crc32(f"lsq-sync:daemons:{scope}".encode()) - 2**31


class Membership:
    """This daemon's member slot in one PostgreSQL schema, and the count of live daemons there.

    The slot is a session advisory lock on a connection of its own (idle timeouts off, TCP
    keepalives on, as the run lock's): it ends with the daemon, or with its network.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._session_engine: Engine | None = None
        self._connection: Connection | None = None
        self._key = 0
        self.slot: int | None = None

    def live_daemons(self) -> int:
        """How many daemons hold a slot (this one included), joining first if needed."""
        try:
            with translate_errors("counting the daemons"):
                connection = self._connection or self._join()
                count = connection.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database()) "
                        "AND classid = CAST(:key AS oid) AND objsubid = 2"
                    ),
                    {"key": self._key & 0xFFFF_FFFF},
                ).scalar_one()
                connection.rollback()
        except LsqSyncError:
            self.leave()  # joins again through a new session at the next count
            raise
        return max(int(count), 1)

    def _join(self) -> Connection:
        self._session_engine = lock_session_engine(self._engine)
        connection = self._session_engine.connect()
        self._connection = connection
        self._key = member_key(lock_session_scope(connection))
        for slot in range(MEMBER_SLOTS):
            taken = connection.execute(
                sa.select(sa.func.pg_try_advisory_lock(self._key, slot))
            ).scalar_one()
            if taken:
                self.slot = slot
                break
        connection.commit()
        if self.slot is None:
            log.warning("no member slot left: this daemon counts itself out of the fair share")
        return connection

    def leave(self) -> None:
        """Give the slot up (ending the session ends the lock); safe to call twice."""
        if self._connection is not None:
            with suppress(SQLAlchemyError):
                self._connection.close()
        if self._session_engine is not None:
            self._session_engine.dispose()
        self._connection = self._session_engine = None
        self.slot = None


def shared_engines(configs: Sequence[Config]) -> list[Engine]:
    """An engine for each config, one per database: a daemon's connectors on one database
    share one pool, so that a daemon opens a bounded number of sessions however many
    connectors it runs (besides one per connector it owns, for the run lock, and its member
    slot). Every push worker of every connector takes a connection to take a call slot, and
    waits there for the account's row: without the bound, 20 connectors pushing at once
    would open 20 x max_in_flight sessions, past a default server's `max_connections`."""
    urls = [config.database.url.get_secret_value() for config in configs]
    engines: dict[str, Engine] = {}
    for url in urls:
        if url in engines:
            continue
        if sa.make_url(url).get_backend_name() == "postgresql":
            engines[url] = create_engine(
                url,
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
                # Each use is one short transaction: a wait for one is a wait in line.
                pool_timeout=POOL_TIMEOUT_SECONDS,
            )
        else:
            engines[url] = create_engine(url)
    return [engines[url] for url in urls]


class Slot:
    """One connector of this daemon: whether it owns it, and the cycle run under its lease."""

    def __init__(self, connector: Connector, daemon: str, on_owned: Callable[[str], None]) -> None:
        self.connector = connector
        self.name = connector.config.name
        self._daemon = daemon
        self._on_owned = on_owned
        self.state: SlotState = "idle"
        self.claimed_at = 0
        self._lease: Lease | None = None
        # A cycle and the release of the lock never overlap: the release waits for the cycle.
        self._cycle = threading.Lock()
        self._release = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_failure = ""

    @property
    def stopped(self) -> bool:
        return self.connector.stop.is_set()

    def run_cycle(self) -> RunReport | None:
        """One cycle if this daemon owns the connector (None when it does not)."""
        with self._cycle:
            lease = self._lease
            if lease is None or lease.lost:
                log.debug("cycle skipped: not ours now", extra={"connector": self.name})
                return None
            return self.connector.run_held(lease)

    def claim(self, order: int) -> None:
        """Try for the connector's run lock on a thread of its own, which keeps it until
        `release`, the connector's stop, or the lock's loss."""
        self.state, self.claimed_at = "claiming", order
        self._release.clear()
        self._thread = threading.Thread(
            target=self._own, name=f"lsq-sync-owner-{self.name}", daemon=True
        )
        self._thread.start()

    def release(self) -> None:
        self._release.set()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _own(self) -> None:
        try:
            with self.connector.run_lock().hold() as held:
                if isinstance(held, NotHeld):
                    log.debug("not claimed", extra={"connector": self.name, "reason": held.reason})
                    return
                self._hold(held)
        except LsqSyncError as exc:
            if str(exc) != self._last_failure:  # once per cause: this is tried every second
                log.warning("could not claim", extra={"connector": self.name, "error": str(exc)})
            self._last_failure = str(exc)
        finally:
            self.state = "idle"

    def _hold(self, held: Lease) -> None:
        with self._cycle:
            self._lease = held
        self.state, self._last_failure = "owned", ""
        log.info(
            "connector claimed",
            extra={"connector": self.name, "daemon": self._daemon, "epoch": held.epoch},
        )
        self._on_owned(self.name)
        # Woken by `release` or the stop; the loss of the lock is seen within half a second.
        while not (self._release.is_set() or self.stopped or held.lost):
            self._release.wait(0.5)
        with self._cycle:
            self._lease = None
        reason = "lost the run lock" if held.lost else "stopping" if self.stopped else "rebalance"
        log.info(
            "connector released",
            extra={"connector": self.name, "daemon": self._daemon, "reason": reason},
        )


class _Group:
    """The connectors of one database (and schema): they share members and a lease table."""

    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        self.engine = slots[0].connector.engine
        postgres = self.engine.dialect.name == "postgresql"
        self.membership = Membership(self.engine) if postgres else None
        self._last_failure = ""

    def live_daemons(self) -> int:
        return 1 if self.membership is None else self.membership.live_daemons()

    def free(self, names: Iterable[str]) -> list[str]:
        """Those of `names` no daemon owns: no lease row, a released lease, or a stale one."""
        connector = self.slots[0].connector
        stale = connector.lease_timing.stale_seconds
        wanted = list(names)
        postgres = self.engine.dialect.name == "postgresql"
        reading = translate_errors("reading the connectors' leases")
        with reading, self.engine.connect() as connection:
            now: datetime = (
                connection.execute(sa.select(sa.func.clock_timestamp())).scalar_one()
                if postgres
                else connector.clock.now()
            )
            beats = dict(
                connection.execute(
                    sa.select(lease_table.c.connector, lease_table.c.heartbeat_at).where(
                        lease_table.c.connector.in_(wanted)
                    )
                ).all()
            )
        free = []
        for name in wanted:
            beat = beats.get(name)
            # As the run lock judges a heartbeat: fresh within stale_seconds either way.
            if beat is None or not -stale < (now - beat).total_seconds() < stale:
                free.append(name)
        return free

    def note_failure(self, error: str) -> None:
        if error != self._last_failure:
            log.warning("could not balance the connectors", extra={"error": error})
        self._last_failure = error

    def note_success(self) -> None:
        self._last_failure = ""


class Fleet:
    """This daemon's share of its connectors, kept by a thread until `stop`."""

    def __init__(
        self,
        connectors: Sequence[Connector],
        *,
        on_owned: Callable[[str], None] = lambda name: None,
        timing: FleetTiming | None = None,
        daemon: str | None = None,
    ) -> None:
        self.daemon = daemon or daemon_identity()
        self.timing = timing or FleetTiming()
        self.slots = {c.config.name: Slot(c, self.daemon, on_owned) for c in connectors}
        groups: dict[str, list[Slot]] = {}
        for slot in self.slots.values():
            # The URL with its password: the key of a dict, never shown.
            url = slot.connector.engine.url.render_as_string(hide_password=False)
            groups.setdefault(url, []).append(slot)
        self._groups = [_Group(slots) for slots in groups.values()]
        self._stop = threading.Event()
        self._claims = 0
        self._thread = threading.Thread(target=self._keep, name="lsq-sync-fleet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_cycle(self, name: str) -> RunReport | None:
        return self.slots[name].run_cycle()

    def owned(self) -> list[str]:
        return [name for name, slot in self.slots.items() if slot.state == "owned"]

    def runs(self, name: str) -> bool:
        """Whether this daemon runs the connector now."""
        slot = self.slots.get(name)
        return slot is not None and slot.state == "owned"

    def stop(self) -> None:
        """Claim nothing more, release every connector (each after its cycle in flight), and
        leave. Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for slot in self.slots.values():
            slot.release()
        for slot in self.slots.values():
            slot.join()
        for group in self._groups:
            if group.membership is not None:
                group.membership.leave()

    def balance(self) -> None:
        """One look at each database: release beyond the fair share, claim up to it."""
        for group in self._groups:
            self._try(group, self._balance)

    def _keep(self) -> None:
        # The first look waits one period, so that daemons started together see each other
        # before any claims them all.
        for group in self._groups:
            self._try(group, lambda g: g.live_daemons())
        while not self._stop.wait(self.timing.claim_seconds):
            self.balance()

    def _try(self, group: _Group, step: Callable[[_Group], object]) -> None:
        try:
            step(group)
        except LsqSyncError as exc:
            group.note_failure(str(exc))
        else:
            group.note_success()

    def _balance(self, group: _Group) -> None:
        running = [slot for slot in group.slots if not slot.stopped]
        share = fair_share(len(running), group.live_daemons())
        owned = sorted(
            (slot for slot in running if slot.state != "idle"), key=lambda s: s.claimed_at
        )
        idle = [slot.name for slot in running if slot.state == "idle"]
        free = group.free(idle) if idle and len(owned) < share else []
        random.shuffle(free)  # daemons claiming at once mostly try different connectors
        moves = plan_moves([slot.name for slot in owned], free, share)
        for name in moves.release:
            self.slots[name].release()
        for name in moves.claim:
            self._claims += 1
            self.slots[name].claim(self._claims)
