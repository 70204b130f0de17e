"""Fixtures of the web tests: the app on the session's Redis, with the rules the webhook, operator and probe
tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from chainer.app import create_app
from chainer.store import Store
from tests.helpers import WEB_RULES, app_client, parse_rules, settings


@pytest.fixture
def web_app() -> Callable[..., Starlette]:
    """Builds the app on a store with ``tests.helpers.WEB_RULES`` and ``tests.helpers.settings(**overrides)``."""

    def build(store: Store, **overrides: Any) -> Starlette:
        return create_app(settings(**overrides), ruleset=parse_rules(WEB_RULES), store=store)

    return build


@pytest.fixture
async def client(web_app: Callable[..., Starlette], redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The app with ``RULES`` on the test's Redis, under an ASGI client."""
    async with app_client(web_app(Store(redis))) as c:
        yield c
