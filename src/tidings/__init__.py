"""tidings: AsyncAPI-first toolkit for event-driven Python services.

The document core lives in :mod:`tidings.asyncapi` (load, validate), linting in :mod:`tidings.lint`,
the command line in :mod:`tidings.cli`.
"""

from tidings.errors import DocumentError, Location, ReferenceError_, SourceError, TidingsError, UsageError

__version__ = "0.1.0"

__all__ = [
    "DocumentError",
    "Location",
    "ReferenceError_",
    "SourceError",
    "TidingsError",
    "UsageError",
    "__version__",
]
