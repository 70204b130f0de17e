"""The Buildkite client: REST API v2 calls (shared/reference/more-providers.md §2.5, §2.6, §4.5).

Every call sends ``Authorization: Bearer <CHAINER_BUILDKITE_TOKEN>`` (Buildkite takes no other form) and JSON.
Pipelines are ``<org>/<pipeline-slug>``; both go into the path percent-encoded. Outcomes are classified by
``chainer.providers.http.Api`` except two answers Buildkite words its own way:

- ``429``: the wait is in ``RateLimit-Reset`` / ``RateLimit-User-Reset`` (seconds, not a date; the organisation
  and the token's user have separate budgets) or the body's ``reset``, not in ``Retry-After``;
- ``422``: ``{"message": "Validation Failed", "errors": [...]}``: the message and the errors both matter.

A build chainer creates carries the id of the event that caused it in its meta-data (``chainer:cause``);
Buildkite sends it back in every webhook of that build (lineage, and a way to recognise chainer's builds).

Reconciliation: when a create-build's answer is lost after it was sent (a timeout or a dropped connection:
the outcome is ambiguous), the client asks Buildkite before anything else happens: ``GET …/builds`` filtered
by branch, commit (when a SHA) and ``meta_data[chainer:cause]``. Exactly one build carrying this event's
cause is the success the lost answer would have been (its id recorded for lineage), so no second build is
created; none, several, or a failed look-up leave the outcome ambiguous (the dead-letter list, DESIGN §6).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from chainer.errors import (
    AmbiguousDownstreamError,
    DownstreamError,
    PermanentDownstreamError,
    TransientDownstreamError,
)
from chainer.events import BuildEvent
from chainer.providers.base import HandlerClient
from chainer.providers.buildkite.actions import PIPELINE, text_value
from chainer.providers.buildkite.facts import CAUSE_KEY, CREDENTIALS, NAME
from chainer.providers.http import (
    BODY_EXCERPT,
    Api,
    CallResult,
    Throttle,
    json_body,
    numeric_id,
    required_text,
    retry_after_seconds,
)

WRITE_SCOPE = "write_builds"
_SENT_BACK = ("id", "number", "web_url", "state", "branch", "commit")
_SHA = re.compile(r"[0-9a-f]{40}")


def _pipeline_path(params: Mapping[str, Any], action: str) -> str:
    """``organizations/{org}/pipelines/{slug}`` of the ``pipeline`` argument (``<org>/<pipeline-slug>``)."""
    pipeline = required_text(params, "pipeline", action)
    if not PIPELINE.fullmatch(pipeline) or any(p in (".", "..") for p in pipeline.split("/")):
        raise PermanentDownstreamError(f"{action}: pipeline {pipeline[:80]!r} is not <org>/<pipeline-slug>")
    org, slug = pipeline.split("/")
    return f"organizations/{quote(org, safe='')}/pipelines/{quote(slug, safe='')}"


def _text_map(params: Mapping[str, Any], name: str, action: str) -> dict[str, str] | None:
    """A mapping argument of text values (whole numbers become text); None when absent."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PermanentDownstreamError(f"{action}: argument {name!r} must be a mapping")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise PermanentDownstreamError(f"{action}: {name} keys must be non-empty text")
        flaw = text_value(item)
        if flaw is not None:
            raise PermanentDownstreamError(f"{action}: {name}.{key}: {flaw}")
        out[key] = str(item)
    return out


def _seconds(value: Any) -> float | None:
    """A non-negative finite number of seconds from a header or a JSON field; None otherwise."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def rate_limit_wait(response: httpx.Response, now: float) -> float | None:
    """How long Buildkite asks a 429 to wait: the reset of the exhausted budget (organisation or user).

    The budget is told by the body's ``scope`` (``rest`` or ``rest_user``) or by a ``…-Remaining: 0``
    header; failing both, the longest reset given. ``Retry-After`` counts when nothing else is there.
    """
    headers = response.headers
    data = json_body(response)
    body: Mapping[str, Any] = data if isinstance(data, dict) else {}
    budgets = {
        "rest": (headers.get("ratelimit-remaining"), _seconds(headers.get("ratelimit-reset"))),
        "rest_user": (headers.get("ratelimit-user-remaining"), _seconds(headers.get("ratelimit-user-reset"))),
    }
    exhausted = [reset for scope, (left, reset) in budgets.items() if body.get("scope") == scope or left == "0"]
    chosen = [s for s in exhausted if s is not None] or [s for _, s in budgets.values() if s is not None]
    if chosen:
        return max(chosen)
    reset = _seconds(body.get("reset"))
    return reset if reset is not None else retry_after_seconds(headers.get("retry-after"), now)


def _validation_text(response: httpx.Response) -> str:
    """Buildkite's message with its validation errors (``{"message", "errors": [...]}``)."""
    data = json_body(response)
    if not isinstance(data, dict):
        return " ".join(response.text.split())[:BODY_EXCERPT] or "(empty body)"
    raw_message = data.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    errors = data.get("errors")
    shown = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            shown.append(" ".join(str(v) for v in error.values() if isinstance(v, str | int)))
        else:
            shown.append(str(error))
    text = f"{message}: {'; '.join(shown)}" if shown else message
    return text[:BODY_EXCERPT] or json.dumps(data)[:BODY_EXCERPT]


class BuildkiteClient(HandlerClient):
    """Executes the Buildkite actions."""

    provider = NAME

    def setup(self, http: httpx.AsyncClient, throttle: Throttle | None) -> None:
        self._api = Api(
            http, label="Buildkite", credentials=CREDENTIALS, scrub=self._scrub, clock=self._clock, throttle=throttle
        )
        self._base = f"{self._settings.buildkite_url}/v2"
        self.handlers.update({f"{NAME}.create_build": self.create_build, f"{NAME}.rebuild": self.rebuild})

    async def check(self) -> list[str]:
        """The start-up check: ``GET /v2/access-token`` when a token is set; warns about missing scopes."""
        if not self._settings.buildkite_token:
            return []
        try:
            response = await self._send("GET", f"{self._base}/access-token", self._headers("check"), safe=True)
        except DownstreamError as exc:
            exc.about(NAME)
            raise
        data = json_body(response)
        scopes = data.get("scopes") if isinstance(data, dict) else None
        if not isinstance(scopes, list):
            return ["Buildkite answered GET /v2/access-token without a list of scopes; the token's scopes are unknown"]
        if WRITE_SCOPE in scopes:
            return []
        return [f"the Buildkite token ({CREDENTIALS}) lacks the scope {WRITE_SCOPE}: create_build and rebuild fail"]

    def _headers(self, action: str) -> dict[str, str]:
        token = self._settings.buildkite_token
        if not token:
            raise PermanentDownstreamError(f"{action} needs a Buildkite API token: set {CREDENTIALS}")
        return {"Authorization": f"Bearer {token.reveal()}", "Accept": "application/json"}

    async def create_build(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``buildkite.create_build``: ``POST /v2/organizations/{org}/pipelines/{slug}/builds`` → 201 build."""
        action = f"{NAME}.create_build"
        path = _pipeline_path(params, action)
        body: dict[str, Any] = {
            "commit": required_text(params, "commit", action),
            "branch": required_text(params, "branch", action),
        }
        message = params.get("message")
        if message is not None and not isinstance(message, str):
            raise PermanentDownstreamError(f"{action}: argument 'message' must be text")
        if message and message.strip():
            body["message"] = message
        env = _text_map(params, "env", action)
        if env:
            body["env"] = env
        meta_data = _text_map(params, "meta_data", action) or {}
        if CAUSE_KEY in meta_data:
            raise PermanentDownstreamError(f"{action}: meta_data {CAUSE_KEY!r} is chainer's own key")
        body["meta_data"] = {**meta_data, CAUSE_KEY: event.event_id}
        headers = self._headers(action)
        url = f"{self._base}/{path}/builds"
        try:
            response = await self._send("POST", url, headers, json=body)
        except AmbiguousDownstreamError as lost:
            return await self._find_created(url, headers, body, event.event_id, lost)
        return self._build_result(response, body, "the build was created")

    async def _find_created(
        self, url: str, headers: dict[str, str], body: dict[str, Any], cause: str, lost: AmbiguousDownstreamError
    ) -> CallResult:
        """The build a create whose answer was lost made, found by its ``chainer:cause``; else ``lost`` stands."""
        query = {"branch": body["branch"], f"meta_data[{CAUSE_KEY}]": cause}
        if _SHA.fullmatch(body["commit"]):
            query["commit"] = body["commit"]
        lookup = httpx.URL(url, params=query)
        try:
            response = await self._send("GET", url, headers, params=query, safe=True)
        except DownstreamError as exc:
            raise AmbiguousDownstreamError(
                f"{lost.message}; looking for the build failed: {exc.message}", status=lost.status
            ) from exc
        data = json_body(response)
        found = [
            build
            for build in (data if isinstance(data, list) else [])
            if isinstance(build, dict)
            and isinstance(build.get("meta_data"), dict)
            and build["meta_data"].get(CAUSE_KEY) == cause
            and isinstance(build.get("id"), str)
        ]
        where = f"GET {self._api.redact(lookup)}"
        if len(found) != 1:
            count = "no build" if not found else f"{len(found)} builds"
            raise AmbiguousDownstreamError(f"{lost.message}; {count} with {CAUSE_KEY}={cause} found by {where}")
        build = found[0]
        detail = {k: build[k] for k in _SENT_BACK if isinstance(build.get(k), int | str) and k != "id"}
        detail["reconciled"] = f"the answer was lost; the build it created was found by {where}"
        request = {"method": "POST", "url": self._api.redact(httpx.URL(url)), "body": body}
        return CallResult(response.status_code, build["id"], detail, request)

    async def rebuild(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``buildkite.rebuild``: ``PUT …/builds/{number}/rebuild`` → 200 with the new build."""
        action = f"{NAME}.rebuild"
        path = _pipeline_path(params, action)
        number = numeric_id(params.get("build"), "build", action)
        headers = self._headers(action)
        response = await self._send("PUT", f"{self._base}/{path}/builds/{number}/rebuild", headers)
        result = self._build_result(response, None, "the rebuild was accepted")
        result.detail["rebuild_of"] = int(number)
        return result

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        json: Any = None,
        safe: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``Api.send``, with Buildkite's 429 (wait for the reset) and 422 (message and errors) read here."""
        hand_back = (422, 429)
        response = await self._api.send(
            method, url, params=params, json=json, headers=headers, safe=safe, hand_back=hand_back
        )
        if response.status_code not in (422, 429):
            return response
        where = f"{self._api.label} {method} {self._api.scrub(response.request.url.path)}"
        text = self._api.scrub(_validation_text(response))
        body = self._api.scrub(response.text)[:BODY_EXCERPT]
        message = f"{where} answered {response.status_code}: {text}"
        if response.status_code == 429:
            wait = rate_limit_wait(response, self._clock())
            raise TransientDownstreamError(message, status=429, retry_after=wait, body=body)
        raise PermanentDownstreamError(message, status=422, body=body)

    def _build_result(self, response: httpx.Response, body: dict[str, Any] | None, accepted: str) -> CallResult:
        data = json_body(response)
        answer: dict[str, Any] = data if isinstance(data, dict) else {}
        detail = {k: answer[k] for k in _SENT_BACK if isinstance(answer.get(k), int | str) and k != "id"}
        build_id = answer.get("id")
        if isinstance(build_id, str) and build_id:
            return self._api.result(response, body, build_id, detail)
        detail["note"] = f"Buildkite answered without a build id; {accepted}"
        return self._api.result(response, body, None, detail)
