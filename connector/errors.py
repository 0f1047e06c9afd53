"""One exception root, branched by what the caller must do about it."""

from __future__ import annotations


class LsqSyncError(Exception):
    """lsq-sync failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(LsqSyncError):
    """The configuration is invalid."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


class SourceDatabaseError(LsqSyncError):
    """The database could not be used."""


class LeadSquaredError(LsqSyncError):
    """LeadSquared refused or failed a call."""


class RetriableError(LeadSquaredError):
    """A transient LeadSquared failure: the same call may succeed later."""

    def __init__(self, message: str | None = None, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ThrottledError(RetriableError):
    """LeadSquared throttled the call: the account's rate limit was exceeded."""


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


class FatalRunError(LeadSquaredError):
    """LeadSquared refused the connector itself (keys, user or host): the run must stop."""
