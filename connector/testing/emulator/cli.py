"""The emulator's command line: serve one on loopback until Ctrl-C, configured by flags.

`lsq-sync emulator` hands its options here; so does ``python -m connector.testing.emulator``.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Sequence

from connector.testing.emulator.service import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from connector.testing.emulator.state import MISSING_LEAD_MESSAGES


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m connector.testing.emulator"
) -> int:
    """Serve an emulator on loopback until Ctrl-C, printing its URL and (fake) keys."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a LeadSquared API emulator on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8089, help="port to listen on; 0 = any free")
    parser.add_argument(
        "--lead", action="extend", nargs="+", default=[], metavar="ID", help="leads that exist"
    )
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument(
        "--rate-limit", type=int, default=25, metavar="CALLS", help="calls per window; 0 = no limit"
    )
    parser.add_argument("--window", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--throttle-status", type=int, default=429, choices=[429, 200, 403])
    parser.add_argument(
        "--retry-after",
        type=float,
        metavar="SECONDS",
        help="send Retry-After with throttled answers (none by default, as LeadSquared)",
    )
    parser.add_argument(
        "--unique-attribute",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="attributes no two leads may share, e.g. EmailAddress Phone",
    )
    parser.add_argument(
        "--auto-create-leads", action="store_true", help="updates to unknown leads create them"
    )
    parser.add_argument(
        "--missing-lead-error",
        default="MXInvalidEntityException",
        choices=sorted(MISSING_LEAD_MESSAGES),
        help="the ExceptionType for an update to an unknown lead",
    )
    args = parser.parse_args(argv)

    emulator = Emulator(
        access_key=args.access_key,
        secret_key=args.secret_key,
        rate_limit=(args.rate_limit, args.window) if args.rate_limit > 0 else None,
        throttle_status=args.throttle_status,
        retry_after=args.retry_after,
        unique_attributes=args.unique_attribute,
        auto_create_leads=args.auto_create_leads,
        missing_lead_error=args.missing_lead_error,
        port=args.port,
    )
    for lead_id in args.lead:
        emulator.add_lead(lead_id)
    with emulator:
        print(f"LeadSquared emulator listening on {emulator.url}", flush=True)
        print(f"access key: {args.access_key}", flush=True)
        print(f"secret key: {args.secret_key}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0
