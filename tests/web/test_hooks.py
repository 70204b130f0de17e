"""The webhook endpoints: every answer to a delivery, through ASGI against a real Redis.

The app comes from tests/web/conftest.py, its rules from tests.helpers.WEB_RULES.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from chainer.store import QUEUE_KEY, Store
from tests import payloads
from tests.helpers import AUTH, HOOK, JSON, WHSEC, app_client, post_codeship
from tests.redis_server import free_port

pytestmark = pytest.mark.integration


async def test_codeship_success_is_accepted_with_matched_rules(client: httpx.AsyncClient, redis: Redis) -> None:
    """A matching Codeship build gets 202 with the event id, the matched rule names and the number queued."""
    response = await post_codeship(client, payloads.codeship("success"))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted" and body["event_id"].startswith("evt_")
    assert body["matched"] == ["api-after-lib"] and body["queued"] == 1
    assert await redis.zcard(QUEUE_KEY) == 1


async def test_token_as_query_parameter_works(client: httpx.AsyncClient) -> None:
    """The hook token may be passed as ?token= instead of a path segment."""
    response = await post_codeship(client, payloads.codeship("success"), token=None, params={"token": HOOK})
    assert response.status_code == 202


async def test_redelivery_is_a_duplicate_and_queues_nothing(client: httpx.AsyncClient, redis: Redis) -> None:
    """The same delivery posted twice answers 200 duplicate with the first event id and one job in all."""
    first = await post_codeship(client, payloads.codeship("success"))
    second = await post_codeship(client, payloads.codeship("success"))
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert await redis.zcard(QUEUE_KEY) == 1


async def test_terminal_event_without_match_is_accepted_with_no_rules(client: httpx.AsyncClient) -> None:
    """A finished build no rule wants is still accepted (and explained in the audit log), queuing nothing."""
    response = await post_codeship(client, payloads.codeship("success", project="acme/other"))
    assert response.status_code == 202
    assert response.json()["matched"] == [] and response.json()["queued"] == 0


@pytest.mark.parametrize("status", ["testing", "initiated", "waiting"])
async def test_unfinished_build_no_rule_asks_for_is_ignored(client: httpx.AsyncClient, status: str) -> None:
    """A running Codeship build that no rule asks for gets 202 ignored with a reason."""
    response = await post_codeship(client, payloads.codeship(status))
    assert response.status_code == 202
    assert response.json()["status"] == "ignored" and "not final" in response.json()["reason"]


async def test_circleci_signed_workflow_is_accepted_with_rotated_secret(client: httpx.AsyncClient) -> None:
    """A workflow-completed body signed with the second configured secret is accepted."""
    body, headers = payloads.signed(payloads.circleci_workflow("success"), WHSEC)
    response = await client.post("/hooks/circleci", content=body, headers=headers)
    assert response.status_code == 202
    assert response.json()["matched"] == ["api-after-lib"]


async def test_circleci_ping_and_unknown_type_are_ignored(client: httpx.AsyncClient) -> None:
    """A signed ping and a signed unknown event type both get 202 ignored."""
    body, headers = payloads.signed(payloads.circleci_ping(), WHSEC)
    ping = await client.post("/hooks/circleci", content=body, headers=headers)
    assert ping.status_code == 202 and ping.json()["status"] == "ignored"
    other = payloads.circleci_workflow() | {"type": "pipeline-exploded"}
    body, headers = payloads.signed(other, WHSEC)
    unknown = await client.post("/hooks/circleci", content=body, headers=headers)
    assert unknown.status_code == 202 and "pipeline-exploded" in unknown.json()["reason"]


@pytest.mark.parametrize(
    ("path", "headers_kind", "fragment"),
    [
        ("/hooks/codeship", "plain", "token"),
        ("/hooks/codeship/wrong", "plain", "token"),
        ("/hooks/circleci", "bad-signature", "signature"),
        ("/hooks/circleci", "unsigned-outbound", "signed"),
        ("/hooks/circleci/wrong", "legacy", "token"),
    ],
    ids=[
        "codeship-missing-token",
        "codeship-wrong-token",
        "circleci-bad-signature",
        "circleci-unsigned-outbound",
        "circleci-legacy-wrong-token",
    ],
)
async def test_bad_credentials_get_401(client: httpx.AsyncClient, path: str, headers_kind: str, fragment: str) -> None:
    """Missing or wrong tokens and signatures are refused with 401 naming what is wrong."""
    if headers_kind == "bad-signature":
        body, headers = payloads.signed(payloads.circleci_workflow(), "not-the-secret")
    elif headers_kind == "unsigned-outbound":
        body, headers = json.dumps(payloads.circleci_workflow()).encode(), JSON
    elif headers_kind == "legacy":
        body, headers = json.dumps({"payload": {"build_num": 1}}).encode(), JSON
    else:
        body, headers = json.dumps(payloads.codeship()).encode(), JSON
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 401
    assert fragment in response.json()["error"].lower()
    assert HOOK not in response.text and WHSEC not in response.text


async def test_unsigned_endpoints_refuse_everything_without_a_hook_token(
    redis: Redis, web_app: Callable[..., Starlette]
) -> None:
    """With CHAINER_HOOK_TOKEN unset, Codeship deliveries are refused and the answer says why."""
    app = web_app(Store(redis), hook_token=None)
    async with app_client(app, "http://t") as c:
        response = await post_codeship(c, payloads.codeship(), token="anything")
    assert response.status_code == 401 and "CHAINER_HOOK_TOKEN" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "json"),
        (b"[1, 2, 3]", "object"),
        (b'"just a string"', "object"),
        (b"\xff\xfe\x00", "utf-8"),
        (json.dumps({"build": {"status": "success"}}).encode(), "build."),
        (json.dumps({"nothing": 1}).encode(), "build"),
        (
            json.dumps(payloads.codeship() | {"build": {**payloads.codeship()["build"], "status": 5}}).encode(),
            "build.status",
        ),
        (
            json.dumps(payloads.codeship() | {"build": {**payloads.codeship()["build"], "build_id": "x"}}).encode(),
            "build.build_id",
        ),
    ],
    ids=["invalid-json", "array", "string", "bad-utf8", "missing-fields", "no-build", "status-type", "build-id-type"],
)
async def test_bad_payloads_get_400_naming_the_problem(client: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    """Bodies that are not a known payload shape get 400 whose error names the field or problem."""
    response = await client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)
    assert response.status_code == 400
    assert fragment.lower() in response.json()["error"].lower()


async def test_oversize_body_gets_413_with_and_without_content_length(client: httpx.AsyncClient) -> None:
    """A body over 1 MiB is refused with 413, whether declared up front or streamed."""
    big = b'{"build": "' + b"x" * (1024 * 1024) + b'"}'
    declared = await client.post(f"/hooks/codeship/{HOOK}", content=big, headers=JSON)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 65536

    streamed = await client.post(f"/hooks/codeship/{HOOK}", content=chunks(), headers=JSON)
    assert streamed.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_gets_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    """Only JSON is accepted; other or missing content types get 415."""
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(f"/hooks/codeship/{HOOK}", content=b"{}", headers=headers)
    assert response.status_code == 415


async def test_redis_down_gets_503_with_retry_after(web_app: Callable[..., Starlette]) -> None:
    """When Redis cannot take the event, the answer is 503 with Retry-After, never 2xx or 500."""
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    app = web_app(Store(dead))
    async with app_client(app, "http://t") as c:
        response = await post_codeship(c, payloads.codeship("success"))
        ready = await c.get("/readyz")
        audit = await c.get("/audit", headers=AUTH)
    await dead.aclose()
    assert audit.status_code == 503 and "Redis" in audit.json()["error"]
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["event_id"].startswith("evt_")
    assert ready.status_code == 503


async def test_random_bodies_never_produce_a_500(client: httpx.AsyncClient) -> None:
    """Two hundred random and mangled bodies to both endpoints get 2xx or 4xx, never 5xx."""
    rng = random.Random(7)
    samples: list[bytes] = []
    valid = json.dumps(payloads.codeship()).encode()
    for _ in range(100):
        cut = rng.randrange(len(valid))
        samples.append(valid[:cut] + bytes([rng.randrange(256)]) + valid[cut + 1 :])
        samples.append(json.dumps(_random_json(rng, 4)).encode())
    for body in samples:
        for path in (f"/hooks/codeship/{HOOK}", f"/hooks/circleci/{HOOK}"):
            response = await client.post(path, content=body, headers=JSON)
            assert response.status_code < 500, (body, response.text)


def _random_json(rng: random.Random, depth: int) -> Any:
    choice = rng.randrange(7 if depth > 0 else 4)
    if choice == 0:
        return rng.randrange(-5, 5)
    if choice == 1:
        return rng.choice(["success", "", "build", "payload", "x" * 3])
    if choice == 2:
        return None
    if choice == 3:
        return rng.random() > 0.5
    if choice == 4:
        return [_random_json(rng, depth - 1) for _ in range(rng.randrange(3))]
    keys = ["build", "payload", "type", "status", "project_name", "id", "build_id", "workflow"]
    return {rng.choice(keys): _random_json(rng, depth - 1) for _ in range(rng.randrange(4))}


async def test_wrong_method_gets_json_405(client: httpx.AsyncClient) -> None:
    """GET on a webhook endpoint answers 405 as JSON, not an HTML page."""
    response = await client.get("/hooks/codeship")
    assert response.status_code == 405 and "error" in response.json()


async def test_restart_budget_is_spent_per_commit_and_per_day(client: httpx.AsyncClient, redis: Redis) -> None:
    """limit {per_commit: 2, per_day: 3} queues two restarts per commit and three a day, auditing the rest."""
    queued = []
    for build_id, commit in [(1, "a" * 40), (2, "a" * 40), (3, "a" * 40), (4, "b" * 40), (5, "c" * 40)]:
        response = await post_codeship(
            client, payloads.codeship("infrastructure_failure", build_id=build_id, commit=commit)
        )
        assert response.status_code == 202 and response.json()["matched"] == ["restart-infra"]
        queued.append(response.json()["queued"])
    assert queued == [1, 1, 0, 1, 0]
    assert await redis.zcard(QUEUE_KEY) == 3
    auth = AUTH
    skipped = (await client.get("/audit", params={"type": "action.skipped"}, headers=auth)).json()["items"]
    assert len(skipped) == 2
    assert "per commit" in skipped[0]["reason"] and "aaaaaaaaaaaa" in skipped[0]["reason"]
    assert "per day" in skipped[1]["reason"]
    view = (await client.get(f"/events/{skipped[0]['event_id']}", headers=auth)).json()
    assert view["actions"][0]["state"] == "skipped" and "budget" in view["actions"][0]["last_error"]
