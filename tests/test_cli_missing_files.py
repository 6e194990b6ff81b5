"""Commands that only read a SQLite file refuse a path that does not exist, in one line, and create nothing:
a mistyped path must not become an empty database reported as empty."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CliRun


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("dlq", "list", "--broker"), "sqlite broker"),
        (("store", "stats", "--store"), "event store"),
    ],
)
def test_a_missing_sqlite_file_is_an_error_and_is_not_created(
    cli: Callable[..., CliRun], tmp_path: Path, args: tuple[str, ...], what: str
) -> None:
    missing = tmp_path / "typo.db"
    run = cli(*args, f"sqlite:///{missing}")
    assert run.returncode == 1
    assert f"no {what} at {missing} (no such file)" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert run.stdout == ""
    assert not missing.exists()
