"""The command line: ``pgactions list | describe | run | test-connection | demo | serve | keys | mcp |
watch | cdc``.

Exit codes, the contract scripts rely on (README, "From a shell"):

* 0 — success: the output object as JSON on stdout (with ``--output FILE``: in FILE, written through
  a temporary file beside it and renamed into place once the action succeeded and committed;
  nothing on stdout).
* 1 — the action failed: ``{"error": {...}}`` on stdout (test-connection: its report, with
  ``"ok": false`` and the ``error``), and one line on stderr: ``pgactions: CODE: message (detail)``.
  With ``--output`` no file is left behind (neither FILE nor a temporary one).
* 2 — usage error: the usage and the message on stderr, nothing on stdout.
* 3 — a batch in ``independent`` mode ran and some items failed: the batch output on stdout and a
  one-line summary on stderr naming the first failure.
* 70 — an internal error (a bug in pgactions): one line on stderr; ``--verbose`` adds the traceback.

No traceback is printed otherwise, and no output repeats a connection string as it was given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import orjson

from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import get_manifest, load_manifests

__all__ = ["main"]

log = logging.getLogger("pgactions.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ITEMS_FAILED, EXIT_INTERNAL = 0, 1, 2, 3, 70

# Where a connection comes from when --connection is not given (after it, in this order).
CONNECTION_VARIABLE = "PGACTIONS_CONNECTION"


class UsageError(Exception):
    """A mistake in the command line: exit 2 with the usage of *command* (or the main usage)."""

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None) -> None:
        super().__init__(message)
        self.parser = parser


class _Exit(Exception):
    """argparse finished on its own (--help, --version)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one path for every usage error (exit 2)
        raise UsageError(message, self)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("pgactions")
    except (ImportError, PackageNotFoundError):
        from pgactions import __version__

        return __version__


# -- JSON arguments -------------------------------------------------------------------------------

# A run of 19 digits may be an integer beyond 64 bits, which orjson would turn into a float.
_LONG_DIGITS = re.compile(r"\d{19}")


def _json_argument(text: str, name: str) -> Any:
    """Inline JSON, or @path to a JSON file (UTF-8)."""
    if text.startswith("@"):
        path = text[1:]
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"{name}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        except ValueError:  # a NUL in the path
            raise UsageError(f"{name}: cannot read {path!r}: not a valid path") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{name}: {path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    return _loads(text, name)


def _loads(text: str, name: str) -> Any:
    """orjson on the common path; where the text may hold an integer beyond 64 bits, the standard
    parser, which keeps such integers exact (as the Python API receives them)."""
    long_digits = _LONG_DIGITS.search(text) is not None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if not long_digits:
            raise UsageError(f"{name} is not valid JSON: {exc}") from None
        refused: Exception | None = exc  # an orjson that refuses big integers: let the standard parser try
    else:
        refused = None
        if not long_digits:
            return value
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates ("\ud800") refused, as orjson does
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{name} is not valid JSON: {refused or exc}") from None
    return value


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _print_json(value: Any) -> None:
    data = value if isinstance(value, bytes) else orjson.dumps(value, option=orjson.OPT_INDENT_2)
    out = sys.stdout.buffer
    out.write(data)  # the document is complete before anything is printed; never copied here
    out.write(b"\n")
    sys.stdout.flush()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_line(error: dict[str, Any]) -> str:
    """``CODE: message (detail)`` on one line."""
    detail = error.get("detail")
    return _one_line(f"{error.get('code')}: {error.get('message')}" + (f" ({detail})" if detail else ""))


def _fail_line(text: str) -> None:
    print(f"pgactions: {text}", file=sys.stderr, flush=True)


# -- options -------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes, not {value}")
    return value


_CONNECTION_HELP = (f"postgresql:// URL or profile file (YAML/JSON); default: ${CONNECTION_VARIABLE}, "
                    "else the libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE …")


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(prog="pgactions", description="PostgreSQL actions for flows and scripts.",
                     epilog="Exit codes: 0 success, 1 the action failed, 2 usage error, "
                            "3 some items of an independent batch failed.")
    parser.add_argument("--version", action="version", version=f"pgactions {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log to stderr, with tracebacks (otherwise nothing is logged: failures are in the output)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands: dict[str, argparse.ArgumentParser] = {}
    listing = commands["list"] = sub.add_parser("list", help="list the actions (or the triggers)")
    listing.add_argument("--kind", choices=["action", "trigger", "all"], default="action",
                         help="actions (default), triggers, or both")
    describe = commands["describe"] = sub.add_parser(
        "describe", help="show an action's manifest (inputs, outputs, examples)")
    describe.add_argument("action")
    run = commands["run"] = sub.add_parser("run", help="run an action")
    run.add_argument("action")
    run.add_argument("--connection", "-c", default=None, help=_CONNECTION_HELP)
    run.add_argument("--input", "-i", default=None, help="inputs as JSON, or @file.json (default: {})")
    run.add_argument("--context", default=None, help="flow context (trigger, steps) as JSON, or @file.json")
    run.add_argument("--items", default=None,
                     help="run once per item: a JSON list of {inputs, context?}, or @file.json (instead of --input)")
    run.add_argument("--batch-mode", choices=["independent", "transaction", "single"], default=None,
                     help="with --items: each item on its own (default), all in one transaction, or one statement")
    run.add_argument("--max-result-bytes", type=_positive_int, default=None,
                     help="output size limit in bytes (default 10 MB)")
    run.add_argument("--numeric-as-number", action="store_true", help="emit numeric values as JSON numbers")
    run.add_argument("--output", "-o", metavar="FILE", default=None,
                     help="write the output to FILE instead of stdout (streamed, in place only once the action "
                          "succeeded; nothing on stdout then)")
    run.add_argument("--flow", default=None, help="flow name, shown in pg_stat_activity's application_name")
    run.add_argument("--step", default=None, help="step name, shown in pg_stat_activity's application_name")
    test = commands["test-connection"] = sub.add_parser("test-connection", help="check a connection step by step")
    test.add_argument("--connection", "-c", default=None, help=_CONNECTION_HELP)
    demo = commands["demo"] = sub.add_parser("demo", help="start a throwaway PostgreSQL and run every guide example")
    what = demo.add_mutually_exclusive_group()
    what.add_argument("--keep", action="store_true", help="leave the server running (prints its URL and how to stop it)")
    what.add_argument("--stop", metavar="DIR", default=None, help="stop a server left running by --keep, and delete DIR")
    _service_commands(sub, commands)
    _trigger_commands(sub, commands)
    return parser, commands


def _trigger_commands(sub: Any, commands: dict[str, argparse.ArgumentParser]) -> None:
    """watch and cdc: triggers (docs/triggers.md)."""
    watch = commands["watch"] = sub.add_parser(
        "watch", help="print a trigger's events, one JSON object per line (pgactions list --kind trigger)")
    watch.add_argument("trigger")
    watch.add_argument("--connection", "-c", default=None, help=_CONNECTION_HELP)
    watch.add_argument("--input", "-i", default=None, help="the trigger's inputs as JSON, or @file.json")
    watch.add_argument("--checkpoint", metavar="FILE", default=None,
                       help="where the position is kept: read at start, replaced after each batch is printed")
    watch.add_argument("--once", action="store_true",
                       help="one poll (polling triggers) or what is committed now (CDC, notifications), then exit")
    cdc = commands["cdc"] = sub.add_parser("cdc", help="manage the replication slots of Row Changes (CDC)")
    cdc_sub = cdc.add_subparsers(dest="cdc_command", required=True, parser_class=_Parser)
    drop = commands["cdc drop-slot"] = cdc_sub.add_parser("drop-slot", help="drop a replication slot (frees its WAL)")
    drop.add_argument("--connection", "-c", default=None, help=_CONNECTION_HELP)
    drop.add_argument("--slot", required=True)


def _state_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state-dir", metavar="DIR", default=None,
                       help="the service's state directory (default: $XDG_STATE_HOME/pgactions)")
    where.add_argument("--state-url", metavar="URL", default=None,
                       help="keep the state in PostgreSQL instead (a postgresql:// URL; needs PGACTIONS_SECRET_KEY)")


def _service_commands(sub: Any, commands: dict[str, argparse.ArgumentParser]) -> None:
    """serve and keys: the HTTP service (pgactions[server]); see docs/service.md."""
    serve = commands["serve"] = sub.add_parser("serve", help="run the HTTP service (pip install 'pgactions[server]')")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    _state_options(serve)
    serve.add_argument("--no-auth", action="store_true",
                       help="accept requests without an API key or token (for a trusted network only)")
    serve.add_argument("--config", metavar="FILE", default=None, help="YAML configuration (flags override it)")
    serve.add_argument("--allow-hosts", nargs="+", metavar="HOST", default=None,
                       help="database hosts callers' connections may reach (names or CIDRs; default: any "
                            "but the denied)")
    serve.add_argument("--deny-hosts", nargs="+", metavar="HOST", default=None,
                       help="database hosts callers' connections may not reach (in addition to link-local "
                            "and cloud metadata addresses)")
    serve.add_argument("--demo", action="store_true",
                       help="also start a throwaway PostgreSQL with the guide's sample tables, save it as the "
                            "connection 'demo', and print the playground's URL (auth off, loopback only)")
    mcp = commands["mcp"] = sub.add_parser("mcp", help="serve the actions as MCP tools over stdio "
                                                       "(pip install 'pgactions[mcp]')")
    target = mcp.add_mutually_exclusive_group(required=True)
    target.add_argument("--connection", "-c", default=None, help="postgresql:// URL or profile file")
    target.add_argument("--connection-id", default=None, help="a connection stored in the service's state")
    _state_options(mcp)
    mcp.add_argument("--actions", nargs="+", default=None, help="expose only these action ids")
    mcp.add_argument("--toolset", default=None, help="expose a toolset named in --config")
    mcp.add_argument("--config", metavar="FILE", default=None, help="the service's YAML configuration (toolsets)")
    mcp.add_argument("--read-only", action="store_true", help="expose read-only actions only")
    keys = commands["keys"] = sub.add_parser("keys", help="manage the service's API keys and secret key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    create = commands["keys create"] = keys_sub.add_parser("create", help="create an API key (printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--actions", nargs="+", default=None, help="action ids the key may run (default: all)")
    create.add_argument("--connections", nargs="+", default=None,
                        help="stored connection ids the key may use (default: all)")
    create.add_argument("--read-only", action="store_true", help="read-only actions only")
    create.add_argument("--expires", type=float, metavar="DAYS", default=None, help="expire after DAYS days")
    create.add_argument("--context", default=None,
                        help="context values the key pins, as a JSON object (templates: {{ auth.NAME }})")
    create.add_argument("--allow-sql", action="store_true",
                        help="with --context: still allow actions that run the caller's SQL")
    _state_options(create)
    listing = commands["keys list"] = keys_sub.add_parser("list", help="list the API keys (never the keys)")
    _state_options(listing)
    revoke = commands["keys revoke"] = keys_sub.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("--name", required=True)
    _state_options(revoke)
    commands["keys secret"] = keys_sub.add_parser(
        "secret", help="print a new secret key for PGACTIONS_SECRET_KEY (encrypts stored secrets)")
    rotate = commands["keys rotate"] = keys_sub.add_parser(
        "rotate", help="re-encrypt every stored secret with the current key (PGACTIONS_SECRET_KEY; the old one "
                       "in PGACTIONS_SECRET_KEY_PREVIOUS)")
    _state_options(rotate)


# -- entry point ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    try:
        args = parser.parse_args(argv)
    except _Exit as done:
        return done.status
    except UsageError as exc:
        return _usage_error(exc, exc.parser or parser)
    # Without --verbose nothing is logged: every failure reaches the user as the error object and
    # its one stderr line (a logged traceback would break both promises).
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL + 1, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except UsageError as exc:
        return _usage_error(exc, exc.parser or commands[args.command])
    except ActionError as exc:
        _print_json({"error": exc.payload})
        _fail_line(_error_line(exc.payload))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail_line("interrupted")
        return 130
    except BrokenPipeError:  # stdout closed early (| head): nothing left to tell anyone
        _silence_stdout()
        return EXIT_FAILED
    except Exception as exc:  # a bug: say so in one line, never with the exception's text (it may hold a secret)
        if args.verbose:
            log.exception("internal error")
        _fail_line(f"internal error ({type(exc).__name__}); this is a bug in pgactions"
                   + ("" if args.verbose else " (rerun with --verbose for the traceback)"))
        return EXIT_INTERNAL


def _usage_error(exc: UsageError, parser: argparse.ArgumentParser) -> int:
    sys.stderr.write(parser.format_usage())
    _fail_line(f"{exc} (see {parser.prog} --help)")
    return EXIT_USAGE


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list":
        return _list(args.kind)
    if args.command == "describe":
        _print_json(get_manifest(args.action).describe())
        return EXIT_OK
    if args.command == "test-connection":
        return _test_connection(args)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        return _demo(args)
    if args.command in ("serve", "keys"):
        return _service(args)
    if args.command == "mcp":
        return _mcp(args)
    if args.command == "watch":
        return _watch(args)
    if args.command == "cdc":
        return _cdc(args)
    raise UsageError(f"unknown command {args.command}")


def _list(kind: str) -> int:
    from pgactions.spec.manifests import load_triggers

    listing: list[dict[str, Any]] = []
    if kind in ("action", "all"):
        listing += [{"id": m.id, "kind": "action", "title": m.title, "category": m.category,
                     "readOnly": m.read_only} for m in load_manifests().values()]
    if kind in ("trigger", "all"):
        listing += [{"id": t.id, "kind": "trigger", "title": t.title, "category": t.category}
                    for t in load_triggers().values()]
    if kind == "action":  # the listing as it always was
        for entry in listing:
            del entry["kind"]
    _print_json(listing)
    return EXIT_OK


# -- triggers ------------------------------------------------------------------------------------

def _watch(args: argparse.Namespace) -> int:
    from pgactions.spec.manifests import get_trigger
    from pgactions.triggers.watch_cli import watch_command

    get_trigger(args.trigger)  # an unknown trigger is said before anything else is looked at
    inputs = _json_argument(args.input, "--input") if args.input is not None else {}
    spec, source = _connection(args)
    return watch_command(args, _load(spec, source), inputs)


def _cdc(args: argparse.Namespace) -> int:
    from pgactions.triggers.watch_cli import cdc_command

    spec, source = _connection(args)
    return cdc_command(args, _load(spec, source))


# -- the connection ------------------------------------------------------------------------------

def _connection(args: argparse.Namespace) -> tuple[str | dict[str, Any], str]:
    """The connection to use and where it came from: --connection, else $PGACTIONS_CONNECTION (a
    URL or a profile file), else the libpq PG* variables (an empty profile they fill)."""
    from pgactions.connection.profiles import pg_environment

    if args.connection is not None:
        return args.connection, "--connection"
    given = os.environ.get(CONNECTION_VARIABLE, "").strip()
    if given:
        return given, CONNECTION_VARIABLE
    if pg_environment():
        return {}, "PG* variables"
    hint = ("PGACTIONS_IGNORE_PG_ENV=1 turns the PG* variables off" if os.environ.get("PGACTIONS_IGNORE_PG_ENV") == "1"
            else "none of them is set")
    raise UsageError(f"no connection: give --connection URL|FILE, or set {CONNECTION_VARIABLE}, or the libpq "
                     f"variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE ({hint})")


def _load(spec: str | dict[str, Any], source: str) -> Any:
    """The profile; an INVALID_CONNECTION from $PGACTIONS_CONNECTION says so in its detail."""
    from pgactions.connection.profiles import ConnectionProfile, load_profile

    try:
        # Built afresh from the PG* variables (load_profile would cache them for the process).
        return ConnectionProfile.from_dict(spec) if isinstance(spec, dict) else load_profile(spec)
    except ActionError as exc:
        if source == CONNECTION_VARIABLE:
            detail = exc.payload.get("detail")
            exc.payload["detail"] = f"{CONNECTION_VARIABLE}: {detail}" if detail else CONNECTION_VARIABLE
        raise


def _test_connection(args: argparse.Namespace) -> int:
    from pgactions.connection.check import test_connection

    spec, source = _connection(args)
    try:
        profile = _load(spec, source)
    except ActionError as exc:
        report: dict[str, Any] = {"ok": False, "failedStep": "profile", "steps": [], "error": exc.payload}
    else:
        report = test_connection(profile)
    _print_json(report)
    if report["ok"]:
        return EXIT_OK
    _fail_line(f"{report['failedStep']} failed: {_error_line(report['error'])}")
    return EXIT_FAILED


# -- run -----------------------------------------------------------------------------------------

def _run(args: argparse.Namespace) -> int:
    from pgactions.db.session import Limits
    from pgactions.runtime import Runtime

    if args.items is not None and args.input is not None:
        raise UsageError("give --input or --items, not both")
    if args.batch_mode is not None and args.items is None:
        raise UsageError("--batch-mode applies to --items only")
    inputs = _json_argument(args.input, "--input") if args.input is not None else {}
    items = _json_argument(args.items, "--items") if args.items is not None else None
    context = _json_argument(args.context, "--context") if args.context is not None else None
    if context is not None and not isinstance(context, dict):
        raise UsageError("--context must be a JSON object")
    spec, source = _connection(args)
    sink = _output_sink(args.output) if args.output is not None else None
    limits = Limits(numeric_as_number=args.numeric_as_number,
                    **({"max_result_bytes": args.max_result_bytes} if args.max_result_bytes else {}))
    try:
        with Runtime(limits) as runtime:
            profile = _load(spec, source)
            if items is None:
                # With --output the rows stream to the file; on stdout the document is printed
                # only once complete, so a failure never leaves half of one.
                result = runtime.run(args.action, profile, inputs, context, flow=args.flow, step=args.step,
                                     sink=sink)
                if sink is None:
                    _print_json(result.json)
                return EXIT_OK
            mode = args.batch_mode or "independent"
            result = runtime.run_batch(args.action, profile, items, mode, context, flow=args.flow, step=args.step)
            if sink is None:
                _print_json(result.json)
            else:  # a batch's output is in memory (within the cap): written once it committed
                sink.take(result.json, len(result.json))
                sink.commit()
    finally:
        if sink is not None:
            sink.discard()  # whatever is left (nothing after a success)
    return _batch_status(result.data)


def _output_sink(path: str) -> Any:
    """--output: the file sink, checked before anything runs (its folder must be writable)."""
    from pgactions.db.output import FileSink

    if not path:
        raise UsageError("--output needs a file name")
    sink = FileSink(path)
    if not os.path.isdir(sink.folder):
        raise UsageError(f"--output: the folder {sink.folder} does not exist")
    try:
        sink.check()
    except OSError as exc:
        raise UsageError(f"--output: cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    except ValueError:  # a NUL in the path
        raise UsageError(f"--output: cannot write {path!r}: not a valid path") from None
    return sink


def _batch_status(data: dict[str, Any]) -> int:
    """0 when every item succeeded; else 3 and a summary on stderr naming the first failure."""
    if data.get("ok", True):
        return EXIT_OK
    entries = data.get("items")
    if entries is None:
        entries = data.get("results") or []
    failed = [(position, entry) for position, entry in enumerate(entries)
              if isinstance(entry, dict) and not entry.get("ok", True)]
    if not failed:
        _fail_line("the batch reported a failure")
        return EXIT_ITEMS_FAILED
    position, first = failed[0]
    error = first.get("error") or {}
    code = error.get("code", "ERROR")
    reason = _one_line(error.get("detail") or error.get("message") or "")
    index = first.get("index", position)
    _fail_line(f"{len(failed)} of {len(entries)} items failed (first: item {index} {code}: {reason})")
    return EXIT_ITEMS_FAILED


# -- the service ---------------------------------------------------------------------------------

def _service(args: argparse.Namespace) -> int:
    try:
        if args.command == "serve":
            from pgactions.service.serve_cli import serve_command

            return serve_command(args)
        from pgactions.service.keys_cli import keys_command
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in _SERVER_MODULES:
            raise UsageError(f"{args.command} needs the server extra: pip install 'pgactions[server]' "
                             f"({exc.name} is missing)") from None
        raise
    return keys_command(args)


_SERVER_MODULES = frozenset({"starlette", "uvicorn", "prometheus_client", "jwt", "anyio", "httpx"})


def _mcp(args: argparse.Namespace) -> int:
    try:
        from pgactions.service.mcp_stdio import mcp_command
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in _SERVER_MODULES | {"mcp", "pydantic"}:
            raise UsageError(f"mcp needs the mcp extra: pip install 'pgactions[mcp]' ({exc.name} is missing)") from None
        raise
    return mcp_command(args)


# -- demo ----------------------------------------------------------------------------------------

def _demo(args: argparse.Namespace) -> int:
    if args.stop is not None:
        from pgactions.devtools.demo import stop_demo

        return stop_demo(args.stop)
    from pgactions.devtools.demo import run_demo

    return run_demo(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
