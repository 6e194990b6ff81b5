"""The ``tidings`` command line: one command, grouped by what the user is doing.

Exit codes everywhere: 0 ok, 1 findings or failure, 2 usage error.

Why argparse and not typer: ``tidings validate`` runs in editors, pre-commit hooks and CI loops, and is
benchmarked as a whole process against the official AsyncAPI CLI. typer (with its vendored click) costs
about 30 ms of start-up, a quarter of the command's whole run on a typical document; argparse is in the
standard library and costs ~3 ms. Each command is one function taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tidings import __version__

if TYPE_CHECKING:
    from tidings.asyncapi.refs import LoadOptions
    from tidings.cli.report import FileResult

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
FORMATS = ("text", "json", "sarif")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 (argparse prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _document_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="AsyncAPI documents (YAML or JSON)")
    p.add_argument("-f", "--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--allow-remote-refs", action="store_true", help="follow http(s) $refs (off by default)")
    p.add_argument("--allow-outside-root", action="store_true", help="follow file $refs that leave the root folder")
    p.add_argument(
        "--root",
        metavar="DIR",
        help="folder file $refs must stay inside (default: the current folder when it holds the "
        "document, else the document's own folder)",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help=f"largest file to read (default: {DEFAULT_MAX_SIZE})",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only files with findings")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tidings", description="AsyncAPI-first toolkit for event-driven Python services.")
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = commands.add_parser(
        "validate",
        help="validate AsyncAPI 2.x/3.x documents against the specification",
        description="Validate AsyncAPI 2.x/3.x documents against the specification. Exit 1 if any is invalid.",
    )
    _document_options(p)
    p.set_defaults(run=_validate)

    p = commands.add_parser(
        "lint",
        help="validate, then lint: Spectral's AsyncAPI rules and the guide's rules",
        description="Validate, then lint: Spectral's AsyncAPI rules and the event-design rules of the guide.",
    )
    _document_options(p)
    p.add_argument(
        "--config", metavar="FILE", help="a .tidings.yaml or pyproject.toml (default: found from the current folder up)"
    )
    p.add_argument(
        "--fail-on",
        default="error",
        metavar="SEVERITY",
        help="exit 1 when a finding is at least this severe: error, warning, info or hint (default: error)",
    )
    p.add_argument("--list-rules", action="store_true", help="list the rules and their severity, and exit")
    p.set_defaults(run=_lint)

    p = commands.add_parser(
        "asyncapi",
        help="write the AsyncAPI document of an app (code first)",
        description="Write the AsyncAPI document of an app from its declared publishers, subscribers and event "
        "classes, then validate it. APP is module:attribute, imported from the current folder (e.g. main:app).",
    )
    p.add_argument("app", metavar="APP", help="the app, as module:attribute (e.g. main:app)")
    p.add_argument("--spec-version", choices=("3.0", "2.6"), default="3.0", help="AsyncAPI version (default: 3.0)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the document here (default: standard output)")
    p.add_argument(
        "--format",
        choices=("yaml", "json"),
        help="output format (default: json for an -o file ending in .json, else yaml)",
    )
    p.set_defaults(run=_asyncapi)

    p = commands.add_parser(
        "run",
        help="run an app until SIGTERM/SIGINT, then shut down gracefully",
        description="Run an app: subscribe its handlers and serve until SIGTERM or Ctrl-C; then stop taking "
        "messages, let in-flight handlers finish (up to --shutdown-timeout), and disconnect.",
    )
    p.add_argument("app", metavar="APP", help="the app, as module:attribute (e.g. main:app)")
    p.add_argument("--broker", metavar="URL", help="broker URL, e.g. sqlite:///events.db (default: the app's own)")
    p.add_argument("--shutdown-timeout", type=float, metavar="SECONDS", help="how long in-flight handlers may take")
    p.set_defaults(run=_run_app)

    p = commands.add_parser(
        "demo",
        help="run the guide's User Service on the embedded broker",
        description="Run the guide's User Service (user.created/updated/deleted, an email "
        "service, a log service) on the embedded SQLite broker, with its generated AsyncAPI "
        "document as the contract, and print what happened.",
    )
    p.add_argument("--broker", metavar="URL", help="broker URL (default: sqlite:/// in a temporary folder)")
    p.add_argument("--keep", metavar="DIR", help="keep the event log and the generated document in DIR")
    p.set_defaults(run=_demo)

    from tidings.cli import dlq  # its imports are inside its functions: no cost to other commands

    dlq.add_parser(commands)
    from tidings.cli import store  # likewise: `tidings store ...` and `tidings projection ...`

    store.add_parser(commands)

    p = commands.add_parser("version", help="print the tidings version")
    p.set_defaults(run=lambda _args: print(f"tidings {__version__}") or 0)
    return parser


def _load_options(args: argparse.Namespace) -> LoadOptions:
    from tidings.asyncapi.refs import LoadOptions

    return LoadOptions(
        max_bytes=args.max_size,
        allow_remote=args.allow_remote_refs,
        allow_outside_root=args.allow_outside_root,
        root=args.root,
    )


def _usage_error(message: str) -> int:
    sys.stderr.write(f"tidings: error: {message}\n")
    return 2


def _files_problem(files: Sequence[str]) -> str | None:
    """The one-line usage error for the given files, if any (printed as is, exit 2)."""
    if not files:
        return "tidings: error: give at least one AsyncAPI document"
    for f in files:
        if not os.path.exists(f):
            return f"{f}: error: no such file"
        if os.path.isdir(f):
            return f"{f}: error: is a folder; give the document's file name"
    return None


def _print_usage_problem(line: str) -> int:
    sys.stderr.write(line + "\n")
    return 2


def _emit(results: list[FileResult], fmt: str, verb: str, quiet: bool) -> None:
    from tidings.cli import report

    if fmt == "json":
        report.render_json(results)
    elif fmt == "sarif":
        report.render_sarif(results)
    else:
        shown = [r for r in results if r.diagnostics] if quiet else results
        report.render_text(shown, verb=verb)


def _check_all(args: argparse.Namespace, check: Callable[[str], object]) -> list[FileResult]:
    from tidings.cli.report import FileResult

    results: list[FileResult] = []
    for path in args.files:
        checked = check(path)
        document = getattr(checked, "document", None)
        results.append(
            FileResult(
                path,
                list(checked.diagnostics),  # type: ignore[attr-defined]
                document.version if document is not None else None,
                fatal=document is None,
            )
        )
    return results


def _validate(args: argparse.Namespace) -> int:
    from tidings.asyncapi import check_file

    problem = _files_problem(args.files)
    if problem:
        return _print_usage_problem(problem)
    options = _load_options(args)
    results = _check_all(args, lambda path: check_file(path, options))
    _emit(results, args.format, "valid", args.quiet)
    return 0 if all(r.ok for r in results) else 1


def _lint(args: argparse.Namespace) -> int:
    from tidings.asyncapi.diagnostics import Severity
    from tidings.errors import TidingsError
    from tidings.lint import lint_file, load_config

    try:
        threshold = Severity.parse(args.fail_on)
        config = load_config(args.config)
    except (ValueError, TidingsError) as exc:
        return _usage_error(str(exc))
    if args.list_rules:
        for rule in config.registry:
            severity = config.severity_of(rule)
            level = severity.label if severity is not None else "off"
            print(f"{rule.code:<40} {level:<8} {rule.description}")
        return 0
    problem = _files_problem(args.files)
    if problem:
        return _print_usage_problem(problem + " (or --list-rules)" if not args.files else problem)
    options = _load_options(args)
    results = _check_all(args, lambda path: lint_file(path, config, options))
    _emit(results, args.format, "valid", args.quiet)
    failed = any(d.severity <= threshold for r in results for d in r.diagnostics)
    return 1 if failed else 0


def _load_app(spec: str) -> object:
    """The object ``module:attribute`` names, imported from the current folder; ``UsageError`` if none."""
    import importlib

    from tidings.errors import UsageError

    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"APP must be module:attribute, e.g. main:app (got {spec!r})")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name) and module_name[len(exc.name) :][:1] in ("", "."):
            raise UsageError(f"no module named {module_name!r} (looked in {cwd} and on sys.path)") from None
        raise  # the module exists but imports something missing: the traceback says what
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return value


def _asyncapi(args: argparse.Namespace) -> int:
    from tidings.app import App
    from tidings.asyncapi import check_file
    from tidings.asyncapi.export import dump, render
    from tidings.errors import UsageError

    try:
        app = _load_app(args.app)
        if not isinstance(app, App):
            what = f"the class {app.__name__}" if isinstance(app, type) else f"of type {type(app).__name__}"
            raise UsageError(f"{args.app} is {what}, not a tidings App")
        document = render(app.describe(), args.spec_version)
    except UsageError as exc:
        return _usage_error(str(exc))
    fmt = args.format or ("json" if args.output and args.output.lower().endswith(".json") else "yaml")
    text = dump(document, fmt)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        result = check_file(args.output)
    else:
        import tempfile

        sys.stdout.write(text)
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, f"asyncapi.{fmt}")
            with open(path, "w", encoding="utf-8") as out:
                out.write(text)
            result = check_file(path)
    if not result.valid:  # our own output: never expected, so say so loudly
        sys.stderr.write(
            "tidings: error: the generated document is not valid AsyncAPI (a bug in tidings: please "
            "report it with the app's declarations)\n"
        )
        for d in result.diagnostics:
            if d.severity == 0:
                where = "/" + "/".join(map(str, d.path))
                sys.stderr.write(f"  {where}: [{d.code}] {d.message}\n")
        return 1
    if args.output:
        channels, messages = len(document.get("channels", {})), len(document.get("components", {}).get("messages", {}))
        sys.stderr.write(
            f"✔ wrote {args.output}: AsyncAPI {document['asyncapi']}, {channels} channels, {messages} messages, valid\n"
        )
    return 0


def _run_app(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from tidings.app import App
    from tidings.brokers.base import broker_from_url
    from tidings.errors import TidingsError, UsageError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = _load_app(args.app)
        if not isinstance(app, App):
            raise UsageError(f"{args.app} is not a tidings App")
        if args.broker:
            app.broker = broker_from_url(args.broker)
        if args.shutdown_timeout is not None:
            app.shutdown_timeout = args.shutdown_timeout
    except UsageError as exc:
        return _usage_error(str(exc))
    logging.getLogger("tidings.run").info(
        "running %s on %s (%d subscribers); SIGTERM or Ctrl-C to stop", app.name, app.broker.url, len(app.subscribers)
    )
    try:
        asyncio.run(app.serve())
    except TidingsError as exc:
        sys.stderr.write(f"tidings: error: {exc}\n")
        return 1
    logging.getLogger("tidings.run").info("stopped cleanly")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from tidings.demo import USERS, run_demo

    console = Console(highlight=False)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with console.status("running the User Service: user-service → email-service, log-service …"):
        result = asyncio.run(run_demo(args.broker, folder=args.keep))
    console.print(f"[bold]tidings demo[/bold]: the guide's User Service on {result['broker']}")
    console.print(
        f"AsyncAPI document generated and validated: {result['document']} "
        f"({'valid' if result['document_valid'] else 'INVALID'})"
    )
    table = Table(title=None, show_edge=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("events published by user-service", str(result["published"]))
    for group, count in sorted(result["handled"].items()):
        table.add_row(f"handled by {group}", str(count))
    table.add_row("invalid messages dead-lettered", str(len(result["dead_letters"])))
    console.print(table)
    for email in result["emails"]:
        console.print(f"  [dim]email[/dim] {email}")
    for group, reason in result["dead_letters"]:
        console.print(f"  [dim]dead letter[/dim] ({group}) {reason}")
    console.print(f"done in {result['seconds'] * 1000:.0f} ms")
    ok = (
        result["handled"].get("email-service") == len(USERS)
        and result["handled"].get("log-service") == result["published"]
        and len(result["dead_letters"]) == 2
    )
    return 0 if ok else 1


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (what tests call; :func:`main` is the process entry)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def main() -> None:
    # A one-shot command allocates many small objects and frees none until it exits: cyclic garbage
    # collection would only re-scan them (a quarter of the time on a large document), and tearing the
    # object graph down at exit costs as much again. So: no collector, and a hard exit once output is out.
    gc.disable()
    try:
        code = run()
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    except BrokenPipeError:  # e.g. `tidings validate ... | head`: the reader left, nothing more to say
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
