"""What every benchmark script shares: timing rounds, their statistics, the rich output and the JSON file.

The rules these helpers follow are in ``shared/design/BENCHMARKS.md``: each measurement is repeated (at least
three rounds) and reported as median with min and max; tidings and each peer are measured side by side in the
same run; ``--json PATH`` writes::

    {"benchmark": NAME, "python": VERSION,
     "results": [{"name": ..., "value": ..., "unit": ..., "higher_is_better": ...}],
     "ratios": {"tidings/PEER ...": X}}

A ratio is always a *speed* ratio, so that it reads the same whatever the unit: ``X > 1`` means tidings is
``X`` times better than the peer (for a time, ``peer_seconds / tidings_seconds``; for a throughput,
``tidings_rate / peer_rate``).

>>> stats = measure(lambda: sum(range(1000)), rounds=3)
>>> stats.rounds, stats.min <= stats.median <= stats.max
(3, True)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tidings.redact import redact_url

#: wide enough for the tables when the output goes to a file or a pipe (rich would assume 80 columns)
console = Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)

MIN_ROUNDS = 3

#: the PostgreSQL that the benchmarks needing one connect to (each makes its own schemas or tables, then drops them)
PG_DSN = os.environ.get("TIDINGS_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Stats:
    """The samples of one measurement, in seconds (or whatever unit the caller timed in)."""

    samples: tuple[float, ...]

    @property
    def rounds(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


def measure(
    run_once: Callable[[], object],
    rounds: int,
    *,
    warmup: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> Stats:
    """Call ``run_once`` ``warmup`` times untimed, then ``rounds`` times timed with ``perf_counter``."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    for _ in range(warmup):
        run_once()
    samples = []
    for i in range(rounds):
        if on_round is not None:
            on_round(i)
        start = time.perf_counter()
        run_once()
        samples.append(time.perf_counter() - start)
    return Stats(tuple(samples))


@dataclass(frozen=True)
class ProcessRun:
    """One finished child process: how long it took from spawn to exit, and how it ended."""

    seconds: float
    returncode: int
    stderr: str


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ProcessRun:
    """Run ``argv`` to completion, wall-clock timed; stdout is discarded, stderr kept for the verdict."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        check=False,
    )
    seconds = time.perf_counter() - start
    return ProcessRun(seconds, proc.returncode, proc.stderr.decode("utf-8", "replace"))


@dataclass(frozen=True)
class Command:
    """One contender's command line, for :func:`measure_side_by_side`."""

    name: str
    argv: Sequence[str]
    rounds: int
    env: Mapping[str, str] | None = None


def measure_side_by_side(
    commands: Sequence[Command],
    *,
    warmup: int = 0,
    cwd: str | os.PathLike[str] | None = None,
    on_round: Callable[[str, int], None] | None = None,
) -> dict[str, tuple[Stats, list[ProcessRun]]]:
    """Time whole processes, the contenders' rounds interleaved (a, b, a, b, ...), so that a change in the
    machine's load during the run falls on all of them alike; each runs ``warmup`` times untimed first."""
    for command in commands:
        for _ in range(warmup):
            run_process(command.argv, env=command.env, cwd=cwd)
    runs: dict[str, list[ProcessRun]] = {c.name: [] for c in commands}
    for i in range(max(c.rounds for c in commands)):
        for command in commands:
            if i < command.rounds:
                if on_round is not None:
                    on_round(command.name, i)
                runs[command.name].append(run_process(command.argv, env=command.env, cwd=cwd))
    return {name: (Stats(tuple(r.seconds for r in done)), done) for name, done in runs.items()}


def speed_ratio(tidings: float, peer: float, *, higher_is_better: bool) -> float:
    """How many times better tidings is than the peer (> 1: tidings wins), for any unit."""
    return tidings / peer if higher_is_better else peer / tidings


def format_seconds(seconds: float) -> str:
    """``0.0123`` -> ``12.3 ms``; ``2.5`` -> ``2.5 s``: three significant digits, a unit a person reads."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def format_stats(stats: Stats) -> str:
    """``median`` on the first line, ``min–max`` dimmed below it."""
    return f"{format_seconds(stats.median)}\n[dim]{format_seconds(stats.min)}–{format_seconds(stats.max)}[/dim]"


def format_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def new_table(title: str, *, caption: str | None = None) -> Table:
    return Table(title=title, caption=caption, title_justify="left", caption_justify="left", show_lines=True)


@dataclass
class Report:
    """The results of one benchmark run, written by ``--json PATH`` in the format of BENCHMARKS.md."""

    benchmark: str
    results: list[dict[str, Any]] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)

    def add_result(self, name: str, value: float, unit: str, *, higher_is_better: bool) -> None:
        self.results.append({"name": name, "value": value, "unit": unit, "higher_is_better": higher_is_better})

    def add_ratio(self, peer: str, what: str, value: float) -> None:
        """Record a speed ratio (see :func:`speed_ratio`) under ``"tidings/PEER WHAT"``."""
        self.ratios[f"tidings/{peer} {what}".rstrip()] = value

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "python": platform.python_version(),
            "results": self.results,
            "ratios": self.ratios,
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def print_verdicts(
    heading: str, verdicts: Sequence[tuple[str, bool]], report: Report, json_path: str | os.PathLike[str] | None
) -> None:
    """The end of a run: ``heading``, each target with whether it was met, then ``--json PATH`` written."""
    console.print(heading)
    for text, ok in verdicts:
        console.print(f"  {text}: {'met' if ok else '[red]NOT met[/red]'}")
    if json_path:
        report.write_json(json_path)
        console.print(f"Results written to {json_path}")


def require_postgres(dsn: str = PG_DSN) -> None:
    """Stop the run, with one line and exit status 1, if PostgreSQL at ``dsn`` does not answer: a run that left it
    out would pass for a whole one. Called before anything is measured."""
    import psycopg  # here: only the benchmarks that use PostgreSQL need it

    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SystemExit(
            f"PostgreSQL at {redact_url(dsn)} is not reachable: {redact_url(reason)}; "
            "start it or set TIDINGS_BENCH_PG_DSN, or run --only sqlite"
        ) from None


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--quick`` and ``--json PATH``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller run that finishes in under 60 seconds")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results to PATH as JSON")
    return parser


def machine_summary() -> str:
    """One line naming the machine and interpreter, for the header of every run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}); "
        f"Python {platform.python_version()} ({sys.implementation.name})"
    )


def load_summary() -> str:
    """The machine's load average: other work on a shared machine slows every figure (ratios less so)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"
