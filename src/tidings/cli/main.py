"""The ``tidings`` command line: one command, grouped by what the user is doing.

Exit codes everywhere: 0 ok, 1 findings or failure, 2 usage error.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tidings import __version__

app = typer.Typer(
    name="tidings",
    help="AsyncAPI-first toolkit for event-driven Python services.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


FilesArg = Annotated[list[Path], typer.Argument(help="AsyncAPI documents (YAML or JSON).", show_default=False)]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
RemoteOpt = Annotated[bool, typer.Option("--allow-remote-refs", help="Follow http(s) $refs (off by default).")]
OutsideOpt = Annotated[bool, typer.Option("--allow-outside-root", help="Follow file $refs that leave the root folder.")]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        # what document._default_root does (the help used to say "each document's own folder")
        help="Folder file $refs must stay inside (default: the current folder if the document is inside it, "
        "else the document's own folder).",
    ),
]
MaxSizeOpt = Annotated[int, typer.Option("--max-size", help="Largest file to read, in bytes.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only files with findings.")]


def _options(allow_remote: bool, allow_outside: bool, root: Path | None, max_size: int):  # type: ignore[no-untyped-def]
    from tidings.asyncapi.refs import LoadOptions

    return LoadOptions(
        max_bytes=max_size,
        allow_remote=allow_remote,
        allow_outside_root=allow_outside,
        root=os.fspath(root) if root else None,
    )


def _check_exists(files: list[Path]) -> None:
    for f in files:
        if not f.exists():
            typer.echo(f"{f}: error: no such file", err=True)
            raise typer.Exit(2)
        if f.is_dir():
            typer.echo(f"{f}: error: is a folder; give the document's file name", err=True)
            raise typer.Exit(2)


def _emit(results: list, fmt: OutputFormat, verb: str, quiet: bool) -> None:  # type: ignore[type-arg]
    from tidings.cli import report

    if fmt is OutputFormat.json:
        report.render_json(results)
    elif fmt is OutputFormat.sarif:
        report.render_sarif(results)
    else:
        shown = [r for r in results if r.diagnostics] if quiet else results
        report.render_text(shown, verb=verb)


@app.command()
def validate(
    files: FilesArg,
    output_format: FormatOpt = OutputFormat.text,
    allow_remote_refs: RemoteOpt = False,
    allow_outside_root: OutsideOpt = False,
    root: RootOpt = None,
    max_size: MaxSizeOpt = 16 * 1024 * 1024,
    quiet: QuietOpt = False,
) -> None:
    """Validate AsyncAPI 2.x/3.x documents against the specification. Exit 1 if any is invalid."""
    from tidings.asyncapi import check_file
    from tidings.cli.report import FileResult

    _check_exists(files)
    options = _options(allow_remote_refs, allow_outside_root, root, max_size)
    results = []
    for path in files:
        checked = check_file(path, options)
        version = checked.document.version if checked.document else None
        results.append(FileResult(os.fspath(path), checked.diagnostics, version, fatal=checked.document is None))
    _emit(results, output_format, "valid", quiet)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


@app.command()
def lint(
    files: Annotated[
        list[Path] | None, typer.Argument(help="AsyncAPI documents (YAML or JSON).", show_default=False)
    ] = None,
    output_format: FormatOpt = OutputFormat.text,
    allow_remote_refs: RemoteOpt = False,
    allow_outside_root: OutsideOpt = False,
    root: RootOpt = None,
    max_size: MaxSizeOpt = 16 * 1024 * 1024,
    quiet: QuietOpt = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A .tidings.yaml or pyproject.toml (default: found from the current folder up)."),
    ] = None,
    list_rules: Annotated[
        bool, typer.Option("--list-rules", help="List the rules, their severity as configured, and exit.")
    ] = False,
    fail_on: Annotated[
        str,
        typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe: error, warning, info or hint."),
    ] = "error",
) -> None:
    """Validate, then lint: Spectral's AsyncAPI rules and the event-design rules of the guide."""
    from tidings.asyncapi.diagnostics import Severity
    from tidings.cli.report import FileResult
    from tidings.errors import TidingsError
    from tidings.lint import lint_file, load_config

    try:
        threshold = Severity.parse(fail_on)
        cfg = load_config(config)
    except (ValueError, TidingsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if list_rules:
        for rule in cfg.registry:
            severity = cfg.severity_of(rule)
            level = severity.label if severity is not None else "off"
            typer.echo(f"{rule.code:<40} {level:<8} {rule.description}")
        raise typer.Exit(0)
    if not files:
        typer.echo("error: give at least one AsyncAPI document (or --list-rules)", err=True)
        raise typer.Exit(2)
    _check_exists(files)
    options = _options(allow_remote_refs, allow_outside_root, root, max_size)
    results = []
    for path in files:
        checked = lint_file(path, cfg, options)
        version = checked.document.version if checked.document else None
        results.append(FileResult(os.fspath(path), checked.diagnostics, version, fatal=checked.document is None))
    _emit(results, output_format, "valid", quiet)
    failed = any(d.severity <= threshold for r in results for d in r.diagnostics)
    raise typer.Exit(1 if failed else 0)


@app.command()
def version() -> None:
    """Print the tidings version."""
    typer.echo(f"tidings {__version__}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
