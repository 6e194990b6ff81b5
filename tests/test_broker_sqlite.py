"""``sqlite://`` against the broker contract, plus what only it promises: leases that expire, fenced settles,
several broker instances on one file, retention, URL parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.brokers.base import Broker
from tidings.brokers.sqlite import SqliteBroker
from tidings.testing import BrokerContract


class TestSqliteBrokerContract(BrokerContract):
    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'events.db'}"

    def create_broker(self) -> Broker:
        return SqliteBroker(self.url)
