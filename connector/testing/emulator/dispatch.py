"""How each request is judged, once it has arrived (after any jitter), in LeadSquared's
order: API known, keys, rate limit (and the
bulk limit, for a bulk call), fault, then the endpoint; and how it is logged before any delay
holds its answer back.

`endpoints` lists the APIs answered. An API is known by its method and whole path, and logged
by its path after its service's prefix (``Lead.Update``, ``Lead/Bulk/UpdateV2``,
``UserByAccessKey.Get``); an unknown one by its last path segment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from connector.testing.emulator.account import user_by_access_key
from connector.testing.emulator.admin import ADMIN_PREFIX, Admin
from connector.testing.emulator.bulk import bulk_update
from connector.testing.emulator.faults import Faults, Throttle
from connector.testing.emulator.state import LeadStore, RecordedRequest, RequestLog
from connector.testing.emulator.wire import (
    API_PREFIX,
    AUTH_PREFIX,
    Answer,
    Incoming,
    error,
    parse_json,
)


@dataclass(frozen=True)
class Endpoint:
    """One API the account answers: how it is called, the name the request log gives it
    (its path after the service's prefix), and its answer."""

    method: str
    api: str
    answer: Callable[[Incoming], Answer]
    bulk: bool = False
    """Counted against the bulk rate limit too, and never logged with a lead id."""
    service: str = API_PREFIX


def endpoints(store: LeadStore, api_host: Callable[[], str]) -> dict[tuple[str, str], Endpoint]:
    """The APIs answered, by method and path; `api_host` says where the account's API is."""
    found = [
        Endpoint("POST", "Lead.Update", store.lead_update),
        Endpoint("GET", "Leads.GetById", store.get_by_id),
        Endpoint("GET", "Leads.GetByEmailaddress", store.get_by_email),
        Endpoint("GET", "RetrieveLeadByPhoneNumber", store.get_by_phone),
        Endpoint("POST", "Lead/Bulk/UpdateV2", partial(bulk_update, store), bulk=True),
        Endpoint(
            "GET",
            "UserByAccessKey.Get",
            lambda _: user_by_access_key(api_host()),
            service=AUTH_PREFIX,
        ),
    ]
    # Without a schema there is nothing to describe, so the call stays unknown, as before.
    if store.schema is not None:
        found.append(Endpoint("GET", "LeadsMetaData.Get", store.metadata))
    return {(each.method, each.service + each.api): each for each in found}


class Dispatcher:
    """Answers one request at a time against the account's state, limits and faults."""

    def __init__(
        self,
        lock: threading.Condition,
        *,
        store: LeadStore,
        log: RequestLog,
        throttle: Throttle,
        faults: Faults,
        keys: tuple[str, str],
        clock: Callable[[], float],
        api_host: Callable[[], str],
    ) -> None:
        self._lock = lock
        self._admin = Admin(store, log, keys)
        self._endpoints = endpoints(store, api_host)
        self._store = store
        self._log = log
        self._throttle = throttle
        self._faults = faults
        self._keys = keys
        self._clock = clock

    def serve(self, incoming: Incoming) -> Answer:
        """Wait out the jitter, as the request's way here; process and log it; then wait as
        configured before it is answered.

        Admin requests are answered at once, unlogged, past every limit, jitter and fault."""
        if incoming.path.startswith(ADMIN_PREFIX):
            return self._admin.answer(incoming)
        self._faults.delay_arrival()
        with self._lock:
            arrived = self._clock()
            endpoint = self._endpoints.get((incoming.method, incoming.path))
            answer = self._decide(incoming, endpoint, arrived)
            lead_id = incoming.query.get("leadid") or incoming.query.get("id") or None
            self._log.append(
                RecordedRequest(
                    method=incoming.method,
                    api=incoming.path.rsplit("/", 1)[-1] if endpoint is None else endpoint.api,
                    lead_id=None if endpoint is not None and endpoint.bulk else lead_id,
                    body=parse_json(incoming.body),
                    status=answer.status,
                    outcome=answer.outcome,
                    post_updated_lead=incoming.query.get("postupdatedlead", "").lower() == "true",
                    arrived_at=arrived,
                )
            )
            delay = self._faults.next_latency()
        self._faults.delay_answer(delay, answer)
        return answer

    def _decide(self, incoming: Incoming, endpoint: Endpoint | None, arrived: float) -> Answer:
        if endpoint is None:
            return error(404, "MXInvalidAPIException", "API not found")
        if not self._authenticated(incoming):
            return error(
                401,
                "MXUnAuthorizedAccessException",
                "Invalid access key or secret key",
                outcome="unauthorized",
            )
        refusal = self._throttle.refusal(arrived, bulk=endpoint.bulk)
        if refusal is not None:
            return refusal
        fault = self._faults.next_fault()
        if fault is not None:
            return fault
        return endpoint.answer(incoming)

    def _authenticated(self, incoming: Incoming) -> bool:
        key_pairs = (
            (incoming.query.get("accesskey"), incoming.query.get("secretkey")),
            (incoming.header_access_key, incoming.header_secret_key),
        )
        return any(pair == self._keys for pair in key_pairs)
