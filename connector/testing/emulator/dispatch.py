"""How each request is judged, in LeadSquared's order: API known, keys, rate limit, fault,
then the endpoint; and how it is logged before any delay holds its answer back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from connector.testing.emulator.admin import ADMIN_PREFIX, Admin
from connector.testing.emulator.faults import Faults, Throttle
from connector.testing.emulator.state import LeadStore, RecordedRequest, RequestLog
from connector.testing.emulator.wire import API_PREFIX, Answer, Incoming, error, parse_json

_ENDPOINTS: Final[dict[tuple[str, str], Callable[[LeadStore, Incoming], Answer]]] = {
    ("POST", "Lead.Update"): LeadStore.lead_update,
    ("GET", "Leads.GetById"): LeadStore.get_by_id,
    ("GET", "Leads.GetByEmailaddress"): LeadStore.get_by_email,
    ("GET", "RetrieveLeadByPhoneNumber"): LeadStore.get_by_phone,
}


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
    ) -> None:
        self._lock = lock
        self._admin = Admin(store, log, keys)
        self._endpoints = dict(_ENDPOINTS)
        # Without a schema there is nothing to describe, so the call stays unknown, as before.
        if store.schema is not None:
            self._endpoints["GET", "LeadsMetaData.Get"] = LeadStore.metadata
        self._store = store
        self._log = log
        self._throttle = throttle
        self._faults = faults
        self._keys = keys
        self._clock = clock

    def serve(self, incoming: Incoming) -> Answer:
        """Process and log one request, then wait as configured before it is answered.

        Admin requests are answered at once, unlogged, past every limit and fault."""
        if incoming.path.startswith(ADMIN_PREFIX):
            return self._admin.answer(incoming)
        with self._lock:
            arrived = self._clock()
            api = incoming.path.rsplit("/", 1)[-1]
            answer = self._decide(incoming, api, arrived)
            self._log.append(
                RecordedRequest(
                    method=incoming.method,
                    api=api,
                    lead_id=incoming.query.get("leadid") or incoming.query.get("id") or None,
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

    def _decide(self, incoming: Incoming, api: str, arrived: float) -> Answer:
        endpoint = None
        if incoming.path == API_PREFIX + api:
            endpoint = self._endpoints.get((incoming.method, api))
        if endpoint is None:
            return error(404, "MXInvalidAPIException", "API not found")
        if not self._authenticated(incoming):
            return error(
                401,
                "MXUnAuthorizedAccessException",
                "Invalid access key or secret key",
                outcome="unauthorized",
            )
        refusal = self._throttle.refusal(arrived)
        if refusal is not None:
            return refusal
        fault = self._faults.next_fault()
        if fault is not None:
            return fault
        return endpoint(self._store, incoming)

    def _authenticated(self, incoming: Incoming) -> bool:
        key_pairs = (
            (incoming.query.get("accesskey"), incoming.query.get("secretkey")),
            (incoming.header_access_key, incoming.header_secret_key),
        )
        return any(pair == self._keys for pair in key_pairs)
