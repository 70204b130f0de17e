"""A payload cannot steer chainer's calls: branch names with ``../``, ``@``, ``%2F``, ``?`` and ``#`` templated into
a project slug stay one path segment on the configured provider host (the URLs an ``httpx.MockTransport`` receives),
through the webhook endpoint, the real Redis and a burst worker."""

from __future__ import annotations

import json
from urllib.parse import unquote

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Store
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.faults.harness import RULES
from tests.helpers import parse_rules

pytestmark = pytest.mark.integration

BRANCHES = ["../../../evil", "x@evil.example", "a%2F..%2Fb", "q?x=1", "h#frag", "..", "%2e%2e", "a\\..\\b", "@"]


async def test_templated_project_names_stay_inside_the_configured_provider_path(redis: Redis, redis_url: str) -> None:
    seen: list[httpx.Request] = []

    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "p", "number": 1, "state": "created"})

    settings = Settings(
        redis_url=redis_url,
        circleci_webhook_secrets=(Secret("s"),),
        circleci_token=Secret("t"),
        circleci_url="https://circleci.test",
        rules_poll_seconds=3600,
    )
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis), watch_rules=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for n, branch in enumerate(BRANCHES):
            raw, headers = payloads.signed(
                payloads.circleci_workflow(delivery=f"d-{n}", workflow_id=f"w-{n}", branch=branch), "s"
            )
            response = await client.post("/hooks/circleci", content=raw, headers=headers)
            assert response.status_code == 202, response.text
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider))
    worker = create_worker(
        settings,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        ruleset=parse_rules(RULES),
        downstream=Downstream(settings, http),
        redis_pool=connect_arq(redis_url, retries=0),
    )
    await worker.main()
    await worker.close()
    await http.aclose()
    # Every branch but those with a "/" or that are "..": the client refuses those slugs before sending.
    assert len(seen) == 7, [str(r.url) for r in seen]
    for request in seen:
        assert (request.url.scheme, request.url.host, request.url.port) == ("https", "circleci.test", None)
        assert request.url.query == b"" and request.url.fragment == ""
        segments = request.url.raw_path.decode().split("/")
        assert segments[:6] == ["", "api", "v2", "project", "gh", "acme"] and segments[7:] == ["pipeline"], segments
        assert unquote(segments[6]) in BRANCHES
        assert json.loads(request.content)["branch"] == "main"
