"""LeadSquared over HTTP: Lead.Update and Leads.GetById.

httpx errors and LeadSquared's replies are translated here, once, into the connector's
exceptions. The keys are added by a transport wrapper below httpx's own logging, so the URLs
that httpx logs and puts in its exceptions never hold them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx

from connector.config import LeadSquaredConfig
from connector.errors import (
    CallCancelledError,
    FatalRunError,
    LeadRejectedError,
    RetriableError,
    ThrottledError,
)
from connector.ratelimit import Slot
from connector.responses import Classified, Outcome, classify
from connector.values import to_payload

log = logging.getLogger(__name__)

USER_AGENT = "lsq-sync/0.1"


class Limiter(Protocol):
    """Paces calls; see connector.ratelimit.AccountLimiter."""

    def acquire(self) -> Slot | None: ...
    def going_out(self, slot: Slot) -> None: ...
    def throttled(self, retry_after: float | None) -> None: ...


class _Credentials(httpx.BaseTransport):
    def __init__(
        self, inner: httpx.BaseTransport, access_key: str, secret_key: str, in_headers: bool
    ) -> None:
        self._inner = inner
        self._keys = (access_key, secret_key)
        self._in_headers = in_headers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        access_key, secret_key = self._keys
        url, headers = request.url, request.headers.copy()
        if self._in_headers:
            headers["x-LSQ-AccessKey"] = access_key
            headers["x-LSQ-SecretKey"] = secret_key
        else:
            url = url.copy_merge_params({"accessKey": access_key, "secretKey": secret_key})
        signed = httpx.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return self._inner.handle_request(signed)

    def close(self) -> None:
        self._inner.close()


class LeadSquaredClient:
    """Every call waits for its slot from `limiter` (all of them: updates, lookups, metadata),
    and a throttled answer holds back the whole account. Retrying belongs to the caller.

    Thread-safe: several calls may be in flight at once.
    """

    def __init__(
        self,
        config: LeadSquaredConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        access_key = config.access_key.get_secret_value()
        secret_key = config.secret_key.get_secret_value()
        self._secrets = tuple(
            form
            for key in (access_key, secret_key)
            for form in {key, quote(key, safe=""), quote(key), quote_plus(key)}
        )
        self._post_updated_lead = config.post_updated_lead
        self._limiter = limiter
        timeouts = config.timeout_seconds
        self._total_timeout = timeouts.total
        self._http = httpx.Client(
            base_url=f"{config.host}/v2/LeadManagement.svc/",
            transport=_Credentials(
                transport or httpx.HTTPTransport(),
                access_key,
                secret_key,
                in_headers=config.auth == "header",
            ),
            timeout=httpx.Timeout(
                connect=min(timeouts.connect, timeouts.total),
                read=min(timeouts.read, timeouts.total),
                write=min(timeouts.read, timeouts.total),
                pool=timeouts.total,
            ),
            # Kept alive longer than a rate window, so that each window's calls reuse
            # connections instead of reaching LeadSquared late behind a new handshake.
            limits=httpx.Limits(max_connections=config.max_in_flight + 2, keepalive_expiry=30.0),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"LeadSquaredClient(base_url={str(self._http.base_url)!r})"

    def __enter__(self) -> LeadSquaredClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def update_lead(self, lead_id: str, update: Mapping[str, str | None]) -> None:
        """Set exactly these attributes on the lead; raises the connector's errors."""
        params = {"leadId": lead_id}
        if self._post_updated_lead:
            params["postUpdatedLead"] = "true"
        self._call("POST", "Lead.Update", params, to_payload(update))

    def get_lead(self, lead_id: str) -> dict[str, Any] | None:
        body = self._call("GET", "Leads.GetById", {"id": lead_id}, None).body
        if isinstance(body, list) and body and isinstance(body[0], dict):
            return body[0]
        return None

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _call(self, method: str, api: str, params: dict[str, str], payload: Any) -> Classified:
        if self._limiter is not None:
            slot = self._limiter.acquire()
            if slot is None:
                raise CallCancelledError(f"{api} not called: the connector is stopping")
            self._limiter.going_out(slot)
        try:
            status, headers, text = self._exchange(method, api, params, payload)
        except httpx.TimeoutException as exc:
            raise RetriableError(f"{api} timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            detail = self.redact(str(exc)) or type(exc).__name__
            raise RetriableError(f"{api} failed: {detail}") from None
        result = classify(status, headers, text)
        if result.outcome is Outcome.THROTTLED and self._limiter is not None:
            self._limiter.throttled(result.retry_after)
        log.debug(
            "leadsquared call",
            extra={"api": api, "status": result.status, "outcome": result.outcome.value},
        )
        message = self.redact(f"{api}: {result.message}")
        match result.outcome:
            case Outcome.SUCCESS:
                return result
            case Outcome.THROTTLED:
                raise ThrottledError(message, delay=result.retry_after)
            case Outcome.TRANSIENT:
                raise RetriableError(message, delay=result.retry_after)
            case Outcome.REJECTED:
                raise LeadRejectedError(
                    message,
                    exception_type=result.exception_type,
                    unknown_attributes=result.unknown_attributes,
                )
            case Outcome.FATAL:
                raise FatalRunError(message)

    def _exchange(
        self, method: str, api: str, params: dict[str, str], payload: Any
    ) -> tuple[int, httpx.Headers, str]:
        """One request, bounded in total time as well as per connect and per read.

        httpx's timeouts bound each wait, so an answer that trickles in a few bytes at a time
        would never end; the body is read in chunks against a deadline instead.
        """
        deadline = time.monotonic() + self._total_timeout
        with self._http.stream(method, api, params=params, json=payload) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(
                        f"no complete answer within {self._total_timeout:g} s", request=None
                    )
            return response.status_code, response.headers, body.decode(errors="replace")
