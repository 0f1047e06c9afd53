"""The user the API keys belong to, as ``GET /v2/Authentication.svc/UserByAccessKey.Get``
describes it: LeadSquared answers it on any regional host, with the host the account's API
lives on in ``LSQCommonServiceURLs.api``, so a client can tell it was set up with the wrong one.

The host is written as LeadSquared writes its hosts, without a scheme
(``api-in21.leadsquared.com``): by default the emulator's own ``127.0.0.1:PORT`` (its `url`
without ``http://``), or the `api_host` it was made with, to play an account that lives
elsewhere. The emulator has no web app, so ``app`` names the same host.
"""

from __future__ import annotations

import re
from typing import Final

from connector.testing.emulator.wire import Answer, json_answer

EMULATOR_USER_ID: Final = "6f1b3c9e-0000-4000-8000-000000000001"
_HOST: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?(:[0-9]{1,5})?")


def check_api_host(host: str) -> None:
    if not _HOST.fullmatch(host):
        raise ValueError(
            "api_host must be a host name, with a port if need be, and no scheme or path "
            f"(e.g. api-in21.leadsquared.com), got {host!r}"
        )


def user_by_access_key(api_host: str) -> Answer:
    """The answer to ``UserByAccessKey.Get`` for an account whose API is on `api_host`."""
    user = {
        "Id": EMULATOR_USER_ID,
        "FirstName": "Emulator",
        "LastName": "User",
        "EmailAddress": "api@emulator.test",
        "Role": "Administrator",
        "LSQCommonServiceURLs": {"api": api_host, "app": api_host},
    }
    return json_answer(200, user, "success")
