"""The operator page /ui through the ASGI app over real Redis: sign-in (cookie attributes, CSRF, wrong token),
every page and form refused without the cookie, forms refused without a valid CSRF token, the pages' content
(events, one event with its why-not sentence and lineage SVG, dead letters with replay and discard, rules and
explain), sign-out; the session cookie also reads the API (its live stream) but never changes anything there."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from redis.asyncio import Redis
from starlette.routing import Route

from chainer.app import create_app
from chainer.jobs import run_action
from chainer.providers import Downstream
from chainer.settings import Secret
from chainer.store import Store
from tests import payloads
from tests.helpers import ADMIN, AUTH, app_client, job_ctx, parse_rules, post_codeship, settings

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
  - name: only-on-release
    when: {project: acme/lib, branch: "release/*"}
    then:
      - codeship.trigger_build: {project: acme/web}
"""


@dataclass
class Site:
    client: httpx.AsyncClient
    event_id: str
    action_id: str
    store: Store


@pytest.fixture
async def site(redis: Redis) -> AsyncIterator[Site]:
    """The app with one accepted event whose action died (a 400 from CircleCI)."""
    store = Store(redis)
    conf = settings(circleci_token=Secret("cci-secret-token-xyz"), circleci_url="https://c.test")
    app = create_app(conf, ruleset=parse_rules(RULES), store=store)
    async with app_client(app, "https://chainer.test") as client:
        accepted = await post_codeship(client, payloads.codeship("success"))
        event_id = accepted.json()["event_id"]
        action = f"{event_id}:api-after-lib:0"
        transport = httpx.MockTransport(lambda r: httpx.Response(400, json={"message": "no such project"}))
        async with httpx.AsyncClient(transport=transport) as http:
            assert await run_action(job_ctx(store, conf, Downstream(conf, http)), action) == "dead"
        yield Site(client, event_id, action, store)


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN) -> httpx.Response:
    form = await client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert form.status_code == 200 and csrf is not None
    return await client.post("/ui/signin", data={"csrf": csrf[1], "token": token})


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found[1]


def _ui_routes(site: Site) -> list[tuple[str, str]]:
    app = site.client._transport.app  # type: ignore[attr-defined]
    found = []
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path.startswith("/ui") and route.path not in ("/ui/signin", "/ui/static/{name}"):
            url = route.path.replace("{event_id}", site.event_id).replace("{action_id}", site.action_id)
            for method in route.methods or {"GET"}:
                if method != "HEAD":
                    found.append((method, url.replace("{verb}", "replay")))
    return found


async def test_sign_in_sets_a_strict_httponly_cookie_that_never_holds_the_token(site: Site) -> None:
    client = site.client
    refused = await client.get("/ui")
    assert refused.status_code == 401 and 'action="/ui/signin"' in refused.text
    signin_cookie = (await client.get("/ui/signin")).headers["set-cookie"].lower()
    assert "httponly" in signin_cookie and "samesite=strict" in signin_cookie
    assert (await sign_in(client, "wrong")).status_code == 401
    no_csrf = await client.post("/ui/signin", data={"token": ADMIN})
    assert no_csrf.status_code == 403
    done = await sign_in(client)
    assert done.status_code == 303 and done.headers["location"] == "/ui"
    cookie = done.headers["set-cookie"]
    assert cookie.startswith("chainer_session=") and ADMIN not in cookie
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "secure" in lowered and "path=/" in lowered
    assert ADMIN not in str(done.url) and ADMIN not in done.headers["location"]
    page = await client.get("/ui")
    assert page.status_code == 200 and site.event_id in page.text


async def test_every_page_and_form_refuses_without_the_cookie_and_forms_without_csrf(site: Site) -> None:
    routes = _ui_routes(site)
    assert len(routes) >= 7
    for method, url in routes:
        response = await site.client.request(method, url, data={"csrf": "x"})
        assert response.status_code == 401, (method, url)
        assert 'action="/ui/signin"' in response.text and site.event_id not in response.text
    forged = {"chainer_session": "1700000000000.deadbeef"}
    assert (
        await site.client.get("/ui", headers={"cookie": "; ".join(f"{k}={v}" for k, v in forged.items())})
    ).status_code == 401
    await sign_in(site.client)
    before = await site.store.get_action(site.action_id)
    for method, url in routes:
        if method != "POST":
            continue
        for data in ({}, {"csrf": ""}, {"csrf": "0" * 64}):
            response = await site.client.post(url, data=data)
            assert response.status_code == 403, (url, data, response.text[:300])
    assert await site.store.get_action(site.action_id) == before  # nothing was replayed


async def test_pages_show_events_decisions_lineage_dead_letters_and_rules(site: Site) -> None:
    client = site.client
    await sign_in(client)
    events = await client.get("/ui")
    assert "acme/lib" in events.text and "accepted" in events.text and "api-after-lib" in events.text
    assert "state-dead" in events.text and "/ui/static/live.js" in events.text
    rows = await client.get("/ui", headers={"x-chainer-partial": "rows"})
    assert rows.text.lstrip().startswith("<tbody>") and site.event_id in rows.text
    filtered = await client.get("/ui", params={"outcome": "rejected"})
    assert site.event_id not in filtered.text and "No deliveries match" in filtered.text
    bad = await client.get("/ui", params={"limit": "1000"})
    assert bad.status_code == 400 and "limit" in bad.text

    event = await client.get(f"/ui/events/{site.event_id}")
    assert event.status_code == 200
    assert "did not fire" in event.text and "branch" in event.text  # only-on-release's why-not sentence
    assert "<svg" in event.text and "node bad" in event.text and "node ok" in event.text
    assert "no such project" in event.text and "&#34;acme/lib&#34;" in event.text  # the error, the payload
    assert (await client.get("/ui/events/evt_nope")).status_code == 404

    dead = await client.get("/ui/dlq")
    assert site.action_id in dead.text and "Replay" in dead.text
    replayed = await client.post(f"/ui/dlq/{site.action_id}/replay", data={"csrf": csrf_of(dead)})
    assert replayed.status_code == 303 and replayed.headers["location"].startswith(f"/ui/events/{site.event_id}")
    assert (await site.store.get_action(site.action_id))["state"] == "pending"
    again = await client.post(f"/ui/dlq/{site.action_id}/replay", data={"csrf": csrf_of(dead)})
    assert again.status_code == 409

    rules = await client.get("/ui/rules")
    assert "only-on-release" in rules.text and "Why did this not fire" in rules.text
    payload = json.dumps(payloads.codeship("success", branch="main"))
    explained = await client.post(
        "/ui/explain", data={"csrf": csrf_of(rules), "provider": "codeship", "payload": payload, "headers": ""}
    )
    assert explained.status_code == 200 and "would not fire" in explained.text and "would fire" in explained.text
    unknown = await client.post("/ui/explain", data={"csrf": csrf_of(rules), "provider": "nope", "payload": "{}"})
    assert unknown.status_code == 400 and "provider" in unknown.text


async def test_the_session_reads_the_api_but_never_writes_it_and_sign_out_ends_it(site: Site) -> None:
    client = site.client
    await sign_in(client)
    assert (await client.get("/audit")).status_code == 200  # the page's stream and reads
    changed = await client.post(f"/dlq/{site.action_id}/replay")
    assert changed.status_code == 401  # the API's writes need the bearer token: no CSRF through the cookie
    page = await client.get("/ui")
    out = await client.post("/ui/signout", data={"csrf": csrf_of(page)})
    assert out.status_code == 303 and out.headers["location"] == "/ui/signin"
    assert "chainer_session=" in out.headers["set-cookie"] and "max-age=0" in out.headers["set-cookie"].lower()
    assert (await client.get("/ui")).status_code == 401
    assert (await client.get("/audit")).status_code == 401


async def test_bearer_header_reads_pages_without_a_cookie(site: Site) -> None:
    page = await site.client.get("/ui/dlq", headers=AUTH)
    assert page.status_code == 200 and site.action_id in page.text


async def test_static_files_and_no_cdn(site: Site) -> None:
    css = await site.client.get("/ui/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await site.client.get("/ui/static/../app.py")).status_code == 404
    assert (await site.client.get("/ui/static/nope.css")).status_code == 404
    await sign_in(site.client)
    for url in ("/ui", f"/ui/events/{site.event_id}", "/ui/dlq", "/ui/rules"):
        text = (await site.client.get(url)).text
        assert not re.search(r"(src|href)=\"https?://", text), url


async def test_a_cookie_copied_before_sign_out_is_refused_after_it(site: Site, redis: Redis) -> None:
    """Sign-out closes the session in Redis: a copy of the cookie (another browser, a stolen one) that read the
    pages and the API before is refused after, on pages, forms and API reads alike."""
    await sign_in(site.client)
    copied = site.client.cookies.get("chainer_session")
    assert copied is not None
    app = site.client._transport.app  # type: ignore[attr-defined]
    async with app_client(app, "https://chainer.test") as other:
        other.cookies.set("chainer_session", copied, domain="chainer.test")
        before = await other.get("/ui")
        assert before.status_code == 200 and site.event_id in before.text
        assert (await other.get("/audit")).status_code == 200
        stolen_csrf = csrf_of(await other.get("/ui/dlq"))
        page = await site.client.get("/ui")
        assert (await site.client.post("/ui/signout", data={"csrf": csrf_of(page)})).status_code == 303
        assert (await other.get("/ui")).status_code == 401
        assert (await other.get("/audit")).status_code == 401
        assert (await other.get("/audit/stream")).status_code == 401
        replay = await other.post(f"/ui/dlq/{site.action_id}/replay", data={"csrf": stolen_csrf})
        assert replay.status_code == 401
    assert (await site.store.get_action(site.action_id))["state"] == "dead"
    assert await redis.keys("chainer:session:*") == []


async def test_sessions_live_in_redis_by_digest_and_end_when_the_admin_token_rotates(site: Site, redis: Redis) -> None:
    """Redis holds the session id's digest only, for the session's lifetime; an app restarted with another
    CHAINER_ADMIN_TOKEN refuses every session opened under the old one, and a new sign-in works."""
    await sign_in(site.client)
    copied = site.client.cookies.get("chainer_session")
    assert copied is not None
    session_id = copied.split(".")[0]
    stored = [k.decode() for k in await redis.keys("chainer:session:*")]
    assert len(stored) == 1 and session_id not in stored[0] and ADMIN not in stored[0]
    assert 0 < await redis.pttl(stored[0]) <= 12 * 3600 * 1000
    rotated = create_app(
        settings(admin_token=Secret("rotated-admin-token")), ruleset=parse_rules(RULES), store=site.store
    )
    async with app_client(rotated, "https://chainer.test") as after:
        after.cookies.set("chainer_session", copied, domain="chainer.test")
        assert (await after.get("/ui")).status_code == 401
        assert (await after.get("/audit")).status_code == 401
        after.cookies.clear()
        assert (await sign_in(after, "rotated-admin-token")).status_code == 303
        assert (await after.get("/ui")).status_code == 200
