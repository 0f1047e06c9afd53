"""One exception root, branched by what the caller must do about it; and the problems, each
with its place in the config, that a ConfigError carries to where they are printed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


class LsqSyncError(Exception):
    """lsq-sync failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True)
class ConfigLocation:
    """Where a config problem is: its file, and the key path or the line when known."""

    file: str
    # None when the problem is not at a key; () for the top level of the file.
    key: tuple[str, ...] | None = None
    line: int | None = None


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config. Printed after its file name, as `line N: ...`,
    `key.path: ...`, or the message alone."""

    location: ConfigLocation
    message: str

    def __str__(self) -> str:
        line, key = self.location.line, self.location.key
        if line is not None:
            return f"line {line}: {self.message}"
        if key is not None:
            return f"{'.'.join(key) or '(top level)'}: {self.message}"
        return self.message


class ConfigError(LsqSyncError):
    """The configuration is invalid."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "\n".join(
                f"{problem.location.file}: {problem}" if problem.location.file else str(problem)
                for problem in self.problems
            )
        )

    @classmethod
    def at(cls, file: str, key: tuple[str, ...], message: str) -> ConfigError:
        """One problem, at one key."""
        return cls([ConfigProblem(ConfigLocation(file, key), message)])


class SourceDatabaseError(LsqSyncError):
    """The database could not be used."""


class CaptureError(LsqSyncError):
    """Change capture no longer matches the source table: fix it, then run `lsq-sync init`."""


class UnreadableRowsError(SourceDatabaseError):
    """A source row holds a value that cannot be read or stored; only that row is held back."""


class RunLockLostError(LsqSyncError):
    """This run lost the run lock: another run may now hold it."""

    def __init__(self, connector: str, cause: str) -> None:
        self.cause = cause
        super().__init__(
            f"lost the run lock of connector {connector!r} ({cause}): another run may now hold "
            "it; this run started no call after noticing, and stopped"
        )


class BudgetExhaustedError(LsqSyncError):
    """The daily call budget is spent: no call is made until it resets."""

    def __init__(self, budget: int, resume_at: datetime) -> None:
        self.budget = budget
        self.resume_at = resume_at
        super().__init__(
            f"the daily budget of {budget:,} LeadSquared calls is spent; pushing resumes after "
            f"{resume_at:%Y-%m-%d %H:%M} UTC (leadsquared.rate_limit.daily_budget)"
        )


class LeadSquaredError(LsqSyncError):
    """LeadSquared refused or failed a call."""


class RetriableError(LeadSquaredError):
    """A transient LeadSquared failure: the same call may succeed later."""

    def __init__(self, message: str | None = None, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ThrottledError(RetriableError):
    """LeadSquared throttled the call: the account's rate limit was exceeded."""


class UnreachableError(RetriableError):
    """LeadSquared could not be reached (connection refused, DNS or TLS failure): not the
    lead's fault, so no attempt is counted against it; several in a row stop the run."""


class AmbiguousError(RetriableError):
    """LeadSquared failed without naming a cause: retried like a transient failure, a bounded
    number of times, then the lead is set aside as rejected."""


class LeadRejectedError(LeadSquaredError):
    """LeadSquared rejected this lead's update; retrying the same values cannot succeed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        exception_type: str | None = None,
        unknown_attributes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.unknown_attributes = unknown_attributes


class CallCancelledError(LeadSquaredError):
    """A call was not made because the connector is stopping; nothing was sent."""


class CallAbandonedError(LeadSquaredError):
    """A call had no answer when the connector's drain time ran out after a stop: it may or may
    not have landed, so its lead stays pending and is sent again (absolute values) next run."""


class FatalRunError(LeadSquaredError):
    """LeadSquared refused the connector itself (keys, user or host): the run must stop."""
