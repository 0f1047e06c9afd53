"""How the emulator misbehaves on purpose: the account's rate limits, scripted and random
faults, latency, jitter and holding answers back, and the slow or huge ways of sending a body.

Every wait here ends on the emulator's stop event, so a test's teardown never waits out a
hang. `Throttle` and `Faults` share the emulator's one condition, which the caller may already
hold.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Final

from connector.testing.emulator.wire import SUCCESS, Answer, error

THROTTLE_STATUSES: Final = frozenset({429, 200, 403})
# A network delay longer than this is an outage, not jitter.
MAX_JITTER_SECONDS: Final = 60.0
# Short enough that any sane per-read timeout outlives the gap between two pieces of a drip.
_DRIP_INTERVAL: Final = 0.2
# The ``huge`` faults send their body in blocks of this size, made once: never held whole.
_HUGE_BLOCK: Final = b"x" * (1 << 20)
_HUGE_HEAD: Final = b'{"Status":"Success","Message":"'
_HUGE_TAIL: Final = b'"}'


def _gateway_page(status: int, reason: str) -> Answer:
    # Gateways in front of LeadSquared answer with HTML, so clients must not assume JSON.
    title = f"{status} {reason}"
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Answer(
        status=status,
        outcome="fault",
        body=page.encode(),
        content_type="text/html; charset=utf-8",
    )


FAULT_ANSWERS: Final[dict[str, Answer]] = {
    "502": _gateway_page(502, "Bad Gateway"),
    "503": _gateway_page(503, "Service Unavailable"),
    "504": _gateway_page(504, "Gateway Time-out"),
    "drop": Answer(status=0, outcome="fault", action="drop"),
    "timeout": Answer(status=0, outcome="fault", action="timeout"),
    "drip": replace(SUCCESS, outcome="fault", action="drip"),
    "drip-head": replace(SUCCESS, outcome="fault", action="drip-head"),
    "huge": replace(SUCCESS, outcome="fault", action="huge"),
    "huge-chunked": replace(SUCCESS, outcome="fault", action="huge-chunked"),
    "mx500": error(
        500, "MXException", "There was an error processing the request.", outcome="fault"
    ),
}
FAULT_KINDS: Final = frozenset(FAULT_ANSWERS)


def check_fault_kinds(kinds: Iterable[str]) -> None:
    unknown = sorted(set(kinds) - FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown}; expected some of {sorted(FAULT_KINDS)}")


def check_window(calls: int | None, window: float, what: str = "rate limit") -> None:
    if calls is not None and calls < 1:
        raise ValueError(f"{what} calls must be at least 1 or None, got {calls}")
    if window <= 0:
        raise ValueError(f"{what} window must be positive, got {window}")


def check_rate_limit(
    calls: int | None, window: float, status: int, retry_after: float | None
) -> None:
    check_window(calls, window)
    if status not in THROTTLE_STATUSES:
        raise ValueError(f"throttle status must be one of {sorted(THROTTLE_STATUSES)}")
    if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
        raise ValueError(f"retry_after must be a finite number >= 0 or None, got {retry_after}")


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(float(seconds))


def drip_pieces(body: bytes, total_seconds: float) -> tuple[list[bytes], float]:
    """`body` cut into pieces, and the pause between them, so that sending spans the total."""
    pauses = max(1, math.ceil(total_seconds / _DRIP_INTERVAL))
    count = pauses + 1
    # JSON allows trailing whitespace; padding keeps every piece non-empty however long the drip.
    padded = body.ljust(count, b" ")
    size = len(padded)
    pieces = [padded[size * index // count : size * (index + 1) // count] for index in range(count)]
    return pieces, max(0.0, total_seconds) / pauses


def dripped_head(answer: Answer, total_seconds: float) -> bytes:
    """The answer's status line and headers, with a header long enough to give every piece
    of a drip over `total_seconds` a byte of its own."""
    padding = b"a" * (math.ceil(total_seconds / _DRIP_INTERVAL) + 1)
    return (
        b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nX-Drip: %s\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n"
        % (answer.status, answer.content_type.encode(), padding, len(answer.body))
    )


class _Window:
    """A sliding window of admitted calls: at most `calls` in any `seconds`, or no limit."""

    def __init__(self) -> None:
        self._limit: tuple[int, float] | None = None
        self._arrivals: deque[float] = deque()

    def configure(self, calls: int | None, seconds: float) -> None:
        """Set the limit (None: none); the window starts empty again."""
        self._limit = None if calls is None else (calls, seconds)
        self._arrivals.clear()

    def refused(self, arrived: float) -> tuple[int, float] | None:
        """The limit a call arriving at `arrived` would break; None when there is room."""
        if self._limit is None:
            return None
        calls, seconds = self._limit
        while self._arrivals and self._arrivals[0] <= arrived - seconds:
            self._arrivals.popleft()
        return self._limit if len(self._arrivals) >= calls else None

    def admit(self, arrived: float) -> None:
        if self._limit is not None:
            self._arrivals.append(arrived)


class Throttle:
    """The account's rate limits: a sliding window of admitted calls, a second window that
    bulk calls must pass as well, and the answer past either."""

    def __init__(self, lock: threading.Condition) -> None:
        self._lock = lock
        self._account = _Window()
        self._bulk = _Window()
        self._status = 429
        self._retry_after: float | None = None
        self._throttled_count = 0
        self._bulk_throttled_count = 0

    def configure(
        self, calls: int | None, window: float, status: int, retry_after: float | None
    ) -> None:
        """As `Emulator.set_rate_limit`; the window starts empty again."""
        check_rate_limit(calls, window, status, retry_after)
        with self._lock:
            self._account.configure(calls, window)
            self._status = status
            self._retry_after = retry_after

    def configure_bulk(self, calls: int | None, window: float) -> None:
        """As `Emulator.set_bulk_rate_limit`; the bulk window starts empty again."""
        check_window(calls, window, "bulk rate limit")
        with self._lock:
            self._bulk.configure(calls, window)

    @property
    def throttled_count(self) -> int:
        with self._lock:
            return self._throttled_count

    @property
    def bulk_throttled_count(self) -> int:
        with self._lock:
            return self._bulk_throttled_count

    def refusal(self, arrived: float, bulk: bool = False) -> Answer | None:
        """The throttled answer for a call arriving at `arrived`; None when it is admitted.

        A bulk call must find room in both windows, and is counted in both. A refused call
        is counted in neither: that it was throttled must not throttle the calls after it."""
        with self._lock:
            windows = (self._account, self._bulk) if bulk else (self._account,)
            for window in windows:
                limit = window.refused(arrived)
                if limit is not None:
                    self._throttled_count += 1
                    if window is self._bulk:
                        self._bulk_throttled_count += 1
                    return self._throttled(*limit)
            for window in windows:
                window.admit(arrived)
            return None

    def _throttled(self, calls: int, window: float) -> Answer:
        throttled = error(
            self._status,
            "MXAPIRateLimitExceededException",
            f"API calls exceeded the limit of {calls} in {window:g} second(s)",
            outcome="throttled",
        )
        if self._retry_after is None:
            return throttled
        return replace(throttled, headers=(("Retry-After", _retry_after_text(self._retry_after)),))


class Faults:
    """Scripted and random faults, latency, holding answers, and sending bodies slowly."""

    def __init__(self, lock: threading.Condition, stopping: threading.Event) -> None:
        self._lock = lock
        self._stopping = stopping
        self.timeout_seconds = 30.0
        self.drip_seconds = 5.0
        self.huge_bytes = 1 << 30
        self._held = False
        self._latency = (0.0, 0.0)
        self._latency_random = random.Random()  # noqa: S311 (simulated latency, not security)
        self._jitter = 0.0
        self._jitter_random = random.Random()  # noqa: S311 (simulated jitter, not security)
        self._queued: deque[Answer] = deque()
        self._rate = 0.0
        self._kinds: tuple[str, ...] = ()
        self._random = random.Random()  # noqa: S311 (simulated faults, not security)

    def set_latency(self, low: float, high: float | None = None, seed: int | None = None) -> None:
        high = low if high is None else high
        if not 0 <= low <= high:
            raise ValueError(f"latency needs 0 <= low <= high, got {low} and {high}")
        with self._lock:
            self._latency = (low, high)
            self._latency_random.seed(seed)

    def set_jitter(self, seconds: float, seed: int | None = None) -> None:
        if not 0 <= seconds <= MAX_JITTER_SECONDS:
            raise ValueError(f"jitter needs 0 <= seconds <= {MAX_JITTER_SECONDS:g}, got {seconds}")
        with self._lock:
            self._jitter = seconds
            self._jitter_random.seed(seed)

    def delay_arrival(self) -> None:
        """Wait out this request's share of the jitter, before it is counted or judged;
        called without the lock held."""
        with self._lock:
            jitter = self._jitter
            delay = self._jitter_random.uniform(0.0, jitter) if jitter > 0 else 0.0
        if delay > 0:
            self._stopping.wait(delay)

    def queue(self, count: int, answer: Answer) -> None:
        if count < 0:
            raise ValueError(f"fault count must not be negative, got {count}")
        with self._lock:
            self._queued.extend([answer] * count)

    def set_rate(self, rate: float, kinds: Sequence[str], seed: int | None = None) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        if rate > 0 and not kinds:
            raise ValueError("a positive fault rate needs at least one fault kind")
        check_fault_kinds(kinds)
        with self._lock:
            self._rate = rate
            self._kinds = tuple(kinds)
            self._random.seed(seed)

    def hold(self) -> None:
        with self._lock:
            self._held = True

    def release(self) -> None:
        with self._lock:
            self._held = False
            self._lock.notify_all()

    def next_fault(self) -> Answer | None:
        """The fault to answer the next API call with, queued ones first; None for none."""
        with self._lock:
            if self._queued:
                return self._queued.popleft()
            if self._rate > 0 and self._random.random() < self._rate:
                return FAULT_ANSWERS[self._random.choice(self._kinds)]
            return None

    def next_latency(self) -> float:
        with self._lock:
            low, high = self._latency
            return low if low == high else self._latency_random.uniform(low, high)

    def delay_answer(self, delay: float, answer: Answer) -> None:
        """Wait out latency, a hold and a ``timeout`` fault; called without the lock held."""
        if delay > 0:
            self._stopping.wait(delay)
        with self._lock:
            self._lock.wait_for(lambda: not self._held or self._stopping.is_set())
        if answer.action == "timeout":
            self._stopping.wait(self.timeout_seconds)

    def body_pieces(self, answer: Answer) -> tuple[list[bytes], float]:
        """The pieces to send an answer's body in, and the pause between them."""
        if answer.action == "drip":
            return drip_pieces(answer.body, self.drip_seconds)
        return [answer.body], 0.0

    def huge_pieces(self) -> Iterator[bytes]:
        """A success body of `huge_bytes`, block by block; ends early on stop."""
        filler = max(0, self.huge_bytes - len(_HUGE_HEAD) - len(_HUGE_TAIL))
        yield _HUGE_HEAD
        while filler > 0 and not self._stopping.is_set():
            size = min(filler, len(_HUGE_BLOCK))
            filler -= size
            yield _HUGE_BLOCK[:size]  # the block itself, not a copy, when whole
        yield _HUGE_TAIL

    def write_pieces(
        self, pieces: list[bytes], pause: float, write: Callable[[bytes], Any]
    ) -> None:
        for index, piece in enumerate(pieces):
            # After stop() the wait returns at once, so the rest of a drip goes out together.
            if index:
                self._stopping.wait(pause)
            write(piece)


class FaultControls:
    """The emulator's knobs for misbehaving: rate limit, faults, latency and holding answers.

    A base of `Emulator`, kept apart so that the emulator's own class stays about serving.
    """

    def __init__(
        self,
        lock: threading.Condition,
        stopping: threading.Event,
        *,
        rate_limit: tuple[int, float] | None,
        throttle_status: int,
        retry_after: float | None,
        bulk_rate_limit: tuple[int, float] | None,
    ) -> None:
        self._throttle = Throttle(lock)
        self._faults = Faults(lock, stopping)
        calls, window = (None, 5.0) if rate_limit is None else rate_limit
        self.set_rate_limit(calls, window, throttle_status, retry_after)
        bulk_calls, bulk_window = (None, 5.0) if bulk_rate_limit is None else bulk_rate_limit
        self.set_bulk_rate_limit(bulk_calls, bulk_window)

    @property
    def throttled_count(self) -> int:
        """How many requests have been answered as throttled since the emulator was made,
        bulk calls included, whichever window refused them."""
        return self._throttle.throttled_count

    @property
    def bulk_throttled_count(self) -> int:
        """How many of `throttled_count` were bulk calls the bulk window refused (a bulk call
        the account's window refuses first is not among them)."""
        return self._throttle.bulk_throttled_count

    @property
    def fault_timeout_seconds(self) -> float:
        """How long the ``timeout`` fault keeps a request unanswered (ends early on `stop`)."""
        return self._faults.timeout_seconds

    @fault_timeout_seconds.setter
    def fault_timeout_seconds(self, seconds: float) -> None:
        self._faults.timeout_seconds = seconds

    @property
    def fault_drip_seconds(self) -> float:
        """How long the ``drip`` fault takes to send its body (the rest goes at once on `stop`)."""
        return self._faults.drip_seconds

    @fault_drip_seconds.setter
    def fault_drip_seconds(self, seconds: float) -> None:
        self._faults.drip_seconds = seconds

    @property
    def fault_huge_bytes(self) -> int:
        """The body size of the ``huge`` faults (1 GiB), streamed without being held whole."""
        return self._faults.huge_bytes

    @fault_huge_bytes.setter
    def fault_huge_bytes(self, size: int) -> None:
        self._faults.huge_bytes = size

    def set_latency(self, low: float, high: float | None = None, seed: int | None = None) -> None:
        """Delay every answer by a uniform random time in [low, high] seconds (high = low)."""
        self._faults.set_latency(low, high, seed)

    def set_jitter(self, seconds: float, seed: int | None = None) -> None:
        """Delay every request's *arrival* by a uniform random time in [0, seconds], as a
        network's variable delay does: the request is counted by the rate limits (and
        judged, and logged) only once it is over, so calls started in one order may arrive in
        another. 0 for none. `seed` repeats the same delays, drawn in the order requests come
        in. The delay is real time, whatever clock times the windows."""
        self._faults.set_jitter(seconds, seed)

    def set_rate_limit(
        self,
        calls: int | None,
        window: float = 5.0,
        status: int = 429,
        retry_after: float | None = None,
    ) -> None:
        """Allow `calls` API requests per sliding `window` seconds (None = unlimited).

        Requests over the limit are answered with `status` (429, 200 or 403, all seen from
        LeadSquared) and an ``MXAPIRateLimitExceededException`` body; they do not count into
        the window. With `retry_after`, those answers also carry ``Retry-After: <seconds>``
        (``2`` for 2.0, ``1.5`` for 1.5); LeadSquared does not document one, so by default
        there is none. The window starts empty again.
        """
        self._throttle.configure(calls, window, status, retry_after)

    def set_bulk_rate_limit(self, calls: int | None, window: float = 5.0) -> None:
        """Allow `calls` bulk requests (``Lead/Bulk/UpdateV2``) per sliding `window` seconds
        (None = no bulk limit), as LeadSquared's plans limit bulk calls below the rest.

        A bulk call must pass this window and the account's (`set_rate_limit`), and counts in
        both; one refused by either counts in neither, and is answered as any throttled call
        (the account's throttle status and Retry-After), the message naming the limit it
        broke. The bulk window starts empty again; the account's is left as it is.
        """
        self._throttle.configure_bulk(calls, window)

    def fail_next(self, count: int, kind: str) -> None:
        """Answer the next `count` authenticated, unthrottled API requests with fault `kind`.

        Kinds: ``"503"``, ``"502"``, ``"504"`` (gateway HTML page, no JSON), ``"drop"`` (close
        the connection without an answer), ``"timeout"`` (no answer for
        `fault_timeout_seconds`, then close), ``"mx500"`` (500 with a generic MX error),
        ``"drip"`` (200 and a success body, sent in pieces about 0.2 s apart over
        `fault_drip_seconds`: a per-read timeout never fires, a total-time budget does),
        ``"drip-head"`` (the same, but the status line and headers are what drips, then
        the connection closes),
        ``"huge"`` (200 and a success body of `fault_huge_bytes`, with its Content-Length),
        ``"huge-chunked"`` (the same in chunked encoding, so its size is never announced).
        Queued faults come before random ones and apply nothing.
        """
        check_fault_kinds([kind])
        self._faults.queue(count, FAULT_ANSWERS[kind])

    def answer_next(
        self,
        count: int,
        status: int,
        body: str | bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Answer the next `count` authenticated, unthrottled API requests with exactly this
        status, body and extra `headers`, applying nothing: for answers LeadSquared might give
        that no fault kind covers (``200`` with ``[]``, a redirect, say). Queued in turn with
        `fail_next`'s faults."""
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        raw = body.encode() if isinstance(body, str) else body
        answer = Answer(
            status=status,
            outcome="fault",
            body=raw,
            content_type=content_type,
            headers=tuple(headers),
        )
        self._faults.queue(count, answer)

    def set_fault_rate(self, rate: float, kinds: Sequence[str], seed: int | None = None) -> None:
        """Answer a random `rate` share of API requests with a fault drawn from `kinds`."""
        self._faults.set_rate(rate, kinds, seed)

    def hold(self) -> None:
        """Keep every answer back until `release` (requests are still processed and logged)."""
        self._faults.hold()

    def release(self) -> None:
        """Let held answers go."""
        self._faults.release()
