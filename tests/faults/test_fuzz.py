"""Hypothesis fuzzing of every inbound endpoint through the ASGI app against the real redis-server.

Bodies: random JSON, truncated and mutated real deliveries (a wrong type in each routed field), deep nesting, huge
strings, invalid UTF-8, random bytes. Headers: good, bad and partial signatures, wrong content types, duplicate
headers. A fixed, derandomized profile sends ``BATCH`` requests per example, over 10 000 per run. Promises: never a
5xx (Redis is up, so not even 503), and Redis holds no event that was not answered 2xx "accepted".
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as syncredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.providers import names
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import payloads
from tests.faults.harness import RULES
from tests.helpers import parse_rules

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HOOK, WHSEC = "fuzz-hook-token", "fuzz-whsec"
BATCH = 50
EXAMPLES = 110  # per test; two tests: 2 × 110 × 50 = 11 000 requests
SENT: list[int] = []
PROFILE = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
CIRCLE = payloads.circleci_workflow()
CODESHIP = payloads.codeship()
WRONG = st.sampled_from([None, 0, -1, 1.5, True, "", "x" * 70_000, [], {}, ["a"], {"k": "v"}, "\u0000", "../.."])


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """A real delivery with one routed field given a wrong type (or removed)."""
    document = copy.deepcopy(base)
    path = draw(st.sampled_from(_paths(base)))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        parent[path[-1]] = draw(WRONG)
    else:
        del parent[path[-1]]
    return json.dumps(document).encode()


def bodies(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    raw = json.dumps(base).encode()
    return st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.integers(0, len(raw)).map(lambda n: raw[:n]),
        mutated(base),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.sampled_from([b'{"build": "' + b"x" * 2_000_000 + b'"}', b"\xff\xfe\xfa", raw.replace(b'"', b"\xc3", 3)]),
        st.binary(max_size=200),
        st.just(raw),
    )


def signature(body: bytes, mode: str) -> list[tuple[str, str]]:
    good = hmac.new(WHSEC.encode(), body, hashlib.sha256).hexdigest()
    return {
        "good": [("circleci-signature", f"v1={good}")],
        "wrong": [("circleci-signature", f"v1={'0' * 64}")],
        "partial": [("circleci-signature", f"v1={good[:20]}")],
        "bare": [("circleci-signature", good)],
        "empty": [("circleci-signature", "")],
        "twice": [("circleci-signature", f"v1={'1' * 64}"), ("circleci-signature", f"v1={good}")],
        "none": [],
    }[mode]


content_types = st.sampled_from(
    ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"]
)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(loop: asyncio.AbstractEventLoop, redis_server: Any) -> Iterator[tuple[httpx.AsyncClient, str]]:
    sync = syncredis.Redis.from_url(redis_server.url)
    sync.flushall()
    sync.close()

    async def make() -> tuple[httpx.AsyncClient, Redis]:
        redis = Redis.from_url(redis_server.url)
        options = Settings(hook_token=Secret(HOOK), circleci_webhook_secrets=(Secret(WHSEC),))
        app = create_app(options, ruleset=parse_rules(RULES), store=Store(redis), watch_rules=False)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fuzz"), redis

    http, redis = loop.run_until_complete(make())
    yield http, redis_server.url
    loop.run_until_complete(http.aclose())
    loop.run_until_complete(redis.aclose())


async def _send(http: httpx.AsyncClient, batch: list[tuple[str, bytes, list[tuple[str, str]]]]) -> list[httpx.Response]:
    return [await http.post(url, content=body, headers=headers) for url, body, headers in batch]


def _check(loop: asyncio.AbstractEventLoop, client: tuple[httpx.AsyncClient, str], batch: list[Any]) -> None:
    http, url = client
    responses = loop.run_until_complete(_send(http, batch))
    SENT.append(len(responses))
    accepted: set[str] = set()
    for (path, _, _), response in zip(batch, responses, strict=True):
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        body = response.json()
        if response.status_code == 202 and body.get("status") == "accepted":
            accepted.add(body["event_id"])
        elif response.status_code >= 400:
            assert body.get("error"), (path, response.status_code, body)
    sync = syncredis.Redis.from_url(url)
    stored = {k.decode().removeprefix("chainer:event:") for k in sync.scan_iter("chainer:event:*")}
    sync.flushall()
    sync.close()
    assert stored <= accepted, f"stored without a 202 accepted: {sorted(stored - accepted)[:3]}"


@PROFILE
@given(
    st.lists(
        st.tuples(bodies(CIRCLE), st.sampled_from(["good", "wrong", "partial", "bare", "empty", "twice", "none"])),
        min_size=BATCH,
        max_size=BATCH,
    ),
    st.lists(content_types, min_size=BATCH, max_size=BATCH),
)
def test_fuzzed_circleci_deliveries_never_5xx_nor_store_the_rejected(
    loop: asyncio.AbstractEventLoop, client: tuple[httpx.AsyncClient, str], items: Any, types: list[str]
) -> None:
    batch = []
    for (body, mode), ctype in zip(items, types, strict=True):
        headers = [("content-type", ctype), ("circleci-event-type", "workflow-completed"), *signature(body, mode)]
        batch.append(("/hooks/circleci", body, headers))
    _check(loop, client, batch)


@PROFILE
@given(
    st.lists(
        st.tuples(
            bodies(CODESHIP),
            st.sampled_from(["path", "query", "wrong", "none", "both", "unknown-provider"]),
            content_types,
        ),
        min_size=BATCH,
        max_size=BATCH,
    )
)
def test_fuzzed_token_deliveries_never_5xx_nor_store_the_rejected(
    loop: asyncio.AbstractEventLoop, client: tuple[httpx.AsyncClient, str], items: Any
) -> None:
    others = [n for n in names() if n not in ("circleci",)]
    batch = []
    for n, (body, mode, ctype) in enumerate(items):
        provider = others[n % len(others)]
        url = {
            "path": f"/hooks/{provider}/{HOOK}",
            "query": f"/hooks/{provider}?token={HOOK}",
            "wrong": f"/hooks/{provider}/nope",
            "none": f"/hooks/{provider}",
            "both": f"/hooks/{provider}/{HOOK}?token={HOOK}&token=x",
            "unknown-provider": f"/hooks/nosuch/{HOOK}",
        }[mode]
        headers = [("content-type", ctype), ("content-type", "application/json"), ("x-dup", "1"), ("x-dup", "2")]
        batch.append((url, body, headers if n % 3 == 0 else headers[:1]))
    _check(loop, client, batch)


def test_the_fuzz_budget_was_spent() -> None:
    """Over 10 000 requests went through the two fuzz tests in this run (they run first, in file order)."""
    assert sum(SENT) >= 10_000, sum(SENT)
