"""The sandbox's GitHub: repositories, workflows, runs, repository_dispatch events, one GitHub App and its tokens.

Plain data and synchronous, like ``chainer.sandbox.state``; ``chainer.sandbox.github`` turns requests into calls
here. Ids are counters so demos and tests repeat; installation tokens are random. Shapes follow
shared/reference/more-providers.md §1.6-§1.7. The App's JWTs are verified with the public key the sandbox is
given (``app_public_key``): without one, App authentication is refused as GitHub refuses an unknown key.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from chainer.providers.github.facts import MAX_CLIENT_PAYLOAD_KEYS, MAX_EVENT_TYPE, MAX_INPUTS

TOKEN_LIFETIME_S = 3600
MAX_JWT_LIFETIME_S = 600
APP_PERMISSIONS = {"actions": "write", "contents": "write", "metadata": "read"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def workflow_file(path: str) -> str:
    """``deploy.yml`` of ``.github/workflows/deploy.yml`` (or of a bare file name)."""
    return path.rsplit("/", 1)[-1]


@dataclass(eq=False, slots=True)
class GitHubWorkflow:
    id: int
    path: str
    name: str


@dataclass(eq=False, slots=True)
class GitHubRepo:
    id: int
    full_name: str
    default_branch: str = "main"
    workflows: list[GitHubWorkflow] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class GitHubRun:
    """A workflow run; a re-run keeps the id and counts ``run_attempt`` up."""

    id: int
    repo: GitHubRepo
    workflow: GitHubWorkflow
    head_branch: str | None
    head_sha: str
    event: str
    status: str
    conclusion: str | None
    run_number: int
    created_at: float
    updated_at: float
    run_attempt: int = 1
    inputs: dict[str, Any] = field(default_factory=dict)

    def links(self, base: str) -> dict[str, Any]:
        """The ``workflow_run_id``, ``run_url`` and ``html_url`` a dispatch answers with (``base``: the API root)."""
        return {
            "workflow_run_id": self.id,
            "run_url": f"{base}/repos/{self.repo.full_name}/actions/runs/{self.id}",
            "html_url": f"https://github.com/{self.repo.full_name}/actions/runs/{self.id}",
        }

    def v3(self, base: str) -> dict[str, Any]:
        """The workflow-run object of ``GET /repos/{owner}/{repo}/actions/runs/{id}`` (the fields chainer reads)."""
        return {
            "id": self.id,
            "name": self.workflow.name,
            "head_branch": self.head_branch,
            "head_sha": self.head_sha,
            "path": self.workflow.path,
            "run_number": self.run_number,
            "run_attempt": self.run_attempt,
            "event": self.event,
            "status": self.status,
            "conclusion": self.conclusion,
            "workflow_id": self.workflow.id,
            "url": f"{base}/repos/{self.repo.full_name}/actions/runs/{self.id}",
            "html_url": f"https://github.com/{self.repo.full_name}/actions/runs/{self.id}",
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "repository": {"id": self.repo.id, "full_name": self.repo.full_name},
        }


class GitHubState:
    """Everything the sandbox's GitHub knows. ``token`` is the personal access token it accepts; ``app_id`` and
    ``app_public_key`` (PEM) describe the one GitHub App, installed on every owner that has a repository here."""

    def __init__(
        self,
        *,
        token: str = "sandbox-github-token",  # noqa: S107 - the sandbox's published demo credential
        app_id: str = "1",
        app_public_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.clock = clock
        self.repos: dict[str, GitHubRepo] = {}
        self.runs: dict[int, GitHubRun] = {}
        self.dispatches: list[dict[str, Any]] = []
        self.installations: dict[str, int] = {}
        self._tokens: dict[str, tuple[int, float]] = {}
        self._next_repo, self._next_workflow, self._next_run, self._next_installation = 500000001, 161335, 30433642, 1

    # -- repositories, workflows, runs ------------------------------------------------------------

    def add_repo(self, full_name: str, *, id: int | None = None, default_branch: str = "main") -> GitHubRepo:
        """The repository ``owner/name`` (created when new; case-insensitive like GitHub)."""
        owner, sep, name = full_name.partition("/")
        if not owner or not sep or not name or "/" in name:
            raise ValueError(f"repository {full_name!r} is not owner/name")
        known = self.repos.get(full_name.casefold())
        if known is not None:
            return known
        number = id if id is not None else self._next_repo
        self._next_repo = max(self._next_repo, number + 1)
        repo = self.repos[full_name.casefold()] = GitHubRepo(number, full_name, default_branch)
        return repo

    def repo(self, owner: str, name: str) -> GitHubRepo | None:
        return self.repos.get(f"{owner}/{name}".casefold())

    def add_workflow(
        self, full_name: str, path: str, *, name: str | None = None, id: int | None = None
    ) -> GitHubWorkflow:
        """The workflow ``path`` (``.github/workflows/x.yml`` or ``x.yml``) of a repository, created when new."""
        repo = self.add_repo(full_name)
        path = path if "/" in path else f".github/workflows/{path}"
        for known in repo.workflows:
            if known.path == path or (id is not None and known.id == id):
                return known
        number = id if id is not None else self._next_workflow
        self._next_workflow = max(self._next_workflow, number + 1)
        workflow = GitHubWorkflow(number, path, name or workflow_file(path).rsplit(".", 1)[0])
        repo.workflows.append(workflow)
        return workflow

    def workflow(self, repo: GitHubRepo, ref: str) -> GitHubWorkflow | None:
        """A workflow by numeric id or file name, as the dispatch endpoint takes it."""
        return next((w for w in repo.workflows if ref in (str(w.id), workflow_file(w.path))), None)

    def add_run(
        self,
        full_name: str,
        run_id: int,
        *,
        workflow: str = ".github/workflows/ci.yml",
        workflow_id: int | None = None,
        head_branch: str | None = "main",
        head_sha: str = "0" * 40,
        status: str = "completed",
        conclusion: str | None = "failure",
        run_attempt: int = 1,
        event: str = "push",
    ) -> GitHubRun:
        """Make the run ``run_id`` known (so it can be re-run); a run the sandbox has already stays as it is."""
        known = self.runs.get(run_id)
        if known is not None:
            return known
        wf = self.add_workflow(full_name, workflow, id=workflow_id)
        now = self.clock()
        run = GitHubRun(
            run_id,
            self.add_repo(full_name),
            wf,
            head_branch,
            head_sha,
            event,
            status,
            conclusion,
            self._run_number(wf),
            now,
            now,
            run_attempt,
        )
        self.runs[run_id] = run
        self._next_run = max(self._next_run, run_id + 1)
        return run

    def _run_number(self, workflow: GitHubWorkflow) -> int:
        return 1 + sum(1 for r in self.runs.values() if r.workflow is workflow)

    def dispatch_workflow(self, repo: GitHubRepo, workflow: GitHubWorkflow, ref: Any, inputs: Any) -> GitHubRun:
        """What ``POST …/dispatches`` does: a queued ``workflow_dispatch`` run of ``ref``. ValueError: 422."""
        if not isinstance(ref, str) or not ref.strip():
            raise ValueError('Invalid request.\n\n"ref" wasn\'t supplied.')
        if inputs is not None and not isinstance(inputs, dict):
            raise ValueError("Invalid request.\n\nFor 'properties/inputs', is not an object.")
        if len(inputs or {}) > MAX_INPUTS:
            raise ValueError(f"you can only provide a maximum of {MAX_INPUTS} inputs")
        branch = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        now = self.clock()
        sha = f"{self._next_run:040x}"[-40:]
        run = GitHubRun(
            self._next_run,
            repo,
            workflow,
            branch,
            sha,
            "workflow_dispatch",
            "queued",
            None,
            self._run_number(workflow),
            now,
            now,
            inputs=dict(inputs or {}),
        )
        self.runs[run.id] = run
        self._next_run += 1
        return run

    def repository_dispatch(self, repo: GitHubRepo, event_type: Any, client_payload: Any) -> None:
        """What ``POST /repos/{o}/{r}/dispatches`` does: record the event (no run id). ValueError: 422."""
        if not isinstance(event_type, str) or not 1 <= len(event_type) <= MAX_EVENT_TYPE:
            raise ValueError(f"Invalid request.\n\nevent_type must be 1 to {MAX_EVENT_TYPE} characters.")
        if client_payload is not None and not isinstance(client_payload, dict):
            raise ValueError("Invalid request.\n\nFor 'properties/client_payload', is not an object.")
        if len(client_payload or {}) > MAX_CLIENT_PAYLOAD_KEYS:
            raise ValueError(f"No more than {MAX_CLIENT_PAYLOAD_KEYS} properties are allowed; client_payload has more.")
        self.dispatches.append({"repo": repo.full_name, "event_type": event_type, "client_payload": client_payload})

    def rerun(self, run: GitHubRun, *, failed_only: bool) -> GitHubRun:
        """A new attempt of a finished run (the same id). ValueError while it still runs (GitHub: 403)."""
        if run.status != "completed":
            raise ValueError("This workflow is already running")
        run.run_attempt += 1
        run.status, run.conclusion, run.updated_at = "queued", None, self.clock()
        return run

    # -- credentials --------------------------------------------------------------------------------

    def token_valid(self, token: str | None) -> bool:
        """The personal access token, or an installation token that has not expired."""
        if not token:
            return False
        if secrets.compare_digest(token.encode(), self.token.encode()):
            return True
        minted = self._tokens.get(token)
        return minted is not None and self.clock() < minted[1]

    def jwt_problem(self, token: str | None) -> str | None:
        """Why GitHub would refuse ``token`` as this App's JWT, or None when it is good."""
        if not token:
            return "A JSON web token could not be decoded"
        if self.app_public_key is None:
            return "A JSON web token could not be decoded (the sandbox was given no App public key)"
        try:
            claims = jwt.decode(
                token,
                self.app_public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        now, iat, exp = self.clock(), claims["iat"], claims["exp"]
        if str(claims["iss"]) != self.app_id:
            return "Integration not found"
        if not (isinstance(iat, int | float) and isinstance(exp, int | float)) or iat > now + 60:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
        if exp <= now:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time"
        if exp - iat > MAX_JWT_LIFETIME_S:
            return "'Expiration time' claim ('exp') is too far in the future"
        return None

    def installation_for(self, owner: str) -> int | None:
        """The App's installation on ``owner``: every owner with a repository here has one."""
        if not any(r.full_name.split("/")[0].casefold() == owner.casefold() for r in self.repos.values()):
            return None
        key = owner.casefold()
        if key not in self.installations:
            self.installations[key] = self._next_installation
            self._next_installation += 1
        return self.installations[key]

    def issue_installation_token(self, installation: int) -> tuple[str, str] | None:
        """A new installation token and its ISO ``expires_at`` (an hour); None for an unknown installation."""
        if installation not in self.installations.values():
            return None
        token, expires = f"ghs_{secrets.token_urlsafe(27)}", self.clock() + TOKEN_LIFETIME_S
        now = self.clock()
        self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now} | {token: (installation, expires)}
        return token, _iso(expires)
