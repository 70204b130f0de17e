"""GET /openapi.json and GET /docs: an OpenAPI 3.1 document that matches the mounted routes (every route and
method documented, every documented path mounted, every operator query parameter listed with its limits), valid
under openapi-spec-validator; /docs is a self-contained page."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import Route

from chainer.store import Store
from chainer.web.params import Count, Cursor
from tests.helpers import app_client

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(web_app: Callable[..., Starlette], redis: Redis) -> Starlette:
    return web_app(Store(redis))


async def _document(app: Starlette) -> dict[str, Any]:
    async with app_client(app) as client:
        response = await client.get("/openapi.json")  # no credentials: the document is public
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    found: dict[str, Any] = response.json()
    return found


def _mounted(app: Starlette) -> set[tuple[str, str]]:
    pairs = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: document this kind of route too"
        pairs |= {(route.path, m.lower()) for m in (route.methods or {"GET"}) - {"HEAD"}}
    return pairs


async def test_the_document_is_valid_openapi_3_1_and_matches_the_mounted_routes(app: Starlette) -> None:
    doc = await _document(app)
    validate(doc)  # raises on an invalid document
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    mounted = _mounted(app)
    assert documented - mounted == set(), "documented but not mounted"
    assert mounted - documented == set(), "mounted but not documented"
    assert {"/audit", "/metrics", "/healthz", "/readyz", "/openapi.json", "/hooks/codeship/{token}"} <= {
        p for p, _ in documented
    }
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            assert op["summary"] and op["responses"]
            assert {p["name"] for p in op.get("parameters", []) if p["in"] == "path"} == names, path
    # The webhook operations say what a sender needs, not how the endpoint is built.
    hook = doc["paths"]["/hooks/codeship"]["post"]
    assert hook["summary"].endswith("verify, parse, match and durably accept one delivery.")
    assert "description" not in hook


async def test_every_operator_parameter_is_listed_with_its_limits_and_operator_routes_need_the_token(
    app: Starlette,
) -> None:
    doc = await _document(app)
    operator = 0
    for route in app.routes:
        assert isinstance(route, Route)
        spec = getattr(route.endpoint, "query_spec", None)
        for method in (route.methods or {"GET"}) - {"HEAD"}:
            op = doc["paths"][route.path][method.lower()]
            listed = {p["name"]: p["schema"] for p in op.get("parameters", []) if p["in"] == "query"}
            if spec is None:
                assert "security" not in op, route.path
                continue
            operator += 1
            assert op["security"] == [{"admin": []}], route.path
            assert set(listed) == set(spec), route.path
            for name, kind in spec.items():
                if isinstance(kind, Count):
                    assert (listed[name]["minimum"], listed[name]["maximum"]) == (kind.low, kind.high)
                if isinstance(kind, Cursor):
                    assert re.fullmatch(listed[name]["pattern"].strip("^$"), "1700000000000-3")
                    assert bool(re.fullmatch(listed[name]["pattern"].strip("^$"), "+")) == kind.latest
    assert operator >= 7
    readyz = doc["paths"]["/readyz"]["get"]
    assert [p["name"] for p in readyz["parameters"]] == ["workers"]
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    hook = doc["paths"]["/hooks/codeship"]["post"]
    assert [p["name"] for p in hook["parameters"]] == ["token"]


async def test_docs_is_a_self_contained_page_listing_every_path(app: Starlette) -> None:
    doc = await _document(app)
    async with app_client(app) as client:
        page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in doc["paths"]:
        assert path in page.text
    assert "<script" not in page.text.lower()
    assert not re.search(r"(src|href)=[\"']?https?:", page.text), "no CDN, nothing from another host"


async def test_a_route_added_to_the_app_appears_in_the_document(app: Starlette) -> None:
    """Generated from the routes: a new route is documented without editing a table."""

    async def extra(request: Any) -> httpx.Response:
        """GET /extra: a route mounted after the fact."""
        raise AssertionError("not called")

    app.router.routes.append(Route("/extra/{thing}", extra))
    doc = await _document(app)
    assert doc["paths"]["/extra/{thing}"]["get"]["summary"] == "GET /extra: a route mounted after the fact."
    validate(doc)
