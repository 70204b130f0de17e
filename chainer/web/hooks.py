"""The webhook endpoints (DESIGN §3): ``POST /hooks/<provider>`` and ``POST /hooks/<provider>/<token>``.

Transport only: the content type (JSON, or another type the provider's ``Hook`` names) and the size
cap are checked here, everything else is ``chainer.intake``'s, and its ``Outcome`` becomes the HTTP
answer in ``status_of``, the one place that maps outcomes to status codes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chainer import metrics, providers
from chainer.errors import BodyTimeoutError, PayloadTooLargeError, WebhookError
from chainer.intake import Outcome
from chainer.providers.base import Provider
from chainer.web.common import answer, check_content_type, error, read_body, state

RETRY_AFTER_S = 5
_STATUS = {"accepted": 202, "duplicate": 200, "ignored": 202, "unavailable": 503}


def status_of(outcome: Outcome) -> int:
    """The HTTP status of an intake outcome; a rejection answers with its problem's status (4xx)."""
    if outcome.problem is not None:
        return outcome.problem.status
    return _STATUS[outcome.kind]


def reply(outcome: Outcome) -> Response:
    """The answer to a delivery; an unavailable store also says when to retry."""
    status = status_of(outcome)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if outcome.kind == "unavailable" else None
    if isinstance(outcome.problem, (PayloadTooLargeError, BodyTimeoutError)):
        headers = {"connection": "close"}  # the body was not read to its end: the connection cannot carry another
    return answer(status, outcome.body(), headers)


async def receive_webhook(request: Request) -> Response:
    """POST /hooks/{provider}[/{token}]: verify, parse, match and durably accept one delivery."""
    web = state(request)
    provider = request.url.path.split("/")[2]
    intake = web.intake
    if intake is None:
        metrics.WEBHOOKS.labels(provider, "unavailable").inc()
        return error(503, "the store is not ready")
    remote = request.client.host if request.client else None
    hook = providers.get(provider).hook
    started = time.perf_counter()
    try:
        check_content_type(request, hook.content_types)
        body = await read_body(request, web.settings.max_body_bytes)
    except WebhookError as exc:
        outcome = await intake.reject(provider, exc, remote)
    else:
        token = (request.path_params.get("token") or request.query_params.get("token")) if hook.token else None
        outcome = await intake.receive(provider, request.headers, body, token, remote)
    _count(provider, outcome, time.perf_counter() - started)
    return reply(outcome)


def _count(provider: str, outcome: Outcome, seconds: float) -> None:
    """The delivery's metrics: its outcome, its latency, and the rules it matched (names from rules.yaml)."""
    metrics.WEBHOOKS.labels(provider, outcome.kind).inc()
    metrics.ACCEPT_SECONDS.labels(provider).observe(seconds)
    for rule in outcome.matched if outcome.kind == "accepted" else ():
        metrics.RULE_MATCHES.labels(rule).inc()


def routes(registered: Mapping[str, Provider] | None = None) -> list[Route]:
    """``/hooks/<name>`` for each registered provider (default: the registry's), and ``/hooks/<name>/<token>``
    for those whose deliveries may carry the hook token in the URL."""
    return [
        Route(f"/hooks/{name}{suffix}", receive_webhook, methods=["POST"])
        for name, provider in (providers.PROVIDERS if registered is None else registered).items()
        for suffix in ("", "/{token}")
        if provider.hook.token or not suffix
    ]
