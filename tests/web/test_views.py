"""What the operator API shows: unencodable text, secondary duplicates, action history; through ASGI, real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.jobs import RetryPolicy
from chainer.providers import Downstream
from chainer.settings import Secret
from chainer.store import Store
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import AUTH, HOOK, JSON, WEB_RULES, WHSEC, app_client, parse_rules, settings

pytestmark = pytest.mark.integration


SETTINGS = settings(
    circleci_token=Secret("cci-token"),
    circleci_url="https://circleci.example",
)
CREATED = {"id": "5034460f-c7c4-4c43-9457-de07e2029e7b", "state": "created", "number": 7, "created_at": "x"}


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SETTINGS, ruleset=parse_rules(WEB_RULES), store=Store(redis))
    async with app_client(app) as c:
        yield c


def _with_lone_surrogate(body: dict[str, Any]) -> bytes:
    """``body`` as JSON text whose build message carries the escape of a lone surrogate (valid JSON, valid UTF-8)."""
    text = json.dumps(body)
    assert '"Fix the thing"' in text
    return text.replace('"Fix the thing"', '"Fix \\ud800 the thing"').encode()


async def test_event_whose_payload_holds_a_lone_surrogate_is_shown(client: httpx.AsyncClient) -> None:
    """An accepted event whose payload escapes a lone surrogate is shown by GET /events/{id} and /audit, not a 500."""
    body = _with_lone_surrogate(payloads.codeship("success"))
    accepted = await client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)
    assert accepted.status_code == 202, accepted.text
    event_id = accepted.json()["event_id"]

    view = await client.get(f"/events/{event_id}", headers=AUTH)
    assert view.status_code == 200, view.text
    assert view.json()["event"]["raw"]["build"]["message"] == "Fix \ud800 the thing"
    assert "\\ud800" in view.text  # escaped in the answer, so the body is valid UTF-8
    view.content.decode("utf-8")
    assert view.json()["event"]["raw"]["build"]["build_id"] == 4711

    audit = await client.get("/audit", params={"event_id": event_id}, headers=AUTH)
    assert audit.status_code == 200 and audit.json()["items"][0]["type"] == "webhook.received"


async def test_explain_with_a_lone_surrogate_answers_normally_or_400(client: httpx.AsyncClient) -> None:
    """POST /explain: an escaped lone surrogate in ``payload`` is explained; in raw ``body`` text it is a clear 400."""
    codeship = payloads.codeship("success")
    inner = _with_lone_surrogate(codeship).decode()
    as_payload = json.dumps({"provider": "codeship", "payload": json.loads(inner)}).encode()
    explained = await client.post("/explain", content=as_payload, headers=AUTH | JSON)
    assert explained.status_code == 200, explained.text
    assert [r["name"] for r in explained.json()["rules"] if r["matched"]] == ["api-after-lib"]

    # The raw text itself holds U+D800, which no UTF-8 delivery can carry.
    as_body = json.dumps({"provider": "codeship", "body": inner.replace("\\ud800", "\ud800")}).encode()
    assert b"\\ud800" in as_body
    refused = await client.post("/explain", content=as_body, headers=AUTH | JSON)
    assert refused.status_code == 400, refused.text
    assert "body" in refused.json()["error"] and "surrogate" in refused.json()["error"]

    # The same with the escape kept inside the raw text: valid JSON, explained normally.
    escaped = json.dumps({"provider": "codeship", "body": inner}).encode()
    answered = await client.post("/explain", content=escaped, headers=AUTH | JSON)
    assert answered.status_code == 200, answered.text
    assert answered.json()["event"]["project"] == "acme/lib"

    # A payload without a type takes it from the headers; the unknown type is named in the answer.
    untyped = {k: v for k, v in payloads.circleci_workflow().items() if k != "type"}
    header = json.dumps(
        {"provider": "circleci", "payload": untyped, "headers": {"circleci-event-type": "workflow-\ud800"}}
    ).encode()
    with_header = await client.post("/explain", content=header, headers=AUTH | JSON)
    assert with_header.status_code == 200, with_header.text
    assert "unknown CircleCI event type 'workflow-" in with_header.json()["ignored"]


async def test_secondary_duplicate_is_recorded_on_the_accepted_event(client: httpx.AsyncClient) -> None:
    """A second CircleCI delivery (new id, same workflow and status) is a duplicate audited on the first event."""
    first_body, headers = payloads.signed(payloads.circleci_workflow("success"), WHSEC)
    first = await client.post("/hooks/circleci", content=first_body, headers=headers)
    assert first.status_code == 202, first.text
    event_id = first.json()["event_id"]
    other = payloads.circleci_workflow("success", delivery="0b9e7d3c-5a4f-4e21-8c6b-2d1f0e9a8b7c")
    second_body, headers = payloads.signed(other, WHSEC)
    second = await client.post("/hooks/circleci", content=second_body, headers=headers)
    assert second.status_code == 200 and second.json() == {"status": "duplicate", "event_id": event_id}

    view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
    duplicates = [r for r in view["audit"] if r["type"] == "webhook.duplicate"]
    assert len(duplicates) == 1
    assert duplicates[0]["event_id"] == event_id
    assert duplicates[0]["delivery"] == "circleci:id:0b9e7d3c-5a4f-4e21-8c6b-2d1f0e9a8b7c"
    assert duplicates[0]["delivery_event_id"] != event_id

    page = (await client.get("/audit", params={"event_id": event_id}, headers=AUTH)).json()["items"]
    assert [r["id"] for r in page if r["type"] == "webhook.duplicate"] == [duplicates[0]["id"]]
    everywhere = (await client.get("/audit", params={"type": "webhook.duplicate"}, headers=AUTH)).json()["items"]
    assert [r["id"] for r in everywhere] == [duplicates[0]["id"]]

    # Redeliveries of either delivery are recorded there too.
    for body in (first_body, second_body):
        again = await client.post("/hooks/circleci", content=body, headers=payloads.signed(body, WHSEC)[1])
        assert again.json() == {"status": "duplicate", "event_id": event_id}
    view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
    assert [r["type"] for r in view["audit"]].count("webhook.duplicate") == 3


async def test_done_action_shows_its_earlier_error_as_history(client: httpx.AsyncClient, redis_url: str) -> None:
    """An action that fails once (500) then succeeds is done with no current error; the 500 is in its history."""
    answers = [httpx.Response(500, json={"message": "upstream exploded"}), httpx.Response(201, json=CREATED)]
    sent: list[httpx.Request] = []

    def provider(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers[len(sent) - 1]

    accepted = await client.post(f"/hooks/codeship/{HOOK}", content=json.dumps(payloads.codeship()), headers=JSON)
    event_id = accepted.json()["event_id"]
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http:
        worker = create_worker(
            SETTINGS,
            burst=True,
            handle_signals=False,
            poll_delay=0.01,
            redis_pool=connect_arq(redis_url, retries=0),
            downstream=Downstream(SETTINGS, http),
            retry_policy=RetryPolicy(base_s=0.02, cap_s=0.05),
        )
        try:
            await worker.main()
        finally:
            await worker.close()
    assert len(sent) == 2

    view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
    action = view["actions"][0]
    assert action["state"] == "done" and action["downstream_id"] == CREATED["id"]
    assert action.get("last_error") is None
    assert action["attempts"] == 2
    history = action["history"]
    assert [(h["attempt"], h["outcome"], h["http_status"]) for h in history] == [
        (1, "transient", 500),
        (2, "success", 201),
    ]
    assert "upstream exploded" in history[0]["error"] and history[1].get("error") is None

    chain = (await client.get(f"/chains/{event_id}", headers=AUTH)).json()
    assert chain["tree"]["actions"][0]["state"] == "done" and chain["tree"]["actions"][0]["reason"] is None
