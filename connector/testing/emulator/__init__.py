"""A LeadSquared API emulator: a real HTTP server on loopback, for tests and the demo.

It answers, the way LeadSquared does, under ``/v2/LeadManagement.svc/``: ``Lead.Update``,
``Leads.GetById``, ``Leads.GetByEmailaddress`` (ignoring case), ``RetrieveLeadByPhoneNumber``
(Phone or Mobile, exactly as written), ``Lead/Bulk/UpdateV2`` (up to 25 leads, each judged as
``Lead.Update`` would judge it; see `bulk`) and, given a lead schema, ``LeadsMetaData.Get``;
and ``/v2/Authentication.svc/UserByAccessKey.Get``, naming the account's API host (see
`account`). It fails the ways LeadSquared fails, too: 401 for bad keys, throttling as 429, 200
or 403, permanent ``MX*`` errors as HTTP 500, gateway pages without JSON, dropped connections,
hangs, answers too big to hold, and any answer a test scripts itself. Tests drive it through
real sockets, so the client under test runs unpatched::

    with Emulator(rate_limit=(3, 1.0)) as emulator:
        emulator.add_lead("L1", FirstName="Ada")
        run_the_client_against(emulator.url)
        assert emulator.lead("L1") == {"FirstName": "Ada", "mx_City": "London"}

The account's rate limit (25 calls in 5 s by default) holds every API call; bulk calls must
also pass a bulk limit of their own (5 in 5 s by default, `Emulator(bulk_rate_limit=...)`).

Every request is processed (and an update applied) as soon as it arrives; latency and
``hold()`` only delay the *answer*. Faults (a dropped connection, a hang, a success body
dripped out too slowly to wait for) apply nothing. Together they cover both halves of "the
client never saw an answer": nothing happened, or the update landed anyway.

Run ``lsq-sync emulator --port 8089 --lead L1`` (or ``python -m connector.testing.emulator``)
to serve one by hand; ``--help`` lists the flags for a schema, faults and limits, and the
``/_emulator/`` admin endpoint (see `admin`) reads and resets what it holds.

The package: `service` (the `Emulator`), `dispatch` (how a request is judged), `state` (leads
and the request log), `bulk` (``Lead/Bulk/UpdateV2``), `account` (``UserByAccessKey.Get``),
`schema` (typed lead fields), `admin` (the ``/_emulator/`` endpoint), `faults` (rate limits,
faults, latency), `server` (HTTP plumbing), `wire` (requests, answers and LeadSquared's
bodies) and `cli` (the command line).
"""

from connector.testing.emulator.admin import ADMIN_PREFIX
from connector.testing.emulator.bulk import BULK_MAX_LEADS, SEARCH_KEYS
from connector.testing.emulator.cli import main
from connector.testing.emulator.faults import FAULT_KINDS, THROTTLE_STATUSES
from connector.testing.emulator.schema import FIELD_TYPES, LeadField, LeadSchema, SchemaError
from connector.testing.emulator.service import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from connector.testing.emulator.state import MissingLeadError, RecordedRequest
from connector.testing.emulator.wire import API_PREFIX, AUTH_PREFIX, RequestOutcome

__all__ = [
    "ADMIN_PREFIX",
    "API_PREFIX",
    "AUTH_PREFIX",
    "BULK_MAX_LEADS",
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "FAULT_KINDS",
    "FIELD_TYPES",
    "SEARCH_KEYS",
    "THROTTLE_STATUSES",
    "Emulator",
    "LeadField",
    "LeadSchema",
    "MissingLeadError",
    "RecordedRequest",
    "RequestOutcome",
    "SchemaError",
    "main",
]
