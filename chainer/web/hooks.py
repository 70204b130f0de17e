"""The webhook endpoints (DESIGN §3): ``POST /hooks/<provider>`` and ``POST /hooks/<provider>/<token>``.

Transport only: the content type (JSON, or another type the provider's ``Hook`` names) and the size
cap are checked here, everything else is ``chainer.intake``'s, and its ``Outcome`` becomes the HTTP
answer in ``status_of``, the one place that maps outcomes to status codes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from chainer import metrics, providers
from chainer.errors import BodyTimeoutError, PayloadTooLargeError, WebhookError
from chainer.intake import Outcome
from chainer.providers.base import Provider
from chainer.web.common import WebState, answer, check_content_type, error, receive_body

RETRY_AFTER_S = 5
_STATUS = {"accepted": 202, "duplicate": 200, "ignored": 202, "unavailable": 503}


def status_of(outcome: Outcome) -> int:
    """The HTTP status of an intake outcome; a rejection answers with its problem's status (4xx)."""
    if outcome.problem is not None:
        return outcome.problem.status
    return _STATUS[outcome.kind]


# A plain ASGI app under the routes (starlette takes an object that is not a function as one): the hot path of
# chainer, so no ``Request`` or ``Response`` is built around a delivery, and no per-request wrapper runs; the router,
# the access log and the error answers around it are the app's as for every route. Its docstring is the operation's
# summary in /openapi.json.
class WebhookEndpoint:
    """POST /hooks/{provider}[/{token}]: verify, parse, match and durably accept one delivery."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        web: WebState = scope["app"].state.chainer
        provider = scope["path"].split("/")[2]
        intake = web.intake
        if intake is None:
            _count(provider, "unavailable")
            await error(503, "the store is not ready")(scope, receive, send)
            return
        client = scope.get("client")
        remote = client[0] if client else None
        hook = providers.get(provider).hook
        headers = Headers(scope=scope)
        started = time.perf_counter()
        try:
            check_content_type(headers, hook.content_types)
            body = await receive_body(receive, headers, web.settings.max_body_bytes, web.settings.body_timeout_seconds)
        except WebhookError as exc:
            outcome = await intake.reject(provider, exc, remote)
        else:
            token = None
            if hook.token:
                token = scope["path_params"].get("token") or QueryParams(scope["query_string"]).get("token")
            outcome = await intake.receive(provider, headers, body, token, remote)
        _count(provider, outcome.kind, time.perf_counter() - started, outcome.matched)
        await reply(outcome)(scope, receive, send)


def reply(outcome: Outcome) -> Response:
    """The answer to a delivery; an unavailable store also says when to retry."""
    headers = {"retry-after": str(RETRY_AFTER_S)} if outcome.kind == "unavailable" else None
    if isinstance(outcome.problem, (PayloadTooLargeError, BodyTimeoutError)):
        headers = {"connection": "close"}  # the body was not read to its end: the connection cannot carry another
    return answer(status_of(outcome), outcome.body(), headers)


# prometheus-client's ``labels`` takes a lock and builds a key on every call; the children of fixed label values
# (provider names, outcomes, rule names) are looked up once and kept.
_webhooks = functools.cache(metrics.WEBHOOKS.labels)
_accept_seconds = functools.cache(metrics.ACCEPT_SECONDS.labels)
_rule_matches = functools.cache(metrics.RULE_MATCHES.labels)


def _count(provider: str, kind: str, seconds: float | None = None, matched: tuple[str, ...] = ()) -> None:
    """The delivery's metrics: its outcome, its latency, and the rules it matched (names from rules.yaml)."""
    _webhooks(provider, kind).inc()
    if seconds is not None:
        _accept_seconds(provider).observe(seconds)
    for rule in matched if kind == "accepted" else ():
        _rule_matches(rule).inc()


receive_webhook = WebhookEndpoint()


def routes(registered: Mapping[str, Provider] | None = None) -> list[Route]:
    """``/hooks/<name>`` for each registered provider (default: the registry's), and ``/hooks/<name>/<token>``
    for those whose deliveries may carry the hook token in the URL."""
    return [
        Route(f"/hooks/{name}{suffix}", receive_webhook, methods=["POST"], name="receive_webhook")
        for name, provider in (providers.PROVIDERS if registered is None else registered).items()
        for suffix in ("", "/{token}")
        if provider.hook.token or not suffix
    ]
