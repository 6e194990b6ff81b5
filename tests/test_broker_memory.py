"""``memory://`` against the broker contract."""

from __future__ import annotations

from tidings.brokers.base import Broker
from tidings.brokers.memory import MemoryBroker
from tidings.testing import BrokerContract


class TestMemoryBroker(BrokerContract):
    def create_broker(self) -> Broker:
        return MemoryBroker()
