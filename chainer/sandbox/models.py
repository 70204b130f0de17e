"""The sandbox's records: what it was asked (``RecordedRequest``), what to answer (``ScriptedFault``), and the
emulated providers' objects (Codeship projects and builds, CircleCI pipelines and jobs) with their API shapes.

Plain data; ``chainer.sandbox.state.SandboxState`` holds and changes them. Shapes follow shared/reference/providers.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chainer.providers.circleci.facts import SHORT_VCS

_KEYWORD = re.compile(r"[A-Za-z_][\w.-]*")


def iso(ts: float, *, zulu: bool = False) -> str:
    """ISO-8601 with milliseconds: ``+00:00`` like Codeship, or ``Z`` like CircleCI."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if zulu else text


def fake_sha(*parts: object) -> str:
    """A stable 40-hex commit id for a branch head the sandbox has to invent."""
    return hashlib.sha1(":".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def edn(value: Any) -> str:
    """Just enough EDN for a CircleCI v1.1 job summary: maps with keyword keys, vectors, strings, numbers, nil."""
    if isinstance(value, dict):
        keys = [f":{k}" if _KEYWORD.fullmatch(k) else json.dumps(k) for k in value]
        return "{" + ", ".join(f"{k} {edn(v)}" for k, v in zip(keys, value.values(), strict=True)) + "}"
    if isinstance(value, list):
        return "[" + " ".join(edn(v) for v in value) + "]"
    return "nil" if value is None else json.dumps(value)  # strings, numbers and booleans read the same


def _opt_iso(ts: float | None, *, zulu: bool = False) -> str | None:
    return None if ts is None else iso(ts, zulu=zulu)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the sandbox answered.

    ``path`` is as sent (percent-escapes kept), ``headers`` has lower-case names as ASGI delivers them, and
    credentials are ``***``: the ``authorization`` and ``circle-token`` headers, ``api_key`` and ``circle-token``.
    """

    id: int
    time: float
    api: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int
    action: str | None


@dataclass(slots=True)
class ScriptedFault:
    """A canned answer for the next ``times`` requests to ``api`` whose path as sent contains ``path_contains``.

    With ``effect`` the request is handled as usual (it takes effect) and only its answer is held ``delay``
    seconds: the answer a client gives up on after sending (its read timeout) is lost, the build exists.
    """

    api: str
    status: int
    body: Any
    headers: dict[str, str]
    times: int
    delay: float
    path_contains: str
    effect: bool = False


@dataclass(eq=False, slots=True)
class CodeshipProject:
    """A Codeship project of the sandbox's organization; ``builds`` are kept oldest first."""

    id: int
    uuid: str
    name: str
    type: str
    org_uuid: str
    created_at: float
    builds: list[CodeshipBuild] = field(default_factory=list)

    def v2(self) -> dict[str, Any]:
        """The API v2 project object (keys as in codeship-go's projects fixtures)."""
        created = iso(self.created_at)
        body: dict[str, Any] = {
            "aes_key": None,
            "authentication_user": "Sandbox User",
            "created_at": created,
            "id": self.id,
            "name": self.name,
            "notification_rules": [],
            "organization_uuid": self.org_uuid,
            "repository_provider": "github",
            "repository_url": f"https://github.com/{self.name}",
            "ssh_key": "ssh-rsa sandbox",
            "team_ids": [],
            "type": self.type,
            "updated_at": created,
            "uuid": self.uuid,
        }
        if self.type == "basic":
            body.update(deployment_pipelines=[], environment_variables=[], setup_commands=[], test_pipelines=[])
        return body

    def v1(self, branch: str | None = None) -> dict[str, Any]:
        """The API v1 project object, builds newest first, optionally only those of ``branch``."""
        builds = [b.v1() for b in reversed(self.builds) if branch is None or b.branch == branch]
        return {"id": self.id, "uuid": self.uuid, "repository_name": self.name, "builds": builds}


@dataclass(eq=False, slots=True)
class CodeshipBuild:
    """A Codeship build; ``id`` is the numeric id webhooks and API v1 use, ``uuid`` the API v2 one."""

    id: int
    uuid: str
    project: CodeshipProject
    ref: str
    branch: str
    commit_sha: str
    message: str
    status: str
    queued_at: float
    finished_at: float | None

    def v2(self, base: str) -> dict[str, Any]:
        """The API v2 build object; ``base`` is the API root the links point at."""
        pro = self.project.type == "pro"
        own = f"{base}/v2/organizations/{self.project.org_uuid}/projects/{self.project.uuid}/builds/{self.uuid}"
        links = {"services": f"{own}/services", "steps": f"{own}/steps"} if pro else {"pipelines": f"{own}/pipelines"}
        return {
            "allocated_at": iso(self.queued_at) if pro else None,
            "branch": self.branch,
            "commit_message": self.message,
            "commit_sha": self.commit_sha,
            "finished_at": _opt_iso(self.finished_at),
            "links": links,
            "organization_uuid": self.project.org_uuid,
            "project_id": self.project.id,
            "project_uuid": self.project.uuid,
            "queued_at": iso(self.queued_at),
            "ref": self.ref,
            "status": self.status,
            "username": "sandbox",
            "uuid": self.uuid,
        }

    def v1(self) -> dict[str, Any]:
        """The API v1 build object (v1 says ``testing``/``error`` where v2 says ``initiated``/``failed``)."""
        return {
            "id": self.id,
            "uuid": self.uuid,
            "project_id": self.project.id,
            "status": {"initiated": "testing", "failed": "error"}.get(self.status, self.status),
            "branch": self.branch,
            "commit_id": self.commit_sha,
            "github_username": "sandbox",
            "message": self.message,
            "started_at": iso(self.queued_at),
            "finished_at": _opt_iso(self.finished_at),
            "debug_connection": None,
        }


@dataclass(eq=False, slots=True)
class CirclePipeline:
    """A CircleCI pipeline created through API v2, with the ids of its workflows (first = original)."""

    id: str
    slug: str
    number: int
    branch: str | None
    tag: str | None
    revision: str
    parameters: dict[str, Any]
    created_at: float
    workflow_ids: list[str] = field(default_factory=list)

    def created(self) -> dict[str, Any]:
        """The 201 body of ``POST /project/{slug}/pipeline``."""
        return {"id": self.id, "state": "created", "number": self.number, "created_at": iso(self.created_at, zulu=True)}

    def v2(self) -> dict[str, Any]:
        """The pipeline object of ``GET /pipeline/{id}`` and the project's pipeline list."""
        repo, at = f"https://github.com/{'/'.join(self.slug.split('/')[1:])}", iso(self.created_at, zulu=True)
        vcs: dict[str, Any] = {"provider_name": "GitHub", "origin_repository_url": repo, "target_repository_url": repo}
        vcs.update({"revision": self.revision, **({"tag": self.tag} if self.tag else {"branch": self.branch})})
        trigger = {"type": "api", "received_at": at, "actor": {"login": "sandbox", "avatar_url": None}}
        extra = {"errors": [], "project_slug": self.slug, "updated_at": at, "trigger_parameters": {}}
        return {**self.created(), **extra, "trigger": trigger, "vcs": vcs}


@dataclass(eq=False, slots=True)
class CircleJob:
    """A CircleCI API v1.1 job; ``build_num``, ``previous`` and ``queued_at`` are set when it is added."""

    vcs: str
    org: str
    repo: str
    branch: str
    revision: str
    build_parameters: dict[str, Any] | None
    status: str
    why: str
    retry_of: int | None = None
    build_num: int = 0
    previous: dict[str, Any] | None = None
    queued_at: float = 0.0
    tag: str | None = None

    def summary(self) -> dict[str, Any]:
        """The job summary v1.1 answers to trigger and retry calls."""
        short, num = SHORT_VCS[self.vcs], self.build_num
        return {
            "build_num": num,
            "build_url": f"https://circleci.com/{short}/{self.org}/{self.repo}/{num}",
            "vcs_url": f"https://{self.vcs}.com/{self.org}/{self.repo}",
            "username": self.org,
            "reponame": self.repo,
            "branch": self.branch,
            "vcs_revision": self.revision,
            "build_parameters": self.build_parameters,
            "why": self.why,
            "dont_build": None,
            "lifecycle": self.status,
            "outcome": None,
            "status": self.status,
            "retry_of": self.retry_of,
            "previous": self.previous,
            "queued_at": iso(self.queued_at, zulu=True),
            "vcs_tag": self.tag,
        }


@dataclass(eq=False, slots=True)
class BuildkitePipeline:
    """A Buildkite pipeline ``<org>/<slug>``; ``builds`` are kept oldest first, numbered per pipeline."""

    org: str
    slug: str
    id: str
    created_at: float
    builds: list[BuildkiteBuild] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.org}/{self.slug}"

    def v2(self, base: str) -> dict[str, Any]:
        """The pipeline object as builds embed it; ``base`` is the API root its ``url`` points at."""
        return {
            "id": self.id,
            "url": f"{base}/v2/organizations/{self.org}/pipelines/{self.slug}",
            "web_url": f"https://buildkite.com/{self.org}/{self.slug}",
            "name": self.slug,
            "slug": self.slug,
            "repository": f"git@github.com:{self.org}/{self.slug}.git",
            "created_at": iso(self.created_at, zulu=True),
        }


@dataclass(eq=False, slots=True)
class BuildkiteBuild:
    """A Buildkite build: what a create or rebuild call made, or what was seeded (``source`` says which)."""

    pipeline: BuildkitePipeline
    id: str
    number: int
    branch: str
    commit: str
    message: str
    env: dict[str, Any]
    meta_data: dict[str, Any]
    state: str
    source: str
    created_at: float
    rebuilt_from: BuildkiteBuild | None = None

    def v2(self, base: str) -> dict[str, Any]:
        """The REST build object (more-providers.md §2.3, §2.5): ids, number, URLs, state, meta-data."""
        pipeline = self.pipeline.v2(base)
        created = iso(self.created_at, zulu=True)
        finished = self.state in ("passed", "failed", "canceled", "skipped", "not_run")
        rebuilt = self.rebuilt_from
        return {
            "id": self.id,
            "url": f"{pipeline['url']}/builds/{self.number}",
            "web_url": f"{pipeline['web_url']}/builds/{self.number}",
            "number": self.number,
            "state": self.state,
            "blocked": False,
            "message": self.message,
            "commit": self.commit,
            "branch": self.branch,
            "env": dict(self.env),
            "source": self.source,
            "creator": {"id": "sandbox-user", "name": "Sandbox User", "email": "sandbox@example.org"},
            "created_at": created,
            "scheduled_at": created,
            "started_at": None,
            "finished_at": created if finished else None,
            "meta_data": dict(self.meta_data),
            "pull_request": None,
            "rebuilt_from": None
            if rebuilt is None
            else {"id": rebuilt.id, "number": rebuilt.number, "url": f"{pipeline['url']}/builds/{rebuilt.number}"},
            "pipeline": pipeline,
        }
