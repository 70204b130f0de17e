"""The operator page's sign-in: a server-side session behind an HttpOnly cookie, and CSRF tokens for its forms.

Signing in with ``CHAINER_ADMIN_TOKEN`` opens a session: a random id whose SHA-256 is a Redis key
(``keys.session``) living ``SESSION_S``, and the cookie ``chainer_session`` = ``<id>.<HMAC-SHA256 of the id under
the admin token>``, HttpOnly, SameSite=Strict, Secure over HTTPS, path ``/``. A request is signed in only while
both hold: the HMAC matches under the current token (rotating the token ends every session) and the key exists
(signing out deletes it, so a copy of the cookie stops working at once; it also ends after ``SESSION_S``). The
token itself is never stored in the browser nor put in a URL, and Redis holds only the id's digest.
Every state-changing form carries ``csrf``, an HMAC of the session cookie under the token (the sign-in form,
before there is a session, a random value also set as the ``chainer_signin`` cookie: double submit).
Requests with the bearer header need no CSRF token (a browser never adds that header by itself).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from chainer.errors import StoreUnavailableError
from chainer.store import keys
from chainer.web.common import state

SESSION_COOKIE = "chainer_session"
SIGNIN_COOKIE = "chainer_signin"
SESSION_S = 12 * 3600
Credential = Literal["cookie", "bearer"]
_ID_CHARS = 43  # secrets.token_urlsafe(32)


def _key(request: Request) -> bytes | None:
    token = state(request).settings.admin_token
    return None if token is None else token.reveal().encode()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _session_key(session_id: str) -> str:
    return keys.session(hashlib.sha256(session_id.encode()).hexdigest())


def _signed_id(request: Request) -> str | None:
    """The session id of the request's cookie when its HMAC holds under the current admin token."""
    key, value = _key(request), request.cookies.get(SESSION_COOKIE, "")
    session_id, _, mac = value.partition(".")
    if key is None or len(session_id) != _ID_CHARS or not session_id.isascii():
        return None
    return session_id if hmac.compare_digest(mac, _mac(key, f"session:{session_id}")) else None


def _redis(request: Request) -> Redis:
    store = state(request).store
    if store is None:
        raise StoreUnavailableError("the store is not ready")
    return store.redis


async def _guard(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc


async def new_session(request: Request) -> str:
    """Open a session for the signed-in operator (the admin token must be configured); the cookie's value."""
    key = _key(request)
    assert key is not None  # noqa: S101 (callers check the token first)
    session_id = secrets.token_urlsafe(32)
    await _guard(_redis(request).set(_session_key(session_id), "1", px=SESSION_S * 1000))
    return f"{session_id}.{_mac(key, f'session:{session_id}')}"


async def end_session(request: Request) -> None:
    """Close the request's session in Redis: its cookie, and every copy of it, stops working."""
    session_id = _signed_id(request)
    if session_id is not None:
        await _guard(_redis(request).delete(_session_key(session_id)))


async def session_valid(request: Request) -> bool:
    """Whether the request's session cookie is signed under the current admin token and still open in Redis
    (StoreUnavailableError when Redis cannot say)."""
    session_id = _signed_id(request)
    return session_id is not None and bool(await _guard(_redis(request).exists(_session_key(session_id))))


def token_matches(request: Request, given: str) -> bool:
    """Whether ``given`` is ``CHAINER_ADMIN_TOKEN`` (constant-time compare); never with no token configured."""
    key = _key(request)
    return key is not None and bool(given.strip()) and hmac.compare_digest(given.strip().encode(), key)


def bearer_problem(request: Request) -> str | None:
    """What is wrong with the request's ``Authorization: Bearer <CHAINER_ADMIN_TOKEN>``, or None when it holds."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return "missing bearer token (Authorization: Bearer <CHAINER_ADMIN_TOKEN>)"
    return None if token_matches(request, given) else "wrong bearer token"


def bearer_valid(request: Request) -> bool:
    """Whether the request carries ``Authorization: Bearer <CHAINER_ADMIN_TOKEN>``."""
    return bearer_problem(request) is None


async def credential(request: Request) -> Credential | None:
    """How the request is signed in: the bearer header, the session cookie, or not at all."""
    if bearer_valid(request):
        return "bearer"
    return "cookie" if await session_valid(request) else None


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's session (empty without one)."""
    key = _key(request)
    value = request.cookies.get(SESSION_COOKIE, "")
    return _mac(key, f"csrf:{value}") if key is not None and value else ""


def csrf_valid(request: Request, given: str) -> bool:
    expected = csrf_token(request)
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def signin_csrf(request: Request) -> str:
    """The sign-in form's CSRF value: the ``chainer_signin`` cookie's, or a new one (set it with ``set_cookies``)."""
    found = request.cookies.get(SIGNIN_COOKIE, "")
    return found if len(found) == 43 else secrets.token_urlsafe(32)


def signin_csrf_valid(request: Request, given: str) -> bool:
    found = request.cookies.get(SIGNIN_COOKIE, "")
    return len(found) == 43 and hmac.compare_digest(given.encode(), found.encode())


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """An HttpOnly, SameSite=Strict cookie for the whole site; Secure when the request came over HTTPS."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
