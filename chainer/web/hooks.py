"""The webhook endpoints (DESIGN §3): ``POST /hooks/<provider>`` and ``POST /hooks/<provider>/<token>``.

Transport only: the content type and the size cap are checked here, everything else is
``chainer.intake``'s, and its ``Outcome`` becomes the HTTP answer in ``status_of``, the one place
that maps outcomes to status codes.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chainer.errors import WebhookError
from chainer.intake import Outcome
from chainer.web.common import answer, check_content_type, error, read_body, state

PROVIDERS = ("codeship", "circleci")  # the providers that post webhooks, each under /hooks/<name>
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
    return answer(status, outcome.body(), headers)


async def receive_webhook(request: Request) -> Response:
    """POST /hooks/{provider}[/{token}]: verify, parse, match and durably accept one delivery."""
    web = state(request)
    provider = request.url.path.split("/")[2]
    intake = web.intake
    if intake is None:
        return error(503, "the store is not ready")
    remote = request.client.host if request.client else None
    try:
        check_content_type(request)
        body = await read_body(request, web.settings.max_body_bytes)
    except WebhookError as exc:
        return reply(await intake.reject(provider, exc, remote))
    token = request.path_params.get("token") or request.query_params.get("token")
    return reply(await intake.receive(provider, request.headers, body, token, remote))


def routes(providers: Iterable[str] = PROVIDERS) -> list[Route]:
    """The webhook routes of ``providers``: each with the token as a path segment or without."""
    return [
        Route(f"/hooks/{provider}{suffix}", receive_webhook, methods=["POST"])
        for provider in providers
        for suffix in ("", "/{token}")
    ]
