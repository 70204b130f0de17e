"""The operator API: bearer token, audit pages and filters, the event view, through ASGI against a real Redis."""

from __future__ import annotations

import httpx
import pytest

from tests import payloads
from tests.helpers import AUTH, post_codeship

pytestmark = pytest.mark.integration


async def test_operator_api_requires_the_admin_token(client: httpx.AsyncClient) -> None:
    """GET /audit, /events and /rules answer 401 without or with a wrong bearer token."""
    for path in ("/audit", "/events/evt_x", "/rules"):
        missing = await client.get(path)
        wrong = await client.get(path, headers={"authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")


async def test_audit_lists_the_decision_trail_and_filters(client: httpx.AsyncClient) -> None:
    """After one accepted event /audit shows received, per-rule decisions and the queued action, filterable."""
    accepted = (await post_codeship(client, payloads.codeship("success"))).json()
    auth = AUTH
    page = (await client.get("/audit", params={"event_id": accepted["event_id"]}, headers=auth)).json()
    types = [r["type"] for r in page["items"]]
    assert types == ["webhook.received", "rule.matched", "action.queued", "rule.not_matched", "rule.not_matched"]
    not_matched = [r for r in page["items"] if r["type"] == "rule.not_matched"]
    assert {r["rule"] for r in not_matched} == {"restart-infra", "web-after-lib"}
    assert all(r["reason"] and r["field"] and r["rules_version"] for r in not_matched)
    only = (await client.get("/audit", params={"type": "action.queued"}, headers=auth)).json()["items"]
    assert [r["type"] for r in only] == ["action.queued"]
    assert only[0]["params"]["parameters"] == {"upstream_sha": payloads.COMMIT}


async def test_audit_rejects_bad_query_parameters(client: httpx.AsyncClient) -> None:
    """Bad limit, cursor, time or unknown parameters get 400 naming the parameter."""
    auth = AUTH
    cases = [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after": "abc"}, "after"),
        ({"since": "yesterday"}, "since"),
        ({"colour": "red"}, "colour"),
    ]
    for params, name in cases:
        response = await client.get("/audit", params=params, headers=auth)
        assert response.status_code == 400 and name in response.json()["error"]


async def test_event_view_shows_decisions_and_actions(client: httpx.AsyncClient) -> None:
    """GET /events/{id} returns the event with its raw payload, every decision and every action."""
    accepted = (await post_codeship(client, payloads.codeship("success"))).json()
    auth = AUTH
    view = (await client.get(f"/events/{accepted['event_id']}", headers=auth)).json()
    assert view["event"]["project"] == "acme/lib" and view["event"]["raw"]["build"]["build_id"] == 4711
    assert {d["rule"]: d["matched"] for d in view["decisions"]}["api-after-lib"] is True
    assert view["actions"][0]["state"] == "pending" and view["actions"][0]["action"] == "circleci.trigger_pipeline"
    missing = await client.get("/events/evt_nope", headers=auth)
    assert missing.status_code == 404
