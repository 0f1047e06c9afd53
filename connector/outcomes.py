"""What happens next to a lead after LeadSquared's answer to one of its calls: a pure decision.

It reads no clock and does no I/O; `connector.push` supplies the facts (the answer, the tries
so far, the time spent, a random draw for the jitter) and carries out the step it returns.

What each kind of answer leads to:

- success: the attributes sent are recorded as pushed;
- throttled: sent again; the whole account already waits (the limiter), and it does not count
  as a failed try;
- transient: sent again after exponential backoff with full jitter, bounded in tries and in
  time; after that the lead gets a `next_attempt_at` and a later run tries again;
- ambiguous (a bare MXException): retried the same way; after that the lead is rejected, since
  it may well be the lead's data;
- unreachable (refused, DNS, TLS): retried the same way; after that it is left as it was,
  since it is not the lead's fault;
- rejected: the lead waits for new values or a user's retry; if LeadSquared named unknown
  attributes, those alone are set aside, and the rest is sent;
- not found, or several found (a lead looked up by email address or phone number): rejected
  the same way, as the row's to fix; the connector never creates a lead, nor guesses one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from connector.config import RetryConfig
from connector.values import Values

# Backoff between transient failures within a run: full jitter up to base x 2^n, capped.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
# Between runs: how long a lead that ran out of retries waits before a run tries it again.
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=1)


class AnswerKind(enum.Enum):
    """What one call's answer says about one lead."""

    SUCCESS = "success"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    UNREACHABLE = "unreachable"
    REJECTED = "rejected"
    # No lead in LeadSquared has the row's email address or phone number (or ProspectId).
    NOT_FOUND = "not found"
    # Several leads have it: the connector does not guess which one the row means.
    SEVERAL_FOUND = "several found"


@dataclass(frozen=True)
class Answer:
    kind: AnswerKind
    error: str = ""
    # How long LeadSquared asked to wait (Retry-After), if it did.
    delay: float | None = None
    # Attributes LeadSquared named as unknown, for a rejection.
    unknown_attributes: frozenset[str] = frozenset()
    # LeadSquared's ExceptionType, for a rejection.
    exception_type: str | None = None


SUCCESS = Answer(AnswerKind.SUCCESS)


@dataclass(frozen=True)
class Attempt:
    """Where one lead's push stands within this run."""

    update: Values  # what the next call sends
    failures: int = 0  # failed tries so far in this run (throttled calls are not failures)
    # Why attributes were set aside during this push: kept on the lead after the rest succeeds.
    aside_error: str | None = None


@dataclass(frozen=True)
class Record:
    """Record `sent` as pushed (with `error` kept, when attributes were set aside)."""

    sent: Values
    error: str | None = None


@dataclass(frozen=True)
class SendAgain:
    """Send `attempt.update` again after `pause` seconds."""

    attempt: Attempt
    pause: float = 0.0


@dataclass(frozen=True)
class SetAside:
    """Set `refused` aside with `error`, then go on with `next`."""

    refused: Values
    error: str
    next: Record | SendAgain


@dataclass(frozen=True)
class Defer:
    """Record the failure; a later run tries the lead again."""

    error: str
    failures: int


@dataclass(frozen=True)
class Reject:
    """Record the lead as rejected until its values change or a user asks for a retry."""

    error: str


@dataclass(frozen=True)
class Leave:
    """Record nothing: the lead stays pending as it was."""


Step = Record | SendAgain | SetAside | Defer | Reject | Leave


def next_step(
    answer: Answer, attempt: Attempt, *, elapsed: float, retry: RetryConfig, jitter: float
) -> Step:
    """The step after `answer` to a call that sent `attempt.update`.

    `elapsed` is the time this lead's push has taken so far in this run, in seconds;
    `jitter`, in [0, 1), is the random draw that spreads the retries of many leads.
    """
    match answer.kind:
        case AnswerKind.SUCCESS:
            return Record(attempt.update, attempt.aside_error)
        case AnswerKind.THROTTLED:
            return SendAgain(attempt)
        case AnswerKind.REJECTED:
            return _rejected(answer, attempt)
        case AnswerKind.NOT_FOUND | AnswerKind.SEVERAL_FOUND:
            return Reject(answer.error)
    failures = attempt.failures + 1
    pause = max(answer.delay or 0.0, backoff_seconds(failures, jitter))
    if failures < retry.attempts and elapsed + pause <= retry.max_seconds:
        return SendAgain(Attempt(attempt.update, failures, attempt.aside_error), pause)
    match answer.kind:
        case AnswerKind.UNREACHABLE:
            return Leave()
        case AnswerKind.AMBIGUOUS:
            return Reject(f"{answer.error} (the same after {failures} tries)")
    return Defer(answer.error, failures)


def _rejected(answer: Answer, attempt: Attempt) -> Step:
    unknown = sorted(answer.unknown_attributes.intersection(attempt.update))
    if not unknown:
        return Reject(answer.error)
    refused = {name: attempt.update[name] for name in unknown}
    rest = {name: value for name, value in attempt.update.items() if name not in refused}
    then: Record | SendAgain = (
        SendAgain(Attempt(rest, attempt.failures, answer.error))
        if rest
        else Record({}, answer.error)
    )
    return SetAside(refused, answer.error, then)


def backoff_seconds(failures: int, jitter: float) -> float:
    """Full jitter: spreads the retries of many leads instead of bunching them."""
    return jitter * min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** (failures - 1))


def retry_delay(attempts: int) -> timedelta:
    """How long a lead waits for a later run after `attempts` runs ran out of tries on it."""
    return min(RETRY_CAP, RETRY_BASE * (1 << min(attempts, 10)))
