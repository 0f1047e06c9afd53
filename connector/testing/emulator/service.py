"""The `Emulator`: one emulated LeadSquared account, put together from its state (leads,
request log), its faults (rate limit, scripted failures, latency) and the HTTP server.

It owns the lifecycle and the public face; `Dispatcher` judges each request, `FaultControls`
holds the knobs for misbehaving. Tests drive it through its methods while requests are in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

from connector.testing.emulator.account import check_api_host
from connector.testing.emulator.dispatch import Dispatcher
from connector.testing.emulator.faults import FaultControls
from connector.testing.emulator.schema import LeadSchema
from connector.testing.emulator.server import EmulatorServer
from connector.testing.emulator.state import (
    LeadStore,
    MissingLeadError,
    RecordedRequest,
    RequestLog,
)

DEFAULT_ACCESS_KEY: Final = "emulator-access-key"
DEFAULT_SECRET_KEY: Final = "emulator-secret-key"  # noqa: S105 (a fake key for a test double)


def _as_schema(schema: LeadSchema | Mapping[str, Any] | None) -> LeadSchema | None:
    if schema is None or isinstance(schema, LeadSchema):
        return schema
    return LeadSchema.from_mapping(schema)


class Emulator(FaultControls):
    """A LeadSquared API served over HTTP on 127.0.0.1, with knobs for every failure mode.

    All methods are thread-safe and may be called while requests are in flight.
    """

    def __init__(
        self,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        rate_limit: tuple[int, float] | None = (25, 5.0),
        throttle_status: int = 429,
        retry_after: float | None = None,
        bulk_rate_limit: tuple[int, float] | None = (5, 5.0),
        attributes: Iterable[str] | None = None,
        schema: LeadSchema | Mapping[str, Any] | None = None,
        unique_attributes: Iterable[str] = (),
        auto_create_leads: bool = False,
        missing_lead_error: MissingLeadError = "MXInvalidEntityException",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        api_host: str | None = None,
        jitter_seconds: float = 0.0,
        jitter_seed: int | None = None,
    ) -> None:
        """Configure the emulator; nothing listens until `start`.

        `rate_limit`, `throttle_status` and `retry_after` are as in `set_rate_limit`, with
        None for no limit. `bulk_rate_limit` (calls, seconds) is as in `set_bulk_rate_limit`:
        by default 5 bulk calls in 5 seconds, as LeadSquared has been seen to allow; None for
        no bulk limit. `clock` times both windows, so a test can slide them without sleeping.

        `attributes`, when given, is the lead schema: updates naming anything else are
        rejected whole. `schema` (a `LeadSchema`, or a mapping in the shape of a schema file,
        see `connector.testing.emulator.schema`) is a typed one in its stead: it also refuses
        values its fields do not accept, and is served by ``LeadsMetaData.Get``.
        `unique_attributes` (e.g. ``{"EmailAddress", "Phone"}``) may not hold the same
        non-empty value on two leads, ignoring case: an update giving a lead a value another
        lead holds is rejected whole with ``MXDuplicateEntryException`` (`add_lead` does not
        check). With `auto_create_leads`, ``Lead.Update`` calls to unknown leads create them
        (a bulk update never does); otherwise they are rejected with `missing_lead_error`.
        `port` 0 picks a free port. `jitter_seconds` and `jitter_seed` are as in `set_jitter`:
        each request arrives up to that long after it was sent.

        ``UserByAccessKey.Get`` answers the account's API host as `api_host` (see `api_host`):
        give one, e.g. ``"api-us11.leadsquared.com"``, to play an account whose API is not
        where the client was told to look.
        """
        if api_host is not None:
            check_api_host(api_host)
        self._api_host = api_host
        self._state = threading.Condition()
        self._stopping = threading.Event()
        self._store = LeadStore(
            self._state,
            attributes=attributes,
            schema=_as_schema(schema),
            unique_attributes=unique_attributes,
            auto_create_leads=auto_create_leads,
            missing_lead_error=missing_lead_error,
        )
        self._log = RequestLog(self._state)
        super().__init__(
            self._state,
            self._stopping,
            rate_limit=rate_limit,
            throttle_status=throttle_status,
            retry_after=retry_after,
            bulk_rate_limit=bulk_rate_limit,
        )
        self.set_jitter(jitter_seconds, jitter_seed)
        self._dispatcher = Dispatcher(
            self._state,
            store=self._store,
            log=self._log,
            throttle=self._throttle,
            faults=self._faults,
            keys=(access_key, secret_key),
            clock=clock,
            api_host=lambda: self.api_host,
        )
        self._port = port
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> Emulator:
        """Start listening on 127.0.0.1 in a daemon thread; returns self."""
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("an emulator can only be started once")
        self._server = EmulatorServer(
            ("127.0.0.1", self._port), self._dispatcher.serve, self._faults
        )
        # serve_forever only notices shutdown() between polls, and every test stops an
        # emulator; a 10 ms poll keeps that cheap at the cost of idle wake-ups.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"lsq-emulator-{self._server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and end every wait in progress (held, delayed, hanging). Idempotent."""
        with self._state:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._state.notify_all()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321`` (after `start`)."""
        if self._server is None:
            raise RuntimeError("the emulator has not been started")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def api_host(self) -> str:
        """The host ``UserByAccessKey.Get`` names in ``LSQCommonServiceURLs.api``: the
        `api_host` given, else `url` without its scheme, e.g. ``127.0.0.1:54321`` (after
        `start`), to compare with the host part of the URL a client was configured with."""
        if self._api_host is not None:
            return self._api_host
        return urlsplit(self.url).netloc

    # Leads

    def add_lead(self, lead_id: str, **attributes: str) -> None:
        """Create (or replace) a lead with the given attribute values."""
        self._store.put(lead_id, attributes)

    def leads(self) -> dict[str, dict[str, str]]:
        """A copy of every lead, by id."""
        return self._store.all()

    def lead(self, lead_id: str) -> dict[str, str] | None:
        """A copy of one lead's attributes, or None when it does not exist."""
        return self._store.get(lead_id)

    def reject_values(
        self,
        attribute: str,
        predicate: Callable[[str], bool],
        exception_type: str = "MXInvalidInputException",
    ) -> None:
        """Reject (HTTP 500, `exception_type`) updates setting `attribute` to a value for
        which `predicate` is true; the whole update is then rejected, as LeadSquared does."""
        self._store.reject_values(attribute, predicate, exception_type)

    def reset(self, *, requests_only: bool = False) -> None:
        """Forget every lead and empty the request log; with `requests_only`, just the log."""
        if not requests_only:
            self._store.clear()
        self._log.clear()

    # Request log

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, in arrival order."""
        return self._log.entries()

    def clear_requests(self) -> None:
        """Empty the request log (`throttled_count` keeps counting)."""
        self._log.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until the log holds at least `count` requests; returns a copy of it.

        Requests are logged once processed, before any latency or hold delays their answer.
        Raises TimeoutError when fewer have arrived after `timeout` seconds.
        """
        return self._log.wait_for(count, timeout)
