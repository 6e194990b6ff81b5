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
