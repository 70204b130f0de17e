"""The web app's composition root (DESIGN §3, §8): ``create_app`` puts the ``chainer.web`` routers together.

uvicorn runs it as a factory (``chainer.app:create_app``). It builds the settings, rules and store,
the routes of ``chainer.web`` (webhooks, operator API, probes), the JSON error answers, the redacting
access log and the lifespan (the store's connection, the rules watcher). Every answer is JSON; bad
input gets a 4xx that names the problem, Redis trouble a 503, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chainer import clock, heap
from chainer.accesslog import AccessLog, secret_values
from chainer.providers import catalogue
from chainer.reload import RulesWatcher
from chainer.rules import RuleSet, load_rules
from chainer.settings import Settings
from chainer.store import Store
from chainer.store.connections import connect
from chainer.web import hooks, openapi, operator, probes, ui
from chainer.web.common import WebState, error
from chainer.web.stream import stop_on_exit_signals, stop_streams


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (404, 405) as chainer's JSON errors."""
    assert isinstance(exc, HTTPException)  # noqa: S101 (starlette only routes HTTPException here)
    return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def create_app(
    settings: Settings | None = None,
    *,
    ruleset: RuleSet | None = None,
    store: Store | None = None,
    watch_rules: bool | None = None,
) -> Starlette:
    """Build the app. Without arguments, settings come from the environment and rules from CHAINER_RULES.

    Rules loaded here are reloaded on SIGHUP and when the file changes (``watch_rules``, default on
    unless a ruleset is passed in). Raises ConfigError or RulesError when either is bad, so the
    process stops before serving.
    """
    settings = settings or Settings.from_env(os.environ)
    watch = ruleset is None if watch_rules is None else watch_rules
    load = functools.partial(load_rules, catalogue=catalogue())
    state = WebState(settings, ruleset or load(settings.rules_path), store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned: Redis | None = None
        serving = state.store
        if serving is None:
            owned = connect(settings.redis_url)
            serving = Store.configured(owned, settings)
            state.use_store(serving)
        restore_signals = stop_on_exit_signals(app)  # open /audit/stream followers must not hold a shutdown
        watcher = RulesWatcher(settings.rules_path, state.rules, state.activate, serving, load=load)
        app.state.rules_watcher = watcher
        task = asyncio.create_task(watcher.watch(settings.rules_poll_seconds)) if watch else None
        with contextlib.suppress(Exception):  # the Redis clock decides (chainer.clock); Redis may be down yet
            await asyncio.wait_for(clock.sync(serving.redis), 2)
        clock_task = asyncio.create_task(clock.follow(serving.redis))
        heap.settle()  # ready: what lives now lives as long as the process (chainer.heap)
        try:
            yield
        finally:
            clock_task.cancel()
            restore_signals()
            stop_streams(app)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owned is not None:
                # Forget the store with its connection: a lifespan run again on this app (an ASGI test client
                # starts one per test) connects anew instead of serving from a client closed here and never
                # closing it again.
                state.release_store()
                await owned.aclose()

    routes = [*hooks.routes(), *operator.routes(), *probes.routes(), *openapi.routes(), *ui.routes()]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.add_middleware(AccessLog, secrets=secret_values(settings))  # uvicorn's access log is off: it shows tokens
    app.state.chainer = state
    return app
