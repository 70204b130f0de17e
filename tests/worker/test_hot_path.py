"""The worker's outbound call stays off the import system (issue 11).

httpcore asks ``sniffio`` which async library runs, on several steps of every request; without the package each
ask was a failed ``import sniffio``, a search of every ``sys.path`` entry (about 60 µs), several times per call:
3.7 % of `chainer run`'s CPU at 100 events/s (py-spy). chainer depends on sniffio so that the import is found once.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler
from types import ModuleType
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.intake import Intake
from chainer.jobs import RetryPolicy, run_action
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import payloads
from tests.helpers import CHAIN_RULE, LoopbackApi, job_ctx, parse_rules

pytestmark = pytest.mark.integration

RULES = CHAIN_RULE


class ImportSearches(importlib.abc.MetaPathFinder):
    """Notes every module the import system is asked to find (an import not already in ``sys.modules``)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        self.names.append(fullname)
        return None


def _pipeline(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, Any]:
    return 201, {"id": "5034460f-c7c4-4c43-9457-de07e2029e7b", "number": 7, "state": "created", "created_at": "x"}


async def test_an_action_sent_over_a_real_socket_searches_for_no_module(redis: Redis) -> None:
    """Two actions sent to a CircleCI on 127.0.0.1 through the worker's job: the second (everything warm) makes
    the import system search for nothing."""
    with LoopbackApi(_pipeline) as api:
        settings = Settings(hook_token=Secret("hook"), circleci_token=Secret("cci"), circleci_url=api.url)
        store = Store(redis)
        intake = Intake(settings, store, lambda: parse_rules(RULES))
        async with httpx.AsyncClient() as http:
            ctx = job_ctx(store, settings, Downstream(settings, http), retry_policy=RetryPolicy(max_tries=1))
            actions = []
            for build in (1, 2):
                body = json.dumps(payloads.codeship("success", build_id=build, branch=f"b-{build}")).encode()
                reply = await intake.receive("codeship", {"content-type": "application/json"}, body, "hook")
                actions.append(f"{reply.body()['event_id']}:api-after-lib:0")
            assert await run_action(ctx, actions[0]) == "done"
            searches = ImportSearches()
            sys.meta_path.insert(0, searches)
            try:
                assert await run_action(ctx, actions[1]) == "done"
            finally:
                sys.meta_path.remove(searches)
    assert len([line for line in api.log if "POST" in line]) == 2
    assert searches.names == []
