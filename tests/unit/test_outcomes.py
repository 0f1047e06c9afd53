"""The pure decision of what happens to a lead after each answer (connector.outcomes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.config import RetryConfig
from connector.outcomes import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    RETRY_BASE,
    RETRY_CAP,
    SUCCESS,
    Answer,
    AnswerKind,
    Attempt,
    Defer,
    Leave,
    Record,
    Reject,
    SendAgain,
    SetAside,
    Step,
    backoff_seconds,
    next_step,
    retry_delay,
)

RETRY = RetryConfig(attempts=4, max_seconds=60.0)
UPDATE = {"mx_City": "Pune", "mx_Plan": "pro"}
FIRST_TRY = Attempt(UPDATE)
TRY_LATER = [AnswerKind.TRANSIENT, AnswerKind.AMBIGUOUS, AnswerKind.UNREACHABLE]


def step(
    answer: Answer,
    attempt: Attempt = FIRST_TRY,
    *,
    elapsed: float = 0.0,
    retry: RetryConfig = RETRY,
    jitter: float = 0.5,
) -> Step:
    return next_step(answer, attempt, elapsed=elapsed, retry=retry, jitter=jitter)


def test_a_success_records_what_was_sent_with_the_reason_attributes_were_set_aside() -> None:
    assert step(SUCCESS) == Record(UPDATE, None)
    assert step(SUCCESS, Attempt(UPDATE, 2, "unknown mx_X")) == Record(UPDATE, "unknown mx_X")


@given(failures=st.integers(0, 50), elapsed=st.floats(0, 1e6))
def test_a_throttled_call_is_sent_again_at_once_and_is_not_a_failure(
    failures: int, elapsed: float
) -> None:
    attempt = Attempt(UPDATE, failures)
    assert step(Answer(AnswerKind.THROTTLED, "429"), attempt, elapsed=elapsed) == SendAgain(
        attempt, 0.0
    )


@pytest.mark.parametrize("kind", TRY_LATER)
def test_a_failure_with_tries_and_time_left_is_sent_again_after_the_backoff(
    kind: AnswerKind,
) -> None:
    result = step(Answer(kind, "503"), Attempt(UPDATE, 1, "aside"), jitter=0.5)
    assert result == SendAgain(Attempt(UPDATE, 2, "aside"), backoff_seconds(2, 0.5))


@pytest.mark.parametrize("kind", TRY_LATER)
def test_retry_after_is_waited_when_longer_than_the_backoff(kind: AnswerKind) -> None:
    assert step(Answer(kind, "503", delay=7.5), jitter=0.0) == SendAgain(Attempt(UPDATE, 1), 7.5)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (AnswerKind.TRANSIENT, Defer("503", 4)),
        (AnswerKind.AMBIGUOUS, Reject("503 (the same after 4 tries)")),
        (AnswerKind.UNREACHABLE, Leave()),
    ],
)
def test_what_is_left_when_the_tries_run_out_depends_on_whose_fault_it_may_be(
    kind: AnswerKind, expected: Step
) -> None:
    assert step(Answer(kind, "503"), Attempt(UPDATE, RETRY.attempts - 1)) == expected


def test_the_tries_also_run_out_when_the_pause_would_pass_the_time_allowed() -> None:
    answer = Answer(AnswerKind.TRANSIENT, "503", delay=10.0)
    assert step(answer, elapsed=50.0) == SendAgain(Attempt(UPDATE, 1), 10.0)
    assert step(answer, elapsed=50.1) == Defer("503", 1)


def test_a_rejection_naming_no_attribute_of_the_update_rejects_the_lead() -> None:
    assert step(Answer(AnswerKind.REJECTED, "bad phone")) == Reject("bad phone")
    named_other = Answer(AnswerKind.REJECTED, "unknown", unknown_attributes=frozenset({"mx_X"}))
    assert step(named_other) == Reject("unknown")


def test_unknown_attributes_are_set_aside_and_the_rest_is_sent_at_once() -> None:
    answer = Answer(
        AnswerKind.REJECTED, "unknown mx_Plan", unknown_attributes=frozenset({"mx_Plan"})
    )
    assert step(answer, Attempt(UPDATE, 2)) == SetAside(
        {"mx_Plan": "pro"},
        "unknown mx_Plan",
        SendAgain(Attempt({"mx_City": "Pune"}, 2, "unknown mx_Plan")),
    )


def test_when_every_attribute_is_unknown_the_lead_is_recorded_with_nothing_sent() -> None:
    answer = Answer(
        AnswerKind.REJECTED, "unknown", unknown_attributes=frozenset({"mx_City", "mx_Plan"})
    )
    assert step(answer) == SetAside(UPDATE, "unknown", Record({}, "unknown"))


@given(
    kind=st.sampled_from(TRY_LATER),
    attempts=st.integers(1, 20),
    max_seconds=st.floats(0.1, 600),
    delays=st.lists(st.one_of(st.none(), st.floats(0, 120)), min_size=25, max_size=25),
    jitters=st.lists(st.floats(0, 0.999), min_size=25, max_size=25),
)
def test_a_lead_failing_every_time_is_tried_at_most_attempts_times_within_max_seconds(
    kind: AnswerKind,
    attempts: int,
    max_seconds: float,
    delays: list[float | None],
    jitters: list[float],
) -> None:
    retry = RetryConfig(attempts=attempts, max_seconds=max_seconds)
    attempt, elapsed, calls = Attempt(UPDATE), 0.0, 1
    for delay, jitter in zip(delays, jitters, strict=True):
        result = step(
            Answer(kind, "x", delay), attempt, elapsed=elapsed, retry=retry, jitter=jitter
        )
        if not isinstance(result, SendAgain):
            break
        assert result.pause >= 0
        attempt, elapsed, calls = result.attempt, elapsed + result.pause, calls + 1
    else:
        pytest.fail("the lead was tried more than 25 times")
    assert calls <= attempts
    assert elapsed <= max_seconds
    assert isinstance(
        result, {AnswerKind.TRANSIENT: Defer, AnswerKind.AMBIGUOUS: Reject}.get(kind, Leave)
    )


@given(failures=st.integers(1, 100), jitter=st.floats(0, 0.999))
def test_backoff_is_full_jitter_below_an_exponential_ceiling_and_the_cap(
    failures: int, jitter: float
) -> None:
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** (failures - 1))
    assert 0 <= backoff_seconds(failures, jitter) <= ceiling
    assert backoff_seconds(failures, 0.0) == 0.0


def test_between_runs_the_wait_doubles_up_to_the_cap() -> None:
    assert retry_delay(0) == RETRY_BASE
    assert retry_delay(1) == RETRY_BASE * 2
    assert [retry_delay(n) <= retry_delay(n + 1) for n in range(40)] == [True] * 40
    assert retry_delay(1000) == RETRY_CAP == timedelta(hours=1)
