"""What the commands share: a failure reported as one line with the exit code it deserves.

Exit codes everywhere: 2 for a usage error (:class:`~tidings.errors.UsageError`: a bad URL, a bad option, a
module that cannot be imported), 1 for a failure of the work itself (any other
:class:`~tidings.errors.TidingsError`: a broker or store that cannot be reached, a database error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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


__all__ = ["one_line_errors"]
