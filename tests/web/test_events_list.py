"""GET /events: recent deliveries newest first with their outcome (accepted, duplicate, ignored, rejected), the
rules their event matched and their actions' states; /audit's filters; paging both ways sees each once."""

from __future__ import annotations

import asyncio

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


def _at(record_id: str) -> tuple[int, int]:
    ms, _, seq = record_id.partition("-")
    return int(ms), int(seq)


def _delivery(n: int) -> dict[str, object]:
    """Delivery ``n``: every third one a build of acme/lib on main (api-after-lib fires), the others of acme/other."""
    project = "acme/lib" if n % 3 == 0 else "acme/other"
    return payloads.codeship("success", build_id=10_000 + n, project=project, commit=f"{n:040x}")


async def _walk(
    client: httpx.AsyncClient, params: dict[str, str], start: dict[str, str]
) -> tuple[list[str], list[int]]:
    """Follow ``next`` from ``start`` (bounded); the ids seen and each page's size."""
    seen: list[str] = []
    sizes: list[int] = []
    cursor = dict(start)
    direction = "after" if "after" in start else "before"
    for _ in range(200):
        page = (await client.get("/events", params=params | cursor, headers=AUTH)).json()
        seen += [i["id"] for i in page["items"]]
        sizes.append(len(page["items"]))
        if page["next"] is None:
            break
        cursor = {direction: page["next"]}
    return seen, sizes


async def test_rule_filtered_pages_are_full_until_the_last(client: httpx.AsyncClient) -> None:
    """With a third of 36 deliveries matching the rule, pages of 5 hold 5 each (the rule filter keeps reading)
    and the walk ends with the remainder: 12 = 5 + 5 + 2, both directions."""
    for n in range(36):
        assert (await post_codeship(client, _delivery(n))).status_code in (200, 202)
    params = {"rule": "api-after-lib", "limit": "5"}
    backward, sizes = await _walk(client, params, {"before": "+"})
    assert sizes == [5, 5, 2] and len(set(backward)) == 12 and backward == sorted(backward, key=_at, reverse=True)
    forward, sizes = await _walk(client, params, {"after": "0-0"})
    assert sizes == [5, 5, 2] and forward == list(reversed(backward))
    items = (await client.get("/events", params=params | {"limit": "100"}, headers=AUTH)).json()["items"]
    assert {i["event_id"] for i in items} == {i["event_id"] for i in items if i["matched"] == ["api-after-lib"]}


async def test_rule_filtered_paging_under_concurrent_writers_sees_each_match_once(client: httpx.AsyncClient) -> None:
    """While 60 deliveries arrive, a forward walk of /events?rule= (resumed from its last cursor once the writers
    are done) sees every matching delivery exactly once, in order; a backward walk started meanwhile sees each
    match older than where it started exactly once."""
    for n in range(6):
        assert (await post_codeship(client, _delivery(n))).status_code in (200, 202)
    params = {"rule": "api-after-lib", "limit": "3"}

    async def write() -> None:
        for n in range(6, 66):
            assert (await post_codeship(client, _delivery(n))).status_code in (200, 202)
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    forward: list[str] = []
    cursor = "0-0"
    backward: list[str] = []
    newest_at_start = (await client.get("/events", params={"limit": "1"}, headers=AUTH)).json()["items"][0]["id"]
    back_cursor: str | None = "+"
    for _ in range(500):
        page = (await client.get("/events", params=params | {"after": cursor}, headers=AUTH)).json()
        forward += [i["id"] for i in page["items"]]
        cursor = page["next"] or (forward[-1] if forward else cursor)
        if back_cursor is not None:
            back = (await client.get("/events", params=params | {"before": back_cursor}, headers=AUTH)).json()
            backward += [i["id"] for i in back["items"]]
            back_cursor = back["next"]
        if writer.done() and page["next"] is None and back_cursor is None:
            break
        await asyncio.sleep(0)
    await writer
    tail, _ = await _walk(client, params, {"after": cursor})
    forward += tail
    everything = (await client.get("/audit", params={"type": "webhook.received", "limit": "500"}, headers=AUTH)).json()
    matched = [r["id"] for r in everything["items"] if r["project"] == "acme/lib"]
    assert len(matched) == 22 and forward == matched
    assert len(backward) == len(set(backward)) and backward == sorted(backward, key=_at, reverse=True)
    assert set(backward) >= {m for m in matched if _at(m) <= _at(newest_at_start)}
    assert set(backward) <= set(matched)
