"""What every provider client shares (DESIGN §5, §6): one API's requests, their outcomes, and secret scrubbing.

A provider client (``chainer.providers.<name>``) makes the calls of an action over the shared, injected
``httpx.AsyncClient`` and returns a ``CallResult`` or raises one branch of ``DownstreamError``. No
retry loop lives here; retries belong to the job (``chainer.jobs``). Every request goes through
``Api.send``, which translates the outcome once, in ``Api._classify``:

    2xx                                        success (a 2xx without the expected id: success, id None)
    connect error, connect or pool timeout     Transient   nothing was sent
    429, 5xx                                   Transient   Retry-After honoured (seconds or HTTP date)
    403 that says "rate limit" (rate_limit_403) Transient  retry_after = seconds to the next minute
    read/write timeout, connection dropped     Ambiguous   sent, no answer (Transient for lookups/auth)
    other 3xx and 4xx, bad URL                 Permanent   message carries the provider's error text

shared/reference/arq-redis.md §4.4 calls 500/502/504 ambiguous; DESIGN §6 ("429, 5xx ... retried") is
the contract and wins, so every 5xx is Transient. A timeout on a GET lookup or on Codeship's auth
call is Transient too: those requests change nothing, so repeating them is always safe.

The same flag tells the job when the action starts to matter: ``execute(..., before_effect=hook)``
awaits ``hook()`` right before every request that is not ``safe`` (after the outbound throttle), so
the job marks its ledger ``calling`` only then, never during the look-ups that precede it. Every
request a provider client sends that changes nothing must therefore pass ``safe=True``.

Secrets (tokens, passwords, API keys, a provider's current access token) are scrubbed from every
message, error body and request record; query parameters that carry them are shown as ``***``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, overload
from urllib.parse import quote, quote_plus, urlencode

import httpx

from chainer import __version__
from chainer.errors import (
    AmbiguousDownstreamError,
    DownstreamError,
    PermanentDownstreamError,
    TransientDownstreamError,
)

# Not __name__: "chainer.downstream" is the logger operators know (and filter) for outbound requests.
log = logging.getLogger("chainer.downstream")

# Query parameters whose values are credentials (Codeship v1 ``api_key``, CircleCI ``circle-token``).
SECRET_QUERY_KEYS = frozenset({"api_key", "circle-token", "token", "access_token"})
BODY_EXCERPT = 500
ERROR_TEXT = 200

_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
_NEVER_SENDABLE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


@dataclass(frozen=True, slots=True)
class CallResult:
    """The outcome of an action that succeeded.

    ``status`` is the HTTP status of the call that did the work; ``downstream_id`` the id the
    provider gave the new pipeline, workflow or build (None when it gives none, as Codeship's 202);
    ``detail`` a small JSON-safe summary; ``request`` the method, secret-free URL and JSON body sent.
    """

    status: int
    downstream_id: str | None
    detail: dict[str, Any]
    request: dict[str, Any]


class Scrubber:
    """Replaces every known secret value (and its percent-encoded form) in a text with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._fixed = tuple(s for s in secrets if s)
        self._learned: dict[str, str] = {}

    def remember(self, name: str, value: str) -> None:
        """Scrub ``value`` from now on, in place of what was remembered under ``name`` before."""
        self._learned[name] = value

    def __call__(self, text: str) -> str:
        values = {*self._fixed, *(v for v in self._learned.values() if v)}
        for value in sorted(values, key=len, reverse=True):
            for form in {value, quote(value, safe=""), quote_plus(value, safe="")}:
                text = text.replace(form, "***")
        return text


def json_body(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when the body is empty or not JSON."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def required_text(params: Mapping[str, Any], name: str, action: str) -> str:
    """The non-empty string argument ``name``; PermanentDownstreamError when it is missing or not text."""
    value = params.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise PermanentDownstreamError(f"{action}: argument {name!r} is missing or empty")
    return value.strip()


def numeric_id(value: Any, name: str, action: str) -> str:
    """A non-negative integer id given as int or digits, as a string; PermanentDownstreamError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value.strip()))
    raise PermanentDownstreamError(f"{action}: argument {name!r} must be a numeric id, got {value!r}")


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header (delta seconds or HTTP date) as seconds from ``now``; None if absent or bad."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


# Called before every request of an API with its label; raises TransientDownstreamError (with
# retry_after) when a shared outbound limit says to wait. Nothing has been sent at that point.
Throttle = Callable[[str], Awaitable[None]]

# Awaited right before a request that can take effect (see the module docstring). Whatever it
# raises propagates unclassified and the request is not sent.
BeforeEffect = Callable[[], Awaitable[None]]
_before_effect: ContextVar[BeforeEffect | None] = ContextVar("chainer_before_effect", default=None)


@contextlib.contextmanager
def before_effects(hook: BeforeEffect | None) -> Iterator[None]:
    """Within the block, every ``Api.send`` of a request that is not ``safe`` awaits ``hook`` first."""
    token = _before_effect.set(hook)
    try:
        yield
    finally:
        _before_effect.reset(token)


class Api:
    """One provider API as seen from chainer: sends requests and classifies every outcome.

    ``label`` names the API in messages; ``credentials`` names the settings a 401/403 points at;
    ``rate_limit_403`` turns on Codeship's "403 means rate limited" rule (providers.md pitfall 4).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        label: str,
        credentials: str,
        scrub: Scrubber,
        clock: Callable[[], float],
        rate_limit_403: bool = False,
        throttle: Throttle | None = None,
    ) -> None:
        self._http = http
        self._throttle = throttle
        self.label = label
        self._credentials = credentials
        self.scrub = scrub
        self._clock = clock
        self._rate_limit_403 = rate_limit_403

    async def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        safe: bool = False,
        hand_back: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request; return a 2xx response (or one whose status is in ``hand_back``).

        ``safe`` marks a request that changes nothing (lookups, auth), so a timeout after sending is
        Transient instead of Ambiguous. Raises the classified DownstreamError for anything else.
        """
        try:
            target = httpx.URL(url, params=params)
        except httpx.InvalidURL as exc:
            message = f"{self.label} {method}: invalid URL ({self.scrub(str(exc))}): check the base URL setting"
            raise PermanentDownstreamError(message) from None
        if self._throttle is not None:
            await self._throttle(self.label)
        if not safe:
            before_effect = _before_effect.get()
            if before_effect is not None:
                await before_effect()
        try:
            response = await self._http.request(method, target, json=json, headers=headers, auth=auth)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self._log(method, target, None, type(exc).__name__)
            error = self._classify(method, target, exc, safe=safe)
            # The exception (and its request) may hold a query-string credential: do not chain it then.
            leaks = any(key in SECRET_QUERY_KEYS for key in target.params)
            raise error from (None if leaks else exc)
        self._log(method, target, response.status_code)
        if response.status_code in hand_back:
            return response
        failure = self._classify(method, target, response, safe=safe)
        if failure is not None:
            raise failure
        return response

    def _log(self, method: str, url: httpx.URL, status: int | None, error: str | None = None) -> None:
        """One DEBUG line per request, its URL redacted (httpx's own request log is kept off: it shows API keys)."""
        if log.isEnabledFor(logging.DEBUG):
            fields: dict[str, Any] = {"api": self.label, "method": method, "url": self.redact(url)}
            log.debug("downstream_request", extra=fields | ({"status": status} if error is None else {"error": error}))

    def result(
        self, response: httpx.Response, body: Any, downstream_id: str | None, detail: dict[str, Any]
    ) -> CallResult:
        """The CallResult of ``response``, recording the request without secrets."""
        request = {"method": response.request.method, "url": self.redact(response.request.url), "body": body}
        return CallResult(response.status_code, downstream_id, detail, request)

    def redact(self, url: httpx.URL) -> str:
        """``url`` as text with credential query values replaced by ``***`` and secrets scrubbed."""
        base = str(url.copy_with(query=None))
        if not url.query:
            return self.scrub(base)
        pairs = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in url.params.multi_items()]
        return self.scrub(f"{base}?{urlencode(pairs, safe='*/')}")

    @overload
    def _classify(self, method: str, url: httpx.URL, outcome: Exception, *, safe: bool) -> DownstreamError: ...
    @overload
    def _classify(
        self, method: str, url: httpx.URL, outcome: httpx.Response, *, safe: bool
    ) -> DownstreamError | None: ...
    def _classify(
        self, method: str, url: httpx.URL, outcome: httpx.Response | Exception, *, safe: bool
    ) -> DownstreamError | None:
        where = f"{self.label} {method} {self.scrub(url.path)}"
        if isinstance(outcome, Exception):
            name = type(outcome).__name__
            text = f"{name}: {self.scrub(str(outcome))}" if str(outcome) else name
            if isinstance(outcome, _NOTHING_SENT):
                return TransientDownstreamError(f"{where}: {text} (nothing was sent)")
            if isinstance(outcome, _NEVER_SENDABLE):
                return PermanentDownstreamError(f"{where}: {text} (check the base URL setting)")
            if safe:
                return TransientDownstreamError(f"{where}: {text} (a request without effect, safe to repeat)")
            return AmbiguousDownstreamError(f"{where}: {text} after the request was sent; it may have taken effect")
        status = outcome.status_code
        if 200 <= status < 300:
            return None
        if 400 <= status < 500:
            own = self._client_error(method, url, outcome)
            if own is not None:
                return own
        raw = outcome.content.decode("utf-8", "replace")
        clean = self.scrub(raw)  # before any cut, so no partial secret survives at an edge
        body = clean[:BODY_EXCERPT]
        text = self.scrub(_provider_text(clean))  # again: JSON escapes may hide a secret from the raw pass
        message = f"{where} answered {status}: {text}"
        retry_after = retry_after_seconds(outcome.headers.get("retry-after"), self._clock())
        if status == 429 or status >= 500:
            return TransientDownstreamError(message, status=status, retry_after=retry_after, body=body)
        if status == 403 and self._rate_limit_403 and "rate limit" in raw.lower():
            wait = 60.0 - self._clock() % 60.0
            return TransientDownstreamError(message, status=status, retry_after=retry_after or wait, body=body)
        if status in (401, 403):
            message += f" (check {self._credentials} and the account's permissions)"
        elif 300 <= status < 400:
            location = self.scrub(outcome.headers.get("location", ""))
            message = f"{where} answered {status}, a redirect to {location!r}: check the base URL setting"
        return PermanentDownstreamError(message, status=status, body=body)

    def _client_error(self, method: str, url: httpx.URL, response: httpx.Response) -> DownstreamError | None:
        """A 4xx answer as this API words it, or None for the common reading (a subclass's hook)."""
        return None


def _provider_text(raw: str) -> str:
    """The error text of an answer: Codeship ``errors`` joined, CircleCI ``message``, else the body's start."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e) for e in errors)[:BODY_EXCERPT]
        for key in ("message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:BODY_EXCERPT]
    text = " ".join(raw.split())[:ERROR_TEXT]
    return text or "(empty body)"


def default_http_client(job_timeout_s: float = 60.0) -> httpx.AsyncClient:
    """The process's shared client: explicit timeouts and pool limits, chainer's User-Agent, no redirects.

    Each timeout is at most a third of ``job_timeout_s``, so an action's requests (look-ups, then the call)
    end by the client's timeout, classified, before arq cancels the job and its outcome is lost.
    """
    part = job_timeout_s / 3
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=min(5.0, part), read=min(20.0, part), write=min(10.0, part), pool=min(5.0, part)),
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=30.0),
        headers={"User-Agent": f"chainer/{__version__}"},
        follow_redirects=False,
    )
