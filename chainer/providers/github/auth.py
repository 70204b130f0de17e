"""GitHub App authentication (shared/reference/more-providers.md §1.7): JWT → installation → installation token.

The App signs a short JWT (RS256, ``iss`` = the App id, ``iat`` backdated 60 s, ``exp`` under 10 minutes)
with its private key; with it, chainer looks up the installation of the repository's owner
(``GET /repos/{owner}/{repo}/installation``) and mints an installation token
(``POST /app/installations/{id}/access_tokens``), which the API calls then carry as a bearer token.

Tokens are cached per installation until shortly before their ``expires_at`` (an hour), installations per
owner, and both are shared by concurrent actions: one lock per owner, so ten actions for one owner make one
look-up and one mint between them, and when that fails the ones that waited get the same error instead of
trying again one by one. ``token(..., stale=t)`` drops a token GitHub refused (401) and mints a new one.
Every token is scrubbed from messages and records from the moment it is minted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from chainer.errors import DownstreamError, PermanentDownstreamError
from chainer.providers.github.facts import (
    ACCEPT,
    API_VERSION,
    APP_VARIABLES,
    INSTALLATION_TOKEN_MARGIN_S,
    JWT_BACKDATE_S,
    JWT_LIFETIME_S,
)
from chainer.providers.http import Api, json_body
from chainer.settings import Settings


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    installation: int
    valid_until: float


@dataclass(slots=True)
class _Owner:
    """What is known about one owner's installation, and who is fetching it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    installation: int | None = None
    done: int = 0  # fetches finished, so a waiter can tell that one ended (and failed) while it queued
    error: DownstreamError | None = None


def parse_expiry(value: Any) -> float | None:
    """An ISO 8601 ``expires_at`` (``2026-11-20T11:00:00Z``) as unix seconds; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class AppTokens:
    """Installation tokens of the configured GitHub App, per repository owner (see the module docstring).

    ``api`` sends the App's own requests (look-ups and mints, all ``safe``); ``base`` is the REST base URL.
    """

    def __init__(self, settings: Settings, api: Api, *, clock: Callable[[], float]) -> None:
        if not settings.github_app_id or not settings.github_app_private_key:
            raise ValueError("AppTokens needs CHAINER_GITHUB_APP_ID and CHAINER_GITHUB_APP_PRIVATE_KEY")
        self.app_id = settings.github_app_id
        self._pem = settings.github_app_private_key
        self._key: RSAPrivateKey | None = None
        self._api = api
        self._base = settings.github_url
        self._clock = clock
        self._owners: dict[str, _Owner] = {}
        self._tokens: dict[int, _Token] = {}
        self.minted = 0  # installation tokens minted so far (the start-up log and tests read it)

    def jwt(self) -> str:
        """A fresh App JWT: RS256, ``iat`` 60 s in the past, ``exp`` 9 minutes ahead, ``iss`` the App id."""
        if self._key is None:
            try:
                key = load_pem_private_key(self._pem.reveal().encode(), password=None)
            except (ValueError, TypeError):
                key = None
            if not isinstance(key, RSAPrivateKey):
                raise PermanentDownstreamError(f"the GitHub App private key does not load (check {APP_VARIABLES})")
            self._key = key
        now = int(self._clock())
        claims = {"iat": now - JWT_BACKDATE_S, "exp": now + JWT_LIFETIME_S, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def headers(self) -> dict[str, str]:
        """The headers of a request the App itself makes (bearer JWT)."""
        return {"Authorization": f"Bearer {self.jwt()}", "Accept": ACCEPT, "X-GitHub-Api-Version": API_VERSION}

    async def token(self, owner: str, repo: str, *, stale: str | None = None) -> str:
        """An installation token for ``owner`` (found through ``owner/repo``); a new one if ``stale`` was refused."""
        state = self._owners.setdefault(owner.casefold(), _Owner())
        done = state.done
        async with state.lock:
            cached = self._tokens.get(state.installation) if state.installation is not None else None
            if cached is not None and cached.value != stale and self._clock() < cached.valid_until:
                return cached.value
            if state.error is not None and state.done != done:  # it failed while we waited
                raise state.error.copy()
            if stale is not None and cached is not None and cached.value == stale:
                # Refused before its time: the App may have been reinstalled, so look the installation up again.
                del self._tokens[cached.installation]
                state.installation = None
            try:
                if state.installation is None:
                    state.installation = await self._installation(owner, repo)
                minted = await self._mint(state.installation)
            except DownstreamError as exc:
                state.error = exc
                raise
            finally:
                state.done += 1
            state.error = None
            self._tokens[minted.installation] = minted
            return minted.value

    async def _installation(self, owner: str, repo: str) -> int:
        url = f"{self._base}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/installation"
        response = await self._api.send("GET", url, headers=self.headers(), safe=True, hand_back=(404,))
        if response.status_code == 404:
            raise PermanentDownstreamError(
                f"the GitHub App {self.app_id} is not installed on {owner}/{repo} (GitHub answered 404 to "
                "GET /repos/{owner}/{repo}/installation): install it on that repository or its owner",
                status=404,
            )
        data = json_body(response)
        installation = data.get("id") if isinstance(data, dict) else None
        if not isinstance(installation, int) or isinstance(installation, bool):
            raise PermanentDownstreamError(f"GitHub's installation of {owner}/{repo} has no numeric id")
        return installation

    async def _mint(self, installation: int) -> _Token:
        url = f"{self._base}/app/installations/{installation}/access_tokens"
        response = await self._api.send("POST", url, headers=self.headers(), safe=True)
        data = json_body(response)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(token, str) or not token:
            raise PermanentDownstreamError(
                f"GitHub's answer to the installation token request has no token (check {APP_VARIABLES})",
                status=response.status_code,
            )
        self._api.scrub.remember(f"github_installation_{installation}", token)
        expires = parse_expiry(data.get("expires_at"))
        valid_until = expires - INSTALLATION_TOKEN_MARGIN_S if expires is not None else self._clock()
        self.minted += 1
        return _Token(token, installation, valid_until)

    async def app(self) -> dict[str, Any]:
        """``GET /app``: the App as GitHub knows it (proves the id and key); raises DownstreamError when refused."""
        response = await self._api.send("GET", f"{self._base}/app", headers=self.headers(), safe=True)
        data = json_body(response)
        return data if isinstance(data, dict) else {}
