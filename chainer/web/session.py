"""The operator page's sign-in: a session cookie derived from the admin token, and CSRF tokens for its forms.

Signing in with ``CHAINER_ADMIN_TOKEN`` sets ``chainer_session``: ``<issued ms>.<HMAC-SHA256 of it under
the admin token>``, HttpOnly, SameSite=Strict, Secure over HTTPS, path ``/``, valid ``SESSION_S``. The
token itself is never stored in the browser nor put in a URL; rotating it ends every session.
Every state-changing form carries ``csrf``, an HMAC of the session under the token (the sign-in form,
before there is a session, a random value also set as the ``chainer_signin`` cookie: double submit).
Requests with the bearer header need no CSRF token (a browser never adds that header by itself).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from chainer.web.common import state

SESSION_COOKIE = "chainer_session"
SIGNIN_COOKIE = "chainer_signin"
SESSION_S = 12 * 3600
Credential = Literal["cookie", "bearer"]


def _key(request: Request) -> bytes | None:
    token = state(request).settings.admin_token
    return None if token is None else token.reveal().encode()


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def new_session(request: Request) -> str:
    """A fresh session value for the signed-in operator (the admin token must be configured)."""
    key = _key(request)
    assert key is not None  # noqa: S101 (callers check the token first)
    issued = int(time.time() * 1000)
    return f"{issued}.{_mac(key, f'session:{issued}')}"


def session_valid(request: Request) -> bool:
    """Whether the request carries a session cookie signed under the current admin token and not expired."""
    key, value = _key(request), request.cookies.get(SESSION_COOKIE, "")
    issued, _, mac = value.partition(".")
    if key is None or not issued.isascii() or not issued.isdigit() or len(issued) > 15:
        return False
    age_s = time.time() - int(issued) / 1000
    return -60 <= age_s <= SESSION_S and hmac.compare_digest(mac, _mac(key, f"session:{issued}"))


def bearer_valid(request: Request) -> bool:
    """Whether the request carries ``Authorization: Bearer <CHAINER_ADMIN_TOKEN>`` (constant-time compare)."""
    key = _key(request)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if key is None or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), key)


def credential(request: Request) -> Credential | None:
    """How the request is signed in: the bearer header, the session cookie, or not at all."""
    if bearer_valid(request):
        return "bearer"
    return "cookie" if session_valid(request) else None


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
