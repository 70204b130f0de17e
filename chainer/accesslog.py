"""chainer's access log: one line per request, with every credential in the path or query shown as ``***``.

uvicorn's own access log is turned off (chainer.logs, chainer.cli) because it prints the request line as
sent, and a webhook's request line carries the hook token (``/hooks/<provider>/<token>``, ``?token=``).
This pure ASGI middleware logs instead, on the logger ``chainer.access``:

- 1xx-3xx answers at DEBUG (nothing is formatted unless DEBUG is on: no per-request cost on success);
- 4xx at INFO, 5xx and unhandled exceptions at WARNING;
- a client that hangs up before its body has arrived (starlette's ``ClientDisconnect``) as one INFO line,
  ``client_disconnected``, instead of an error with a traceback: nobody is left to answer.

Redaction: the path below ``/hooks/<provider>/`` is replaced by ``***`` (and so is the provider segment when it
is not a registered provider: a URL registered without it puts the token there), the values of the query parameters
in ``chainer.providers.http.SECRET_QUERY_KEYS`` become ``***``, and every configured secret value left anywhere in
the line is scrubbed as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from urllib.parse import unquote_plus

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chainer import providers as registry
from chainer.providers.http import SECRET_QUERY_KEYS, Scrubber
from chainer.settings import Settings

# Not __name__: "chainer.access" is the access log's documented channel, which operators filter on.
log = logging.getLogger("chainer.access")

HOOKS_PREFIX = "/hooks/"


def redact_path(path: str, providers: Collection[str] | None = None) -> str:
    """``path`` with whatever may be a hook token replaced by ``***``.

    ``/hooks/<provider>/<token>`` → ``/hooks/<provider>/***`` for a registered provider (or one of
    ``providers``); ``/hooks/<anything else>`` → ``/hooks/***``.
    """
    if not path.startswith(HOOKS_PREFIX):
        return path
    provider, sep, _ = path[len(HOOKS_PREFIX) :].partition("/")
    if provider not in (registry.PROVIDERS if providers is None else providers):
        return HOOKS_PREFIX + "***"
    return f"{HOOKS_PREFIX}{provider}/***" if sep else path


def redact_query(query: str, keys: Collection[str] = SECRET_QUERY_KEYS) -> str:
    """A raw query string with the value of every credential parameter (name matched case-insensitively,
    after percent-decoding) replaced by ``***``; everything else is kept as sent."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name = part.partition("=")[0]
        if unquote_plus(name).strip().lower() in keys:
            part = f"{name}=***"
        parts.append(part)
    return "&".join(parts)


def redact_target(path: str, query: str, scrub: Scrubber | None = None) -> str:
    """The request target as chainer logs it: path and query redacted, known secret values scrubbed."""
    target = redact_path(path)
    if query:
        target += "?" + redact_query(query)
    return scrub(target) if scrub is not None else target


def secret_values(settings: Settings) -> list[str]:
    """Every secret value in ``settings``: tokens, and each provider's webhook secrets, passwords, API keys."""
    values = (settings.hook_token, settings.admin_token, *registry.secrets(settings))
    return [value.reveal() for value in values if value]


class AccessLog:
    """ASGI middleware writing chainer's access log (see the module docstring); ``secrets`` are scrubbed too."""

    def __init__(self, app: ASGIApp, secrets: Iterable[str] = ()) -> None:
        self.app = app
        self.scrub = Scrubber(secrets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            if status:  # the answer had begun: not a hang-up while the body was read
                raise
            if log.isEnabledFor(logging.INFO):
                log.info("client_disconnected", extra=self._fields(scope, None, started))
            return
        except Exception:
            if log.isEnabledFor(logging.WARNING):
                log.warning("request_failed", extra=self._fields(scope, status or 500, started))
            raise
        level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "request", extra=self._fields(scope, status, started))

    def _fields(self, scope: Scope, status: int | None, started: float) -> dict[str, object]:
        query = scope.get("query_string", b"").decode("latin-1")
        client = scope.get("client")
        fields: dict[str, object] = {
            "method": scope.get("method", ""),
            "path": redact_target(scope.get("path", ""), query, self.scrub),
        }
        if status is not None:
            fields["status"] = status
        fields["ms"] = round((time.perf_counter() - started) * 1000, 1)
        if client:
            fields["client"] = client[0]
        return fields
