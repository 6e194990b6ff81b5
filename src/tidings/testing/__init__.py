"""Testing support: the broker contract suite (more harnesses arrive with the app runtime).

Importing :mod:`tidings.testing` costs nothing and needs no pytest; the names below are imported on first
use. :class:`BrokerContract` is a pytest test class, so using it needs pytest (no asyncio plugin)::

    from tidings.testing import BrokerContract

    class TestMyBroker(BrokerContract):
        def create_broker(self):
            return MyBroker("my://localhost")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidings.testing.broker_contract import BrokerContract

#: public name -> module that defines it (imported lazily: the contract imports pytest)
_LAZY = {"BrokerContract": "tidings.testing.broker_contract"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidings.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["BrokerContract"]
