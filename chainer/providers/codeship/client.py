"""The Codeship client: API v2 and legacy v1 calls (shared/reference/providers.md §2, §3).

API v2 needs a short-lived token from ``POST /v2/auth`` (HTTP Basic). It is cached here until
``expires_at`` minus a minute, shared by concurrent callers through one lock (auth calls count
against the 60 requests/minute limit), and renewed once when an API call answers 401. Project
names and numeric ids are mapped to the UUIDs v2 wants from one paginated project listing.

Why ``codeship.restart_build`` without a ``build`` looks the build up (list builds, match commit and
branch) instead of ``POST .../builds`` with ``ref`` + ``commit_sha`` (providers.md §3.3, §3.6): the
lookup keeps restart semantics (on Basic the run lands in the same build uuid, so history and
lineage stay in one place) and fails visibly with "no build of ..." when the build cannot be
found, whereas create-with-commit_sha would quietly start a new build for a commit or branch the
project may never have built, on a guessed ``heads/<branch>`` ref.

API v1 (deprecated since 2018, Basic projects only) authenticates with ``?api_key=``; the key is
redacted from every URL, message and request record.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from chainer.errors import DownstreamError, PermanentDownstreamError
from chainer.events import BuildEvent
from chainer.providers.base import HandlerClient
from chainer.providers.codeship.parse import NAME
from chainer.providers.http import (
    Api,
    CallResult,
    Throttle,
    json_body,
    numeric_id,
    required_text,
)

TOKEN_MARGIN_S = 60.0
PER_PAGE = 50
MAX_PROJECT_PAGES = 100
MAX_BUILD_PAGES = 10
# What fails without each scope (providers.md §3.1: check the scopes at startup).
SCOPE_EFFECTS = {
    "build.write": "codeship.trigger_build and codeship.restart_build will be refused",
    "build.read": "codeship.restart_build cannot look up the event's build",
    "project.read": "project names and numeric ids cannot be resolved",
}
CREDENTIALS = "CHAINER_CODESHIP_USER / CHAINER_CODESHIP_PASSWORD"
V1_CREDENTIALS = "CHAINER_CODESHIP_API_KEY"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# A ref Codeship builds: heads/<branch> or tags/<tag> (a bare branch name starts nothing).
REF_PATTERN = re.compile(r"^(?:heads|tags)/\S+$")
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class _Session:
    token: str
    org_uuid: str
    org_name: str
    scopes: tuple[str, ...]
    valid_until: float


def _segment(value: str) -> str:
    return quote(value, safe="")


def _queued_at(build: Mapping[str, Any]) -> float:
    value = build.get("queued_at")
    if not isinstance(value, str):
        return -math.inf
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return -math.inf


class CodeshipClient(HandlerClient):
    """Executes the Codeship actions; see the module docstring for the token and lookups."""

    provider = NAME

    def setup(self, http: httpx.AsyncClient, throttle: Throttle | None) -> None:
        # v1 and v2 share the account's 60 requests a minute: one throttle for both.
        self._v2 = self._api(http, "Codeship", CREDENTIALS, throttle)
        self._v1 = self._api(http, "Codeship v1", V1_CREDENTIALS, throttle)
        self._base = f"{self._settings.codeship_url}/v2"
        self._session: _Session | None = None
        self._auth_lock = asyncio.Lock()
        self._auth_done = 0  # authentications finished, to tell waiters one ended while they queued
        self._auth_error: DownstreamError | None = None
        self._projects_lock = asyncio.Lock()
        self._by_name: dict[str, str] = {}
        self._by_id: dict[str, str] = {}
        self.handlers = {
            f"{NAME}.trigger_build": self.trigger_build,
            f"{NAME}.restart_build": self.restart_build,
            f"{NAME}.v1_restart_build": self.v1_restart_build,
        }

    def _api(self, http: httpx.AsyncClient, label: str, credentials: str, throttle: Throttle | None) -> Api:
        # A 403 that says "rate limit" is Codeship's way of saying 429 (providers.md pitfall 4).
        return Api(
            http,
            label=label,
            credentials=credentials,
            scrub=self._scrub,
            clock=self._clock,
            rate_limit_403=True,
            throttle=throttle,
        )

    async def check(self) -> list[str]:
        """The start-up check: ``check_auth`` when API v2 credentials are configured, else nothing to check."""
        if not self._settings.codeship_user:
            return []
        try:
            return await self.check_auth()
        except DownstreamError as exc:
            exc.about(NAME)
            raise

    # -- authentication -------------------------------------------------------------------------

    async def check_auth(self) -> list[str]:
        """Authenticate now (replacing any cached token) and report scopes the account lacks."""
        async with self._auth_lock:
            session = await self._renew()
        return [
            f"the Codeship account lacks the {scope} scope in organization {session.org_name!r}: {effect}"
            for scope, effect in SCOPE_EFFECTS.items()
            if scope not in session.scopes
        ]

    async def _current(self, stale: str | None = None) -> _Session:
        """The cached session, or a new one when it expired or its token is ``stale`` (answered 401).

        Concurrent callers share one authentication: those that waited for the lock use its session,
        or get its error again when it failed, instead of each sending their own auth call.
        """
        done = self._auth_done
        async with self._auth_lock:
            session = self._session
            if session is not None and session.token != stale and self._clock() < session.valid_until:
                return session
            failed = self._auth_error
            if failed is not None and self._auth_done != done:  # it failed while we waited
                raise failed.copy()
            return await self._renew()

    async def _renew(self) -> _Session:
        """Authenticate and remember the outcome; the caller holds the auth lock."""
        try:
            self._session = session = await self._authenticate()
        except DownstreamError as exc:
            self._auth_error = exc
            raise
        finally:
            self._auth_done += 1
        self._auth_error = None
        return session

    async def _authenticate(self) -> _Session:
        user, password = self._settings.codeship_user, self._settings.codeship_password
        if not user or not password:
            raise PermanentDownstreamError(f"Codeship API v2 needs credentials: set {CREDENTIALS}")
        response = await self._v2.send(
            "POST",
            f"{self._base}/auth",
            json={},
            headers=_JSON_HEADERS,
            auth=httpx.BasicAuth(user, password.reveal()),
            safe=True,
            hand_back=(401,),
        )
        if response.status_code == 401:
            raise PermanentDownstreamError(
                f"Codeship rejected the credentials (check {CREDENTIALS})",
                status=401,
                body=self._scrub(response.text)[:500],
            )
        data = json_body(response)
        if isinstance(data, dict) and data.get("error"):
            # Two-factor accounts get 200 + {"error": ...} (providers.md §3.1, pitfall 5).
            message = self._scrub(str(data["error"]))
            raise PermanentDownstreamError(
                f"Codeship authentication failed: {message}", status=response.status_code, body=message
            )
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(token, str) or not token:
            raise PermanentDownstreamError(
                "Codeship's auth answer has no access_token (check CHAINER_CODESHIP_URL)",
                status=response.status_code,
            )
        self._scrub.remember("codeship_token", token)
        expires_at = data.get("expires_at")
        if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
            valid_until = float(expires_at) - TOKEN_MARGIN_S
        else:  # no expiry given: use the token for this call only
            valid_until = self._clock()
        org = self._choose_org(data.get("organizations"))
        scopes = tuple(str(s) for s in org.get("scopes") or () if isinstance(s, str))
        return _Session(token, org["uuid"], org["name"], scopes, valid_until)

    def _choose_org(self, raw: Any) -> dict[str, Any]:
        orgs = [
            o
            for o in (raw if isinstance(raw, list) else [])
            if isinstance(o, dict) and isinstance(o.get("uuid"), str) and isinstance(o.get("name"), str)
        ]
        names = ", ".join(o["name"] for o in orgs) or "none"
        wanted = self._settings.codeship_org
        if wanted:
            for org in orgs:
                if org["name"].casefold() == wanted.casefold():
                    return org
            raise PermanentDownstreamError(
                f"CHAINER_CODESHIP_ORG={wanted!r} is not an organization of this Codeship account (available: {names})"
            )
        if len(orgs) == 1:
            return orgs[0]
        if not orgs:
            raise PermanentDownstreamError("the Codeship account belongs to no organization")
        raise PermanentDownstreamError(
            f"the Codeship account belongs to several organizations ({names}): set CHAINER_CODESHIP_ORG to one"
        )

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, int] | None = None, safe: bool = False
    ) -> httpx.Response:
        """One API v2 call with the bearer token; on 401 renew the token once and send again."""
        session = await self._current()
        url = f"{self._base}{path}"
        for renewed in (False, True):
            headers = {"Authorization": f"Bearer {session.token}", **_JSON_HEADERS}
            hand_back = () if renewed else (401,)
            response = await self._v2.send(
                method, url, json=json, params=params, headers=headers, safe=safe, hand_back=hand_back
            )
            if response.status_code != 401:
                break
            session = await self._current(stale=session.token)
        return response

    # -- projects and builds --------------------------------------------------------------------

    async def _project_uuid(self, org: str, project: str, event: BuildEvent) -> str:
        if _UUID.match(project):
            return project
        fallback = event.provider == NAME and event.project == project and event.project_id is not None
        found = self._lookup(project, event if fallback else None)
        if found is None:
            async with self._projects_lock:
                found = self._lookup(project, event if fallback else None)
                if found is None:
                    await self._list_projects(org)
                    found = self._lookup(project, event if fallback else None)
        if found is None:
            raise PermanentDownstreamError(f"Codeship project {project!r} not found in the organization")
        return found

    def _lookup(self, project: str, event: BuildEvent | None) -> str | None:
        found = self._by_id.get(project) if project.isdigit() else self._by_name.get(project.casefold())
        if found is None and event is not None:
            found = self._by_id.get(str(event.project_id))
        return found

    async def _pages(self, path: str, key: str, max_pages: int) -> AsyncGenerator[list[Any], None]:
        """The ``key`` lists of a paginated v2 listing, page by page, until ``total`` items were seen."""
        seen = 0
        for page in range(1, max_pages + 1):
            response = await self._call("GET", path, params={"page": page, "per_page": PER_PAGE}, safe=True)
            data = json_body(response)
            items = data.get(key) if isinstance(data, dict) else None
            if not isinstance(data, dict) or not isinstance(items, list):
                raise PermanentDownstreamError(f"Codeship's {key} list is not the expected JSON")
            yield items
            seen += len(items)
            total = data.get("total")
            if not items or (seen >= total if isinstance(total, int) else len(items) < PER_PAGE):
                return

    async def _list_projects(self, org: str) -> None:
        by_name: dict[str, str] = {}
        by_id: dict[str, str] = {}
        async for projects in self._pages(f"/organizations/{_segment(org)}/projects", "projects", MAX_PROJECT_PAGES):
            for item in projects:
                if isinstance(item, dict) and isinstance(item.get("uuid"), str):
                    if isinstance(item.get("name"), str):
                        by_name[item["name"].casefold()] = item["uuid"]
                    if item.get("id") is not None:
                        by_id[str(item["id"])] = item["uuid"]
        self._by_name, self._by_id = by_name, by_id

    async def _find_build(self, org: str, project_uuid: str, project: str, event: BuildEvent) -> str:
        if not event.commit or not event.branch:
            raise PermanentDownstreamError(
                f"codeship.restart_build: the event has no commit and branch to find the build of {project} by; "
                "give the build uuid as 'build'"
            )
        commit = event.commit.lower()
        matches: list[dict[str, Any]] = []
        seen = 0
        path = f"/organizations/{_segment(org)}/projects/{_segment(project_uuid)}/builds"
        async with contextlib.aclosing(self._pages(path, "builds", MAX_BUILD_PAGES)) as pages:
            async for builds in pages:
                seen += len(builds)
                matches += [
                    b
                    for b in builds
                    if isinstance(b, dict)
                    and isinstance(b.get("uuid"), str)
                    and str(b.get("commit_sha") or "").lower() == commit
                    and b.get("branch") == event.branch
                ]
                if matches:  # the list is newest first: the page holding a match holds the newest
                    break
        if not matches:
            scope = f" among its newest {seen} builds" if seen >= MAX_BUILD_PAGES * PER_PAGE else ""
            raise PermanentDownstreamError(f"no build of {project} at {event.commit} on {event.branch}{scope}")
        newest: str = max(matches, key=_queued_at)["uuid"]
        return newest

    # -- actions --------------------------------------------------------------------------------

    async def trigger_build(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``codeship.trigger_build``: ``POST …/projects/{uuid}/builds`` with ``{ref, commit_sha?}`` → 202."""
        action = "codeship.trigger_build"
        project = required_text(params, "project", action)
        ref = required_text(params, "ref", action)
        if not REF_PATTERN.match(ref):
            raise PermanentDownstreamError(
                f"{action}: ref {ref!r} must look like heads/<branch> or tags/<tag> (Codeship starts no build "
                "for a bare branch name)"
            )
        commit = params.get("commit") or None
        if commit is not None and not isinstance(commit, str):
            raise PermanentDownstreamError(f"{action}: argument 'commit' must be a string")
        org = (await self._current()).org_uuid
        project_uuid = await self._project_uuid(org, project, event)
        body: dict[str, Any] = {"ref": ref}
        if commit:
            body["commit_sha"] = commit
        path = f"/organizations/{_segment(org)}/projects/{_segment(project_uuid)}/builds"
        response = await self._call("POST", path, json=body)
        # 202 with an empty body and no build id (providers.md §3.3): never decode it.
        detail = {"project_uuid": project_uuid, "ref": ref, **({"commit_sha": commit} if commit else {})}
        return self._v2.result(response, body, None, detail)

    async def restart_build(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``codeship.restart_build``: ``POST …/builds/{uuid}/restart``; without ``build``, look the event's up."""
        action = "codeship.restart_build"
        project = required_text(params, "project", action)
        build = params.get("build") or None
        if build is not None and not isinstance(build, str):
            raise PermanentDownstreamError(f"{action}: argument 'build' must be a build uuid")
        org = (await self._current()).org_uuid
        project_uuid = await self._project_uuid(org, project, event)
        looked_up = build is None
        build_uuid = build or await self._find_build(org, project_uuid, project, event)
        path = f"/organizations/{_segment(org)}/projects/{_segment(project_uuid)}/builds/{_segment(build_uuid)}/restart"
        response = await self._call("POST", path)
        detail = {"project_uuid": project_uuid, "build": build_uuid, "looked_up": looked_up}
        return self._v2.result(response, None, None, detail)

    async def v1_restart_build(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``codeship.v1_restart_build``: ``POST /api/v1/builds/{id}/restart.json?api_key=…`` → ``{id, uuid}``."""
        action = "codeship.v1_restart_build"
        key = self._settings.codeship_api_key
        if not key:
            raise PermanentDownstreamError(f"{action} needs the Codeship API v1 key: set {V1_CREDENTIALS}")
        base = f"{self._settings.codeship_v1_url}/api/v1"
        headers = {"Accept": "application/json"}
        build = params.get("build")
        if build is None or build == "":
            project = numeric_id(params.get("project"), "project", action)
            branch = required_text(params, "branch", action)
            query = {"api_key": key.reveal(), "branch": branch}
            url = f"{base}/projects/{project}.json"
            response = await self._v1.send("GET", url, params=query, headers=headers, safe=True)
            data = json_body(response)
            builds = data.get("builds") if isinstance(data, dict) else None
            newest = [
                b
                for b in (builds if isinstance(builds, list) else [])
                if isinstance(b, dict) and b.get("id") is not None and b.get("branch", branch) == branch
            ]
            if not newest:
                raise PermanentDownstreamError(f"no build of Codeship project {project} on branch {branch}")
            build = newest[0]["id"]  # newest first (providers.md §2)
        build_id = numeric_id(build, "build", action)
        response = await self._v1.send(
            "POST", f"{base}/builds/{build_id}/restart.json", params={"api_key": key.reveal()}, headers=headers
        )
        data = json_body(response)
        answer: dict[str, Any] = data if isinstance(data, dict) else {}
        new_id, uuid = answer.get("id"), answer.get("uuid")
        if isinstance(new_id, int | str) and not isinstance(new_id, bool) and str(new_id):
            detail = {"restarted": build_id, "id": new_id, "uuid": uuid if isinstance(uuid, str) else None}
            return self._v1.result(response, None, str(new_id), detail)
        note = "Codeship answered without the new build id; the restart was accepted"
        return self._v1.result(response, None, None, {"restarted": build_id, "note": note})
