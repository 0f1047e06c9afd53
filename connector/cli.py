"""The `lsq-sync` command. User errors print one clear message and exit non-zero, no traceback.

Exit codes: 0 done, 1 the run could not do its job, 2 bad config or usage, and 128 + the
signal's number (130 SIGINT, 143 SIGTERM) when a signal stopped `run` or another command;
the daemon, whose normal end is a signal, exits 0 then.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

from connector.config import CONFIG_ENV_VAR, Config, load_config
from connector.errors import (
    ConfigError,
    ConfigLocation,
    ConfigProblem,
    FatalRunError,
    LsqSyncError,
)
from connector.logs import LEVELS, LOG_LEVEL_ENV_VAR, configure
from connector.signals import StopSignals

if TYPE_CHECKING:
    from connector.instrumentation import Instrumentation
    from connector.sync import Connector
    from connector.teardown import Uninstalled

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it

log = logging.getLogger(__name__)


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """--config, --log-level and --log-format, before the command or after it. After it, an
    option left out sets nothing, so that one given before the command still counts."""

    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--config",
        metavar="PATH",
        action="append",
        # Kept apart, so that `daemon` adds those after the command to those before it.
        dest="config_after" if after_command else "config",
        default=default(None),
        help=f"config file (default: ${CONFIG_ENV_VAR}); `daemon` takes several, one per connector",
    )
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        type=str.upper,
        default=default(None),
        help=f"default: ${LOG_LEVEL_ENV_VAR} or WARNING",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default("text"),
        help="json writes one JSON object per line (for daemons)",
    )


def _version() -> str:
    try:
        return metadata.version("lsq-sync")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lsq-sync",
        description="Sync changed rows of your database to LeadSquared leads, sending only "
        "the mapped attributes that really changed.",
    )
    parser.add_argument("--version", action="version", version=f"lsq-sync {_version()}")
    _global_options(parser, after_command=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after_command=True)
    commands = _Commands(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common
    )
    commands.add_parser(
        "init",
        help="create or upgrade the connector's tables and install change capture",
        description="Create or upgrade the connector's own tables (Alembic), then install or "
        "regenerate the change-capture triggers on the source table. Safe to run again.",
    )
    validate = commands.add_parser(
        "validate",
        help="check everything a first run depends on, and report every problem at once",
        description="Check the config; that the database is reachable; that the source "
        "table, key and columns exist and the key is unique; that change capture is "
        "installed and matches the config; that LeadSquared accepts the keys and "
        "leadsquared.host is the account's own host; that each mapped attribute exists and "
        "fits its column; and, on a sample of rows, which values pre-flight would hold back. "
        "Exits 0 when the connector can run, 1 when it cannot.",
    )
    validate.add_argument("--json", action="store_true", help="print the result as JSON")
    validate.add_argument(
        "--sample",
        type=int,
        default=1000,
        metavar="ROWS",
        help="source rows whose values are checked (default 1000)",
    )
    run = commands.add_parser(
        "run",
        help="run one sync cycle and exit (for cron)",
        description="Ingest every committed change, push every lead that needs it, record "
        "the outcome, print a summary. Exits 1 when the run could not do its job. On SIGINT "
        "or SIGTERM no new call starts, calls in flight get sync.drain_seconds to finish, the "
        "run is recorded as stopped, and it exits 130 (SIGINT) or 143 (SIGTERM). On a "
        "terminal, progress is shown on stderr as it goes.",
    )
    run.add_argument(
        "--json", action="store_true", help="print the run's report (status, counts) as JSON"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="show what the run would send (leads, attributes, values), changes not yet "
        "ingested included, without sending or recording anything",
    )
    run.add_argument(
        "--limit",
        type=_limit,
        default=20,
        metavar="N",
        help="--dry-run: leads shown (default 20; 0 shows only the totals)",
    )
    commands.add_parser(
        "daemon",
        help="run sync cycles on an interval until SIGTERM/SIGINT",
        description="Run a cycle every sync.interval_seconds. On SIGTERM or SIGINT, start no "
        "new call, give calls in flight sync.drain_seconds to finish, record state and exit 0. "
        "Give --config once per connector to run several in one process; daemons on other "
        "hosts given the same configs share the connectors, each run by one daemon at a time.",
    )
    commands.add_parser(
        "backfill",
        help="queue every existing source row, so the next run pushes what differs",
        description="Queue every row of the source table, as if each had just changed. The "
        "next run pushes only the attributes that differ from what was last pushed. Use it "
        "after the first init on a table with rows, and after mapping new columns.",
    )
    retry = commands.add_parser(
        "retry",
        help="push failed leads again on the next run",
        description="Make leads that LeadSquared rejected, leads with attributes set aside as "
        "unknown, and leads waiting out a retry delay pending again, so the next run pushes "
        "them. Use it after fixing the cause (a field added in LeadSquared, say).",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--lead", action="append", metavar="ID", help="a lead id (repeatable)")
    which.add_argument("--all", action="store_true", help="every failed lead")
    resync = commands.add_parser(
        "resync",
        help="send leads' current values again on the next run, whatever was last pushed",
        description="Forget what was last pushed to these leads (or to all), for these "
        "attributes (or all mapped ones), so that the next run sends their current values "
        "again: for leads someone edited by hand in LeadSquared. With many leads, the next "
        "run sends them through bulk calls (leadsquared.bulk).",
    )
    leads = resync.add_mutually_exclusive_group(required=True)
    leads.add_argument("--lead", action="append", metavar="ID", help="a lead id (repeatable)")
    leads.add_argument("--all", action="store_true", help="every lead")
    resync.add_argument(
        "--attribute", action="append", metavar="A", help="a LeadSquared attribute (repeatable)"
    )
    uninstall = commands.add_parser(
        "uninstall",
        help="remove change capture (triggers and functions) from the source table",
        description="Remove this connector's triggers and trigger functions, from the table "
        "`init` installed them on; works when the configured columns or the table itself no "
        "longer exist. Runs refuse to start until `init` installs capture again.",
    )
    uninstall.add_argument(
        "--drop-state",
        action="store_true",
        help="also delete this connector's rows from every lsq_sync_* table, and drop the "
        "tables when no other connector uses them",
    )
    status = commands.add_parser(
        "status",
        help="show the backlog, the lag, calls used, failed leads and recent runs",
        description="Show the backlog (changes not yet ingested, leads still to push) and the "
        "lag, the calls used against the rate limit and the daily budget, a run in "
        "progress, leads LeadSquared rejected, leads and rows the connector holds back (and "
        "why), and recent runs. Totals are counted by the database; each list shows at most "
        "--limit entries.",
    )
    status.add_argument(
        "--limit",
        type=_limit,
        default=20,
        metavar="N",
        help="entries shown in each list (default 20; 0 shows only the totals)",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    demo = commands.add_parser(
        "demo",
        help="see the connector work end to end; needs no config",
        description="Make a SQLite database with a sample table, install capture, start the "
        "bundled LeadSquared emulator, change rows and run sync cycles, explaining each step.",
    )
    demo.add_argument("--dir", default="lsq-sync-demo", help="where to put the demo database")
    commands.plain.add_parser(
        "emulator",
        help="serve the bundled LeadSquared emulator for your own tests",
        description="Serve the LeadSquared emulator on loopback until Ctrl-C. Takes the "
        "options of `python -m connector.testing.emulator` (--port, --lead, --schema, "
        "--rate-limit, --throttle-status, --fault-rate, --latency, ...; see its --help).",
        add_help=False,
    )
    return parser


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


class _Commands:
    """The subcommands, each of which takes the global options after its name too."""

    def __init__(self, plain: Any, common: argparse.ArgumentParser) -> None:
        self.plain = plain
        self._common = common

    def add_parser(self, name: str, **options: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.plain.add_parser(
            name, parents=[self._common], **options
        )
        return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, emulator_options = parser.parse_known_args(argv)
    if emulator_options and args.command != "emulator":
        parser.error(f"unrecognized arguments: {' '.join(emulator_options)}")
    args.emulator_options = emulator_options
    # The demo explains its own failures; its log would only repeat them.
    default_level = "ERROR" if args.command == "demo" else "WARNING"
    level = args.log_level or os.environ.get(LOG_LEVEL_ENV_VAR, default_level).upper()
    if level not in LEVELS:
        return _fail(f"{LOG_LEVEL_ENV_VAR}={level!r} is not one of {', '.join(LEVELS)}", EXIT_USAGE)
    configure(level, json_lines=args.log_format == "json")
    try:
        code = _dispatch(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`lsq-sync status | head`): what it did not read is not ours to
        # report. Further writes go nowhere, so that the interpreter's own flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except FatalRunError as exc:
        return _fail(f"run stopped: {exc}", EXIT_RUN_FAILED)
    except LsqSyncError as exc:
        return _fail(str(exc), EXIT_RUN_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from connector.demo import run_demo  # noqa: PLC0415 (keeps the CLI's start-up light)

        return run_demo(args.dir)
    if args.command == "emulator":
        from connector.testing.emulator import main as emulator_main  # noqa: PLC0415

        return emulator_main(args.emulator_options, prog="lsq-sync emulator")

    from connector.sync import Connector  # noqa: PLC0415

    if args.command == "validate":
        return _validate(args)
    if args.command == "daemon":
        return _daemon(args)
    path, config = _config(args)
    with Connector(config, config_source=path, instrumentation=_progress(args)) as connector:
        if args.command == "init":
            queued = connector.init()
            print(
                f"{config.name}: tables ready and change capture installed on "
                f"{connector.source.table.name!r}"
            )
            if queued:
                print(
                    f"{config.name}: capture had lost track of which rows changed, so all "
                    f"{queued} rows were queued; the next run pushes what differs"
                )
            return EXIT_OK
        if args.command == "uninstall":
            _print_uninstalled(config.name, connector.uninstall(drop_state=args.drop_state))
            return EXIT_OK
        if args.command == "backfill":
            queued = connector.backfill()
            print(
                f"{config.name}: {_count(queued, 'row')} queued; the next run pushes what differs"
            )
            return EXIT_OK
        if args.command == "retry":
            count = connector.retry(None if args.all else args.lead)
            print(f"{config.name}: {_count(count, 'lead')} will be pushed again by the next run")
            return EXIT_OK
        if args.command == "resync":
            count = connector.resync(None if args.all else args.lead, args.attribute)
            print(
                f"{config.name}: {_count(count, 'lead')} will be sent their current values by "
                "the next run"
            )
            return EXIT_OK
        if args.command == "run":
            return _run(connector, args)
        if args.command == "status":
            from connector.report import print_status  # noqa: PLC0415

            print_status(connector, args.limit, as_json=args.json)
            return EXIT_OK
        raise AssertionError(f"unknown command {args.command!r}")


def _daemon(args: argparse.Namespace) -> int:
    from connector.daemon import run_daemon  # noqa: PLC0415
    from connector.fleet import shared_engines  # noqa: PLC0415
    from connector.sync import Connector  # noqa: PLC0415

    configs = _load_configs(_config_paths(args))
    engines = shared_engines([config for _, config in configs])
    # Progress lines name no connector: they are drawn for one alone.
    progress = _progress(args) if len(configs) == 1 else None
    with contextlib.ExitStack() as stack:
        connectors = [
            stack.enter_context(
                Connector(config, config_source=path, engine=engine, instrumentation=progress)
            )
            for (path, config), engine in zip(configs, engines, strict=True)
        ]
        stop = threading.Event()
        with StopSignals(stop):
            if len(connectors) == 1:
                connectors[0].check_ready()
            else:
                # One connector not ready must not keep the others from running: each cycle
                # checks again, and says why it cannot run.
                for connector in connectors:
                    try:
                        connector.check_ready()
                    except LsqSyncError as exc:
                        log.error(
                            "connector not ready",
                            extra={"connector": connector.config.name, "error": str(exc)},
                        )
            return run_daemon(connectors, stop)


def _run(connector: Connector, args: argparse.Namespace) -> int:
    if args.dry_run:
        from connector.dryrun import print_dry_run  # noqa: PLC0415

        return print_dry_run(connector, args.limit, as_json=args.json)
    with StopSignals(connector.stop) as signals:
        report = connector.run_once()
    print(report.as_json() if args.json else report.summary())
    return signals.exit_code or EXIT_OK


def _progress(args: argparse.Namespace) -> Instrumentation | None:
    """Progress of long runs: on stderr when it is a terminal, else in the log."""
    if args.command == "daemon" or (args.command == "run" and not args.dry_run):
        from connector.progress import Progress  # noqa: PLC0415

        return Progress.on(sys.stderr)
    return None


def _validate(args: argparse.Namespace) -> int:
    from connector import validate  # noqa: PLC0415
    from connector.sync import Connector  # noqa: PLC0415

    if args.sample < 1:
        raise ConfigError(
            [ConfigProblem(ConfigLocation(""), "validate --sample must be at least 1")]
        )
    try:
        path, config = _config(args)
    except ConfigError as exc:
        found = validate.config_problems(exc)
    else:
        with Connector(config, config_source=path) as connector:
            found = validate.validate(
                config,
                connector.engine,
                connector.client_paced_by,
                config_source=path,
                sample_rows=args.sample,
            )
    print(found.as_json() if args.json else found.as_text())
    return EXIT_OK if found.ok else EXIT_RUN_FAILED


def _print_uninstalled(name: str, done: Uninstalled) -> None:
    removed = ", ".join(done.removed) if done.removed else "nothing was left to remove"
    print(f"{name}: change capture removed from table {done.table!r} ({removed})")
    if done.tables_dropped:
        print(
            f"{name}: {done.rows_deleted} rows of this connector deleted; the lsq_sync_* "
            "tables were dropped, as no other connector uses them"
        )
    elif done.other_connectors:
        print(
            f"{name}: {done.rows_deleted} rows of this connector deleted; the lsq_sync_* "
            f"tables are kept for {', '.join(done.other_connectors)}"
        )
    else:
        print(f"{name}: its sync state is kept; `lsq-sync init` installs capture again")


def _config_paths(args: argparse.Namespace) -> list[str]:
    """The --config paths, those before the command first, else $LSQ_SYNC_CONFIG."""
    paths = [*(args.config or ()), *getattr(args, "config_after", ())]
    if not paths and os.environ.get(CONFIG_ENV_VAR):
        paths = [os.environ[CONFIG_ENV_VAR]]
    if not paths:
        message = f"no config: pass --config PATH or set {CONFIG_ENV_VAR}"
        raise ConfigError([ConfigProblem(ConfigLocation(""), message)])
    return paths


def _config(args: argparse.Namespace) -> tuple[str, Config]:
    paths = _config_paths(args)
    if len(paths) > 1:
        message = (
            f"{args.command} takes one --config, not {len(paths)} ({', '.join(paths)}); only "
            "daemon runs several connectors"
        )
        raise ConfigError([ConfigProblem(ConfigLocation(""), message)])
    return paths[0], load_config(paths[0])


def _load_configs(paths: list[str]) -> list[tuple[str, Config]]:
    """Every config, each problem of every file reported at once; two connectors may not
    share a name (their rows in the shared tables are keyed by it)."""
    problems: list[ConfigProblem] = []
    loaded: list[tuple[str, Config]] = []
    for path in paths:
        try:
            loaded.append((path, load_config(path)))
        except ConfigError as exc:
            problems.extend(exc.problems)
    files_by_name: dict[str, list[str]] = {}
    for path, config in loaded:
        files_by_name.setdefault(config.name, []).append(path)
    for name, files in files_by_name.items():
        if len(files) > 1:
            message = (
                f"the connector name {name!r} is in {' and '.join(files)}: each connector "
                "needs a name of its own"
            )
            problems.append(ConfigProblem(ConfigLocation(files[-1], ("name",)), message))
    if problems:
        raise ConfigError(problems)
    return loaded


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _fail(message: str, code: int) -> int:
    for line in message.splitlines():
        print(f"lsq-sync: error: {line}", file=sys.stderr)
    return code
