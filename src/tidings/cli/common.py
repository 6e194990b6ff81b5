"""What the commands share: a failure reported as one line with the exit code it deserves.

Exit codes everywhere: 2 for a usage error (:class:`~tidings.errors.UsageError`: a bad URL, a bad option, a
module that cannot be imported), 1 for a failure of the work itself (any other
:class:`~tidings.errors.TidingsError`: a broker or store that cannot be reached, a database error).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def one_line_errors(prefix: str, errors: Any, work: Callable[[], int]) -> int:
    """``work()``'s exit code, or the exit code of the tidings error it raised, printed as ``prefix: error``."""
    from tidings.errors import TidingsError, UsageError

    try:
        return work()
    except UsageError as exc:
        errors.print(f"{prefix}: {exc}", markup=False)
        return 2
    except TidingsError as exc:
        errors.print(f"{prefix}: {exc}", markup=False)
        return 1


def consoles(*quiet: str) -> tuple[Console, Console]:
    """The output and the error console; the ``quiet`` loggers (drivers, tidings' own) silenced, since they
    would log their own version of a failure the command reports in one line."""
    from rich.console import Console

    for name in ("tidings", *quiet):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)


def require_sqlite_file(url: str, what: str) -> None:
    """For a ``sqlite://`` URL, fail unless its file exists: a command that only reads must not create an
    empty database at a mistyped path and report it as empty."""
    from urllib.parse import urlsplit

    from tidings.dburl import sqlite_file
    from tidings.errors import TidingsError

    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return
    path = sqlite_file(parts)
    if path is not None and not os.path.isfile(path):
        raise TidingsError(f"no {what} at {path} (no such file): check the path in {url.split('?', 1)[0]}")


__all__ = ["consoles", "one_line_errors", "require_sqlite_file"]
