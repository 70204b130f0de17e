"""GET /events: recent deliveries newest first with their outcome (accepted, duplicate, ignored, rejected), the
rules their event matched and their actions' states; /audit's filters; paging both ways sees each once."""

from __future__ import annotations

import httpx
import pytest

from tests import payloads
from tests.helpers import AUTH, post_codeship

pytestmark = pytest.mark.integration


async def _deliveries(client: httpx.AsyncClient) -> str:
    accepted = await post_codeship(client, payloads.codeship("success"))
    assert accepted.status_code == 202 and accepted.json()["matched"] == ["api-after-lib"]
    assert (await post_codeship(client, payloads.codeship("success"))).status_code == 200  # duplicate
    other = payloads.codeship("success", project="acme/other", build_id=9, commit="c" * 40)
    assert (await post_codeship(client, other)).status_code in (200, 202)
    assert (await post_codeship(client, payloads.codeship("success"), token="nope")).status_code == 401
    event_id: str = accepted.json()["event_id"]
    return event_id


async def test_events_lists_deliveries_newest_first_with_outcome_rules_and_actions(client: httpx.AsyncClient) -> None:
    event_id = await _deliveries(client)
    page = (await client.get("/events", headers=AUTH)).json()
    outcomes = [item["outcome"] for item in page["items"]]
    assert outcomes[0] == "rejected" and outcomes[-1] == "accepted" and "duplicate" in outcomes
    assert len(outcomes) == 4
    first = page["items"][-1]
    assert first["event_id"] == event_id and first["project"] == "acme/lib" and first["branch"] == "main"
    assert first["status"] == "success" and first["matched"] == ["api-after-lib"]
    assert [(a["action"], a["state"]) for a in first["actions"]] == [("circleci.trigger_pipeline", "pending")]
    assert first["state"] == "pending"
    duplicate = next(i for i in page["items"] if i["outcome"] == "duplicate")
    assert duplicate["matched"] == ["api-after-lib"]  # the event it duplicates
    rejected = page["items"][0]
    assert rejected["http_status"] == 401 and rejected["provider"] == "codeship" and rejected["event_id"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"outcome": "rejected"}, ["rejected"]),
        ({"outcome": "accepted,duplicate"}, ["accepted", "duplicate", "accepted"]),
        ({"project": "acme/lib"}, ["duplicate", "accepted"]),
        ({"rule": "api-after-lib"}, ["duplicate", "accepted"]),
        ({"rule": "web-after-lib"}, []),
        ({"provider": "circleci"}, []),
        ({"commit": "c" * 40}, ["accepted"]),
        ({"outcome": "nothing-such"}, []),
    ],
)
async def test_events_filters(client: httpx.AsyncClient, query: dict[str, str], expected: list[str]) -> None:
    await _deliveries(client)
    items = (await client.get("/events", params=query, headers=AUTH)).json()["items"]
    assert [i["outcome"] for i in items] == expected


async def test_events_paging_backwards_and_forwards_sees_each_delivery_once(client: httpx.AsyncClient) -> None:
    await _deliveries(client)
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": "1"} | ({"before": cursor} if cursor else {})
        page = (await client.get("/events", params=params, headers=AUTH)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == 4 == len(set(seen)) and seen == sorted(seen, reverse=True)
    forward, cursor = [], "0-0"
    for _ in range(10):
        page = (await client.get("/events", params={"limit": "1", "after": cursor}, headers=AUTH)).json()
        forward += [i["id"] for i in page["items"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert forward == list(reversed(seen))
    both = await client.get("/events", params={"after": "1-0", "before": "2-0"}, headers=AUTH)
    assert both.status_code == 400 and "after" in both.json()["error"]
