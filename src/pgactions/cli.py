"""The command line: ``pgactions list | describe | run | test-connection | demo``.

Success prints the output object as JSON on stdout and exits 0.  An action failure prints
``{"error": {...}}`` on stdout, one human line on stderr, and exits 1.  Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import orjson

from pgactions.spec.errors import ActionError
from pgactions.spec.manifests import get_manifest, load_manifests

__all__ = ["main"]


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one path for every usage error (exit 2)
        raise UsageError(message)


def _json_argument(text: str, name: str) -> Any:
    """Inline JSON, or @path to a JSON file."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{name}: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}") from None


def _print_json(value: Any) -> None:
    data = value if isinstance(value, bytes) else orjson.dumps(value, option=orjson.OPT_INDENT_2)
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgactions", description="PostgreSQL actions for flows and scripts.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the actions")
    describe = sub.add_parser("describe", help="show an action's manifest (inputs, outputs, examples)")
    describe.add_argument("action")
    run = sub.add_parser("run", help="run an action")
    run.add_argument("action")
    run.add_argument("--connection", "-c", required=True, help="postgresql:// URL or profile file (YAML/JSON)")
    run.add_argument("--input", "-i", default="{}", help="inputs as JSON, or @file.json")
    run.add_argument("--context", default=None, help="flow context (trigger, steps) as JSON, or @file.json")
    run.add_argument("--items", default=None,
                     help="run once per item: a JSON list of {inputs, context?}, or @file.json (instead of --input)")
    run.add_argument("--batch-mode", choices=["independent", "transaction", "single"], default="independent",
                     help="with --items: each item on its own (default), all in one transaction, or one statement")
    run.add_argument("--max-result-bytes", type=int, default=None, help="output size limit (default 10 MB)")
    run.add_argument("--numeric-as-number", action="store_true", help="emit numeric values as JSON numbers")
    run.add_argument("--flow", default=None, help="flow name, shown in pg_stat_activity's application_name")
    run.add_argument("--step", default=None, help="step name, shown in pg_stat_activity's application_name")
    test = sub.add_parser("test-connection", help="check a connection step by step")
    test.add_argument("--connection", "-c", required=True)
    demo = sub.add_parser("demo", help="start a throwaway PostgreSQL and run every guide example")
    demo.add_argument("--keep", action="store_true", help="leave the server running (prints its URL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"pgactions: {exc} (see pgactions --help)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except UsageError as exc:
        print(f"pgactions: {exc}", file=sys.stderr)
        return 2
    except ActionError as exc:
        _print_json({"error": exc.payload})
        print(f"pgactions: {exc.one_line()}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list":
        _print_json([{"id": m.id, "title": m.title, "category": m.category, "readOnly": m.read_only}
                     for m in load_manifests().values()])
        return 0
    if args.command == "describe":
        _print_json(get_manifest(args.action).describe())
        return 0
    if args.command == "test-connection":
        from pgactions.connection.check import test_connection

        result = test_connection(args.connection)
        _print_json(result)
        if not result["ok"]:
            err = result["error"]
            print(f"pgactions: {result['failedStep']} failed: {err['code']}: {err['message']}", file=sys.stderr)
        return 0 if result["ok"] else 1
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        from pgactions.devtools.demo import run_demo

        return run_demo(keep=args.keep)
    raise UsageError(f"unknown command {args.command}")


def _run(args: argparse.Namespace) -> int:
    from pgactions.db.session import Limits
    from pgactions.runtime import Runtime

    if args.items is not None and args.input != "{}":
        raise UsageError("give --input or --items, not both")
    inputs = _json_argument(args.input, "--input")
    context = _json_argument(args.context, "--context") if args.context else None
    if context is not None and not isinstance(context, dict):
        raise UsageError("--context must be a JSON object")
    limits = Limits(numeric_as_number=args.numeric_as_number,
                    **({"max_result_bytes": args.max_result_bytes} if args.max_result_bytes else {}))
    with Runtime(limits) as runtime:
        if args.items is not None:
            items = _json_argument(args.items, "--items")
            result = runtime.run_batch(args.action, args.connection, items, args.batch_mode, context,
                                       flow=args.flow, step=args.step)
            _print_json(result.json)
            return 0 if result.data["ok"] else 1
        result = runtime.run(args.action, args.connection, inputs, context, flow=args.flow, step=args.step)
    _print_json(result.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
