"""The pytest plugin (entry point ``pytest11``): fixtures for testing tidings apps.

``tidings_app`` starts an app on ``memory://`` under the :class:`~tidings.testing.harness.TestApp` harness
and stops it after the test::

    async def test_welcome(tidings_app):
        t = await tidings_app(app)
        await t.publish(UserCreated(user_id=1, email="a@example.com", name="A"))
        await t.settle()
        assert t.handled_by("send_welcome")

Async fixtures need an asyncio plugin for pytest (pytest-asyncio, or anyio's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tidings.app.application import App
from tidings.testing.harness import TestApp


@pytest.fixture
async def tidings_app() -> AsyncIterator[Callable[[App], Awaitable[TestApp]]]:
    started: list[TestApp] = []

    async def start(app: App) -> TestApp:
        harness = TestApp(app)
        await harness.__aenter__()
        started.append(harness)
        return harness

    yield start
    for harness in reversed(started):
        await harness.__aexit__(None, None, None)
