"""The registry drives everything: a provider registered at run time gets its hook, its parser, its place in the
catalogue, schema and explain, its client and its lineage keys; a name nobody registered is refused everywhere.

``FakeCI`` is a third provider built only on ``chainer.providers.base``, registered through the public registry
API (``providers.register``) and removed again after each test, the way the next real provider will be added.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from chainer import lineage, providers
from chainer.app import create_app
from chainer.catalogue import ActionSpec, Param
from chainer.cli import main
from chainer.errors import AuthenticationError, PermanentDownstreamError, UnknownProviderError
from chainer.events import BuildEvent, make_event_id
from chainer.explain import explain
from chainer.jobs import run_action
from chainer.providers import Downstream
from chainer.providers.base import (
    Hook,
    HookAuth,
    Ignored,
    LineageKey,
    Provider,
    build_and_ref_keys,
    repo_of,
    same_provider,
)
from chainer.providers.http import BeforeEffect, CallResult, Scrubber, Throttle
from chainer.providers.payload import decode_json_object, need_int, need_str, opt_str
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests.helpers import job_ctx, parse_rules, rules_schema

HOOK = "hook-token-for-fakeci"
ADMIN = "admin-token"
SETTINGS = Settings(hook_token=Secret(HOOK), admin_token=Secret(ADMIN), circleci_webhook_secrets=(Secret("whsec"),))
JSON = {"content-type": "application/json"}
# A CircleCI legacy build payload: unsigned, accepted at /hooks/circleci/<token>.
LEGACY = (Path(__file__).resolve().parents[1] / "data" / "payloads" / "circleci_legacy_build.json").read_bytes()
RULES = """
version: 1
rules:
  - name: rebuild-on-failure
    when: {provider: fakeci, status: failed}
    then:
      - fakeci.rebuild: {}
"""


class FakeClient:
    """Records each action it is asked to run and answers with a new build number."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def execute(
        self,
        action: str,
        params: Mapping[str, Any],
        event: BuildEvent,
        *,
        before_effect: BeforeEffect | None = None,
    ) -> CallResult:
        if before_effect is not None:
            await before_effect()
        self.calls.append((action, dict(params)))
        number = str(100 + len(self.calls))
        return CallResult(201, number, {"build": number}, {"method": "POST", "url": "fakeci://rebuild", "body": None})

    async def check(self) -> list[str]:
        return ["fakeci is a test double"]


class FakeCI(Provider):
    """A token-authenticated CI whose webhook says ``{"job", "number", "result", "branch"}``."""

    name = "fakeci"
    title = "FakeCI"
    statuses = MappingProxyType({"SUCCESS": "success", "FAILURE": "failed", "BUILDING": "running"})
    kinds = ("build",)
    actions = (
        ActionSpec(
            "fakeci.rebuild",
            "fakeci",
            (Param("job", (str,), True, same_provider("fakeci", lambda e: e.project), "the job to build again"),),
            "Build a FakeCI job again.",
        ),
    )

    def __init__(self) -> None:
        self.clients: list[FakeClient] = []
        self.parsed = 0

    def parse(self, headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
        if not auth.token_valid():
            raise AuthenticationError("FakeCI deliveries carry the hook token (/hooks/fakeci/<token>)")
        return self.parse_unverified(headers, body)

    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        self.parsed += 1
        data = decode_json_object(body)
        if data.get("ping"):
            return Ignored("FakeCI ping", "ping")
        job, number, result = need_str(data, "job"), need_int(data, "number"), need_str(data, "result")
        key = f"fakeci:{job}:{number}:{result}"
        return BuildEvent(
            provider=self.name,
            kind="build",
            event_id=make_event_id(self.name, key),
            project=job,
            status=self.status(result),
            raw_status=result,
            branch=opt_str(data, "branch"),
            build_id=number,
            dedupe_keys=(key,),
            raw=data,
        )

    def client(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        scrub: Scrubber,
        clock: Callable[[], float],
        redis: Redis | None = None,
        throttle: Throttle | None = None,
    ) -> FakeClient:
        client = FakeClient()
        self.clients.append(client)
        return client

    def secrets(self, settings: Settings) -> list[Secret]:
        return []

    def event_keys(self, event: BuildEvent) -> list[LineageKey]:
        return build_and_ref_keys(event)

    def target_keys(
        self, action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
    ) -> list[LineageKey]:
        return [LineageKey.build(self.name, repo_of(params["job"]), downstream_id)] if downstream_id else []


@pytest.fixture
def fakeci() -> Iterator[FakeCI]:
    """FakeCI in the registry for one test; the registry (and its catalogue) as before afterwards."""
    before = providers.names()
    provider = FakeCI()
    providers.register(provider)
    try:
        yield provider
    finally:
        providers.unregister(provider.name)
        assert providers.names() == before
        assert "fakeci.rebuild" not in providers.catalogue().actions


class FormCI(FakeCI):
    """FakeCI whose hook may also send ``application/x-www-form-urlencoded`` bodies (``payload=<json>``)."""

    name = "formci"
    title = "FormCI"
    hook = Hook(content_types=("application/x-www-form-urlencoded",))
    actions = ()

    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        if headers.get("content-type") == "application/x-www-form-urlencoded":
            body = parse_qs(body.decode())["payload"][0].encode()
        return super().parse_unverified(headers, body)


@pytest.fixture
def formci(fakeci: FakeCI) -> Iterator[FormCI]:
    """FormCI in the registry (beside FakeCI) for one test."""
    provider = FormCI()
    providers.register(provider)
    try:
        yield provider
    finally:
        providers.unregister(provider.name)


def delivery(result: str, number: int, job: str = "acme/api") -> bytes:
    return json.dumps({"job": job, "number": number, "result": result, "branch": "main"}).encode()


def test_the_builtin_providers_are_registered_once_in_order() -> None:
    assert providers.names() == ("codeship", "circleci", "github", "buildkite")
    assert providers.catalogue().providers == ("codeship", "circleci", "github", "buildkite")
    with pytest.raises(ValueError, match="already registered"):
        providers.register(providers.get("codeship"))
    with pytest.raises(ValueError, match="lower-case identifier"):
        providers.register(type("Bad", (FakeCI,), {"name": "Fake/CI"})())
    assert providers.names() == ("codeship", "circleci", "github", "buildkite")


async def test_a_registered_provider_is_served_parsed_executed_and_chained(fakeci: FakeCI, redis: Redis) -> None:
    """POST /hooks/fakeci/<token> goes through FakeCI's own parse, its rule queues its action, its client runs the
    action through Downstream, and the build that action started inherits the chain when it reports back."""
    assert providers.names() == ("codeship", "circleci", "github", "buildkite", "fakeci")
    store = Store(redis)
    app = create_app(SETTINGS, ruleset=parse_rules(RULES), store=store)  # the rules validate against the registry
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        refused = await client.post("/hooks/fakeci", content=delivery("FAILURE", 7), headers=JSON)
        assert refused.status_code == 401 and "FakeCI deliveries carry the hook token" in refused.json()["error"]
        ping = await client.post(f"/hooks/fakeci/{HOOK}", content=b'{"ping": true}', headers=JSON)
        assert ping.status_code == 202 and ping.json() == {"status": "ignored", "reason": "FakeCI ping"}
        failed = await client.post(f"/hooks/fakeci/{HOOK}", content=delivery("FAILURE", 7), headers=JSON)
        assert failed.status_code == 202, failed.text
        assert failed.json()["matched"] == ["rebuild-on-failure"] and failed.json()["queued"] == 1
        assert fakeci.parsed == 2  # the refused delivery was stopped before its body was read
        event_id = failed.json()["event_id"]

        async with httpx.AsyncClient() as http:
            downstream = Downstream(SETTINGS, http)
            assert "fakeci.rebuild" in downstream.actions
            assert await downstream.clients["fakeci"].check() == ["fakeci is a test double"]
            ctx = job_ctx(store, SETTINGS, downstream)
            assert await run_action(ctx, f"{event_id}:rebuild-on-failure:0") == "done"
        assert fakeci.clients[-1].calls == [("fakeci.rebuild", {"job": "acme/api"})]  # the default from the event

        rebuilt = await client.post(f"/hooks/fakeci/{HOOK}", content=delivery("SUCCESS", 101), headers=JSON)
        assert rebuilt.status_code == 202, rebuilt.text
        stored = json.loads((await store.get_event(rebuilt.json()["event_id"]))["event"])
        assert [link["event_id"] for link in stored["chain"]] == [event_id]  # found by FakeCI's own lineage key
        assert stored["provider"] == "fakeci" and stored["status"] == "success"

        explained = await client.post(
            "/explain",
            json={"provider": "fakeci", "payload": {"job": "acme/api", "number": 8, "result": "FAILURE"}},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert explained.status_code == 200, explained.text
        assert explained.json()["event"]["provider"] == "fakeci"
        assert explained.json()["actions"] == [
            {"rule": "rebuild-on-failure", "action": "fakeci.rebuild", "params": {"job": "acme/api"}}
        ]


def test_a_registered_provider_is_in_the_catalogue_schema_lint_and_explain(fakeci: FakeCI) -> None:
    catalogue = providers.catalogue()
    assert catalogue.providers == ("codeship", "circleci", "github", "buildkite", "fakeci")
    assert catalogue.kinds["fakeci"] == ("build",) and catalogue.title("fakeci") == "FakeCI"
    assert catalogue.actions["fakeci.rebuild"].provider == "fakeci"
    schema = json.dumps(rules_schema())
    assert '"fakeci.rebuild"' in schema and '"fakeci"' in schema
    ruleset = parse_rules(RULES)
    result = explain(ruleset, "fakeci", {}, delivery("FAILURE", 9))
    assert result["event"]["status"] == "failed" and result["actions"][0]["action"] == "fakeci.rebuild"
    assert fakeci.parsed == 1


def test_rules_naming_an_unregistered_provider_or_its_actions_are_refused() -> None:
    from chainer.errors import RulesError

    with pytest.raises(RulesError) as refused:
        parse_rules(RULES)
    text = "\n".join(refused.value.problems)
    assert "'fakeci' is not one of codeship, circleci, github, buildkite" in text
    assert "fakeci.rebuild" in text and "unknown action" in text


async def test_an_unknown_provider_is_refused_never_read_as_circleci(redis: Redis) -> None:
    """A valid CircleCI legacy delivery sent to /hooks/unknown is a 404, not a CircleCI event; explain, the CLI,
    Downstream and lineage refuse the name too."""
    body = LEGACY
    app = create_app(SETTINGS, ruleset=parse_rules("version: 1\nrules: []\n"), store=Store(redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        as_circleci = await client.post(f"/hooks/circleci/{HOOK}", content=body, headers=JSON)
        assert as_circleci.status_code == 202, as_circleci.text  # the same body is fine where it belongs
        for path in ("/hooks/unknown", f"/hooks/unknown/{HOOK}", "/hooks/CircleCI", "/hooks/"):
            answer = await client.post(path, content=body, headers=JSON)
            assert answer.status_code == 404, (path, answer.text)
        explained = await client.post(
            "/explain",
            json={"provider": "unknown", "body": body.decode()},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert explained.status_code == 400
        assert explained.json()["error"] == "provider: must be 'codeship' or 'circleci' or 'github' or 'buildkite'"
    known = r"\(known: codeship, circleci, github, buildkite\)"
    with pytest.raises(UnknownProviderError, match=rf"unknown provider 'unknown' {known}"):
        explain(parse_rules("version: 1\nrules: []\n"), "unknown", {}, body)
    with pytest.raises(UnknownProviderError):
        providers.get("")
    event = BuildEvent(
        provider="unknown", kind="build", event_id="evt_x", project="a/b", status="failed", raw_status="x"
    )
    with pytest.raises(UnknownProviderError):
        lineage.event_keys(event)
    async with httpx.AsyncClient() as http:
        with pytest.raises(PermanentDownstreamError, match=r"unknown action 'unknown\.rebuild'") as info:
            await Downstream(SETTINGS, http).execute("unknown.rebuild", {}, event)
    assert (info.value.provider, info.value.action) == (None, "unknown.rebuild")


def test_the_cli_explain_offers_the_registered_providers_only(tmp_path: Path) -> None:
    payload = tmp_path / "body.json"
    payload.write_bytes(LEGACY)
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n")
    refused = CliRunner().invoke(main, ["explain", "--provider", "unknown", str(payload), "--rules", str(rules)])
    assert (
        refused.exit_code == 2
        and "'unknown' is not one of 'codeship', 'circleci', 'github', 'buildkite'" in refused.output
    )
    accepted = CliRunner().invoke(main, ["explain", "--provider", "circleci", str(payload), "--rules", str(rules)])
    assert accepted.exit_code == 0, accepted.output


async def test_a_provider_hook_accepts_the_content_types_it_declares_and_others_still_get_415(
    formci: FormCI, redis: Redis
) -> None:
    """A provider whose Hook names the form content type gets form bodies; the JSON-only hooks still answer 415."""
    app = create_app(SETTINGS, ruleset=parse_rules(RULES), store=Store(redis))
    form = urlencode({"payload": delivery("FAILURE", 3).decode()}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        accepted = await client.post(f"/hooks/formci/{HOOK}", content=form, headers=headers)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["status"] == "accepted" and formci.parsed == 1
        as_json = await client.post(f"/hooks/formci/{HOOK}", content=delivery("FAILURE", 4), headers=JSON)
        assert as_json.status_code == 202 and formci.parsed == 2
        for path in (f"/hooks/fakeci/{HOOK}", f"/hooks/codeship/{HOOK}"):
            refused = await client.post(path, content=form, headers=headers)
            assert refused.status_code == 415, refused.text
            assert refused.json()["error"] == (
                "content type 'application/x-www-form-urlencoded' is not supported; send application/json"
            )
        plain = await client.post(f"/hooks/formci/{HOOK}", content=form, headers={"content-type": "text/plain"})
        assert plain.status_code == 415
        assert plain.json()["error"] == (
            "content type 'text/plain' is not supported; send application/json or application/x-www-form-urlencoded"
        )
