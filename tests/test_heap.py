"""The long-lived heap is frozen out of the cyclic collector once a process is ready and after a rules reload
(chainer.heap): the web when its lifespan has started, the worker when its services are built. The p99 this buys
is measured by bench/run (ingest), not here."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.rules import RuleSet, templates
from chainer.settings import Settings
from chainer.store import Store
from tests.helpers import WEB_RULES, wait_until

pytestmark = pytest.mark.integration


def frozen(thing: object) -> bool:
    """Whether ``thing`` is in the permanent generation: tracked by the collector, yet in none of its generations."""
    assert gc.is_tracked(thing)
    return not any(o is thing for o in gc.get_objects())


async def test_the_web_freezes_its_heap_when_ready_and_again_after_a_reload(tmp_path: Path, redis: Redis) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(WEB_RULES)
    app = create_app(Settings(rules_path=path, rules_poll_seconds=0.05), store=Store(redis))
    state = app.state.chainer
    gc.unfreeze()
    assert not frozen(state.ruleset)
    # A compiled template that only the template cache holds: Jinja's templates are reference cycles.
    evicted = weakref.ref(templates.compile_value("{{ event.branch }}-only-in-this-test").template)
    async with app.router.lifespan_context(app):
        first: RuleSet = state.ruleset
        assert gc.get_freeze_count() > 0 and frozen(first)
        gone = weakref.ref(first)
        del first
        templates._compiled.cache_clear()  # as a reload pushing templates out of the cache does
        assert evicted() is not None  # frozen in its cycle: only a collection of the thawed heap frees it
        path.write_text(WEB_RULES.replace("acme/web", "acme/docs"))
        await wait_until(lambda: "acme/docs" in str(state.ruleset.as_dict()), "the edited rules active", 5)
        # The rules the reload replaced and the evicted template were freed though frozen; the new rules are frozen.
        assert gone() is None and evicted() is None
        assert frozen(state.ruleset)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_the_worker_freezes_its_heap_once_its_services_are_built(tmp_path: Path, redis_url: str) -> None:
    from chainer.jobs import services
    from chainer.providers import Downstream
    from chainer.store.connections import connect_arq
    from chainer.worker import ServicesBuilder, shutdown

    path = tmp_path / "rules.yaml"
    path.write_text(WEB_RULES)
    pool = connect_arq(redis_url, retries=0)
    settings = Settings(rules_path=path)
    ctx: dict[str, Any] = {"redis": pool}
    async with httpx.AsyncClient() as http:
        gc.unfreeze()
        await ServicesBuilder(settings, downstream=Downstream(settings, http)).startup(ctx)
        try:
            assert frozen(services(ctx).rules()) and frozen(services(ctx).store)
        finally:
            await shutdown(ctx)
            await pool.aclose()
