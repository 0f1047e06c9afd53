"""The emulator's command line: serve one on loopback until Ctrl-C, configured by flags.

`lsq-sync emulator` hands its options here; so does ``python -m connector.testing.emulator``.
A bad value is refused by argparse, naming its flag (exit 2, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
from collections.abc import Callable, Sequence

from connector.testing.emulator.account import check_api_host
from connector.testing.emulator.admin import ADMIN_PREFIX
from connector.testing.emulator.faults import FAULT_KINDS, MAX_JITTER_SECONDS, THROTTLE_STATUSES
from connector.testing.emulator.schema import LeadSchema, SchemaError
from connector.testing.emulator.service import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, Emulator
from connector.testing.emulator.state import MISSING_LEAD_MESSAGES


def _number(
    convert: Callable[[str], float], low: float, high: float, what: str
) -> Callable[[str], float]:
    """An argparse type: `convert`ed text within [low, high], or an error saying `what`."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _api_host(text: str) -> str:
    try:
        check_api_host(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a host name, with a port if need be, and no scheme, got {text!r}"
        ) from None
    return text


_SECONDS = _number(float, 0, 86400, "a number of seconds from 0 to 86400")
_PORT = _number(int, 0, 65535, "a port from 0 to 65535")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a LeadSquared API emulator on 127.0.0.1 until Ctrl-C. Its admin "
        f"endpoint {ADMIN_PREFIX} (no keys needed) reads leads and the request log "
        f"(GET {ADMIN_PREFIX}leads[/ID], GET {ADMIN_PREFIX}requests), puts a lead "
        f"(PUT {ADMIN_PREFIX}leads/ID) and resets (POST {ADMIN_PREFIX}reset[?only=requests]).",
    )
    add = parser.add_argument
    add("--port", type=_PORT, default=8089, help="port to listen on; 0 = any free")
    add("--lead", action="extend", nargs="+", default=[], metavar="ID", help="leads that exist")
    add("--access-key", default=DEFAULT_ACCESS_KEY)
    add("--secret-key", default=DEFAULT_SECRET_KEY)
    add(
        "--schema",
        metavar="FILE",
        help="lead schema, YAML or JSON: fields with type, max_length, options (see README)",
    )
    add(
        "--attribute",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="the only attributes leads have, untyped (instead of --schema)",
    )
    add(
        "--rate-limit",
        type=_number(int, 0, 10**6, "a whole number of calls from 0"),
        default=25,
        metavar="CALLS",
        help="calls per window; 0 = no limit",
    )
    add(
        "--window",
        type=_number(float, 0.001, 86400, "seconds above 0"),
        default=5.0,
        metavar="SECONDS",
    )
    add(
        "--bulk-rate-limit",
        type=_number(int, 0, 10**6, "a whole number of calls from 0"),
        default=5,
        metavar="CALLS",
        help="bulk calls (Lead/Bulk/UpdateV2) per bulk window, on top of --rate-limit; "
        "0 = no bulk limit",
    )
    add(
        "--bulk-window",
        type=_number(float, 0.001, 86400, "seconds above 0"),
        default=5.0,
        metavar="SECONDS",
    )
    add("--throttle-status", type=int, default=429, choices=sorted(THROTTLE_STATUSES))
    add(
        "--retry-after",
        type=_SECONDS,
        metavar="SECONDS",
        help="send Retry-After with throttled answers (none by default, as LeadSquared)",
    )
    add(
        "--unique-attribute",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="attributes no two leads may share, e.g. EmailAddress Phone",
    )
    add(
        "--api-host",
        type=_api_host,
        metavar="HOST",
        help="the API host UserByAccessKey.Get names (default: this emulator's 127.0.0.1:PORT), "
        "e.g. api-us11.leadsquared.com to play an account on another regional host",
    )
    add("--auto-create-leads", action="store_true", help="updates to unknown leads create them")
    add(
        "--missing-lead-error",
        default="MXInvalidEntityException",
        choices=sorted(MISSING_LEAD_MESSAGES),
        help="the ExceptionType for an update to an unknown lead",
    )
    _add_fault_options(parser)
    return parser


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    faults = parser.add_argument_group("faults", "misbehave on purpose, as LeadSquared can")
    add = faults.add_argument
    add(
        "--fault-rate",
        type=_number(float, 0, 1, "a share from 0 to 1"),
        default=0.0,
        metavar="SHARE",
        help="answer this share of API calls with a fault drawn from --fault-kind",
    )
    add(
        "--fault-kind",
        action="extend",
        nargs="+",
        default=[],
        choices=sorted(FAULT_KINDS),
        metavar="KIND",
        help=f"fault kinds for --fault-rate: {', '.join(sorted(FAULT_KINDS))}",
    )
    add("--fault-seed", type=int, metavar="N", help="seed faults and latency, to repeat a run")
    add(
        "--latency",
        type=_SECONDS,
        nargs="+",
        metavar="SECONDS",
        help="delay every answer by this long, or by a random time between two values",
    )
    add(
        "--jitter",
        type=_number(float, 0, MAX_JITTER_SECONDS, "a number of seconds from 0 to 60"),
        default=0.0,
        metavar="SECONDS",
        help="delay every request's arrival by a random time up to this long, before it is "
        "counted by the rate limit, as a network's variable delay does",
    )
    add("--jitter-seed", type=int, metavar="N", help="seed the jitter, to repeat a run")
    add("--fault-timeout-seconds", type=_SECONDS, default=30.0, metavar="SECONDS")
    add("--fault-drip-seconds", type=_SECONDS, default=5.0, metavar="SECONDS")
    add(
        "--fault-huge-bytes",
        type=_number(int, 0, 1 << 40, "a whole number of bytes from 0"),
        default=1 << 30,
        metavar="BYTES",
    )


def _emulator(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Emulator:
    """The emulator the flags describe; a flag that does not fit the others is a usage error."""
    if args.schema is not None and args.attribute is not None:
        parser.error("argument --attribute: not allowed with --schema (the schema names fields)")
    if args.fault_rate > 0 and not args.fault_kind:
        parser.error("argument --fault-rate: needs at least one --fault-kind")
    latency = args.latency or [0.0]
    if len(latency) > 2 or latency[0] > latency[-1]:
        parser.error("argument --latency: expected SECONDS, or MIN MAX with MIN <= MAX")
    schema = None
    if args.schema is not None:
        try:
            schema = LeadSchema.load(args.schema)
        except SchemaError as exc:
            parser.error(f"argument --schema: {exc}")
    emulator = Emulator(
        access_key=args.access_key,
        secret_key=args.secret_key,
        rate_limit=(args.rate_limit, args.window) if args.rate_limit > 0 else None,
        throttle_status=args.throttle_status,
        retry_after=args.retry_after,
        bulk_rate_limit=(
            (args.bulk_rate_limit, args.bulk_window) if args.bulk_rate_limit > 0 else None
        ),
        attributes=args.attribute,
        schema=schema,
        unique_attributes=args.unique_attribute,
        auto_create_leads=args.auto_create_leads,
        missing_lead_error=args.missing_lead_error,
        port=args.port,
        api_host=args.api_host,
        jitter_seconds=args.jitter,
        jitter_seed=args.jitter_seed,
    )
    emulator.set_fault_rate(args.fault_rate, args.fault_kind, seed=args.fault_seed)
    emulator.set_latency(latency[0], latency[-1], seed=args.fault_seed)
    emulator.fault_timeout_seconds = args.fault_timeout_seconds
    emulator.fault_drip_seconds = args.fault_drip_seconds
    emulator.fault_huge_bytes = args.fault_huge_bytes
    for lead_id in args.lead:
        emulator.add_lead(lead_id)
    return emulator


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m connector.testing.emulator"
) -> int:
    """Serve an emulator on loopback until Ctrl-C, printing its URL and (fake) keys."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    emulator = _emulator(parser, args)
    try:
        emulator.start()
    except OSError as exc:
        print(f"{prog}: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        print(f"LeadSquared emulator listening on {emulator.url}", flush=True)
        print(f"access key: {args.access_key}", flush=True)
        print(f"secret key: {args.secret_key}", flush=True)
        print(f"admin: {emulator.url}{ADMIN_PREFIX}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    finally:
        emulator.stop()
    return 0
