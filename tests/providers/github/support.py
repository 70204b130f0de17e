"""What the GitHub tests share: delivery builders in GitHub's shapes, signing, an RSA key pair for App auth, a
scripted GitHub API served by uvicorn on a free 127.0.0.1 port that records every request as it arrived, and
``GitHubChainStack`` for the chain tests (a ``tests.helpers.ChainStack`` that posts signed workflow runs)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import ChainStack
from tests.redis_server import free_port

SECRET = "gh-webhook-secret-7f3a"
OLD_SECRET = "gh-webhook-secret-old-19c2"
TOKEN = "github_pat_11ABCDEFG0123456789_sEcReT"
SHA = "3484a3fb816e0859fd6e1cea078d76385ff50625"
REPO_ID = 300029405
RUN_ID = 30433642


def workflow_run(
    conclusion: str | None = "success",
    *,
    action: str = "completed",
    status: str | None = None,
    run_id: int = RUN_ID,
    attempt: int = 1,
    repo: str = "acme/lib",
    repo_id: int = REPO_ID,
    branch: str | None = "main",
    name: str | None = "CI",
    workflow: dict[str, Any] | None = None,
    event: str = "push",
) -> dict[str, Any]:
    """A ``workflow_run`` delivery body with the fields GitHub sends (the ones chainer reads and a few more)."""
    owner = repo.split("/")[0]
    run_status = status or ("completed" if action == "completed" else action)
    wf = {"id": 161335, "name": "CI", "path": ".github/workflows/ci.yml", "state": "active"}
    return {
        "action": action,
        "workflow_run": {
            "id": run_id,
            "name": name,
            "display_title": "Fix the thing",
            "head_branch": branch,
            "head_sha": SHA,
            "path": ".github/workflows/ci.yml",
            "run_number": 562,
            "run_attempt": attempt,
            "event": event,
            "status": run_status,
            "conclusion": conclusion if run_status == "completed" else None,
            "workflow_id": 161335,
            "html_url": f"https://github.com/{repo}/actions/runs/{run_id}",
            "created_at": "2026-11-20T10:00:00Z",
            "updated_at": "2026-11-20T10:05:00Z",
            "run_started_at": "2026-11-20T10:00:05Z",
            "previous_attempt_url": None,
        },
        "workflow": wf if workflow is None else workflow,
        "repository": {"id": repo_id, "name": repo.split("/")[1], "full_name": repo, "owner": {"login": owner}},
        "sender": {"login": "octocat", "id": 1},
    }


def workflow_job(
    conclusion: str | None = "failure",
    *,
    job_id: int = 399444496,
    run_id: int = RUN_ID,
    attempt: int = 1,
    repo: str = "acme/lib",
    name: str = "test",
) -> dict[str, Any]:
    """A ``workflow_job`` delivery body."""
    return {
        "action": "completed" if conclusion else "in_progress",
        "workflow_job": {
            "id": job_id,
            "run_id": run_id,
            "run_attempt": attempt,
            "workflow_name": "CI",
            "head_branch": "main",
            "head_sha": SHA,
            "html_url": f"https://github.com/{repo}/actions/runs/{run_id}/job/{job_id}",
            "status": "completed" if conclusion else "in_progress",
            "conclusion": conclusion,
            "name": name,
            "started_at": "2026-11-20T10:01:00Z",
            "completed_at": "2026-11-20T10:04:00Z" if conclusion else None,
        },
        "repository": {"id": REPO_ID, "name": repo.split("/")[1], "full_name": repo},
    }


def ping(events: list[str] | None = None, content_type: str = "json", hook_id: int = 109948940) -> dict[str, Any]:
    """A ``ping`` delivery body for a repository hook subscribed to ``events`` (default: workflow runs)."""
    return {
        "zen": "Design for failure.",
        "hook_id": hook_id,
        "hook": {
            "type": "Repository",
            "id": hook_id,
            "name": "web",
            "active": True,
            "events": ["workflow_run"] if events is None else events,
            "config": {
                "content_type": content_type,
                "insecure_ssl": "0",
                "url": "https://chainer.example.org/hooks/github",
            },
        },
        "repository": {"id": REPO_ID, "full_name": "acme/lib"},
    }


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery(
    payload: dict[str, Any] | bytes,
    event: str = "workflow_run",
    *,
    secret: str | None = SECRET,
    guid: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    hook_id: str | None = "292430182",
    form: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a GitHub delivery of ``payload`` (JSON, or ``payload=`` form), signed with ``secret``."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    body = urlencode({"payload": raw.decode()}).encode() if form else raw
    headers = {
        "content-type": "application/x-www-form-urlencoded" if form else "application/json",
        "x-github-event": event,
        "x-github-delivery": guid,
        "user-agent": "GitHub-Hookshot/044aadd",
    }
    if hook_id is not None:
        headers["x-github-hook-id"] = hook_id
    if secret is not None:
        headers["x-hub-signature-256"] = sign(body, secret)
    return body, headers


@functools.cache
def key_pair() -> tuple[str, str]:
    """An RSA key pair (private PEM, public PEM) made once per test session, as a GitHub App has."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


# -- a scripted GitHub API on a real socket ---------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (header names lower-case, values as sent)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Answer = Response | Callable[[Seen], Response]


@dataclass
class ScriptedGitHub:
    """Answers each ``(method, path)`` with its scripted replies in order (the last repeats); 404 otherwise."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    routes: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    delay: float = 0.0

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.routes[(method, path)] = list(answers)

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]

    async def handle(self, request: Request) -> Response:
        seen = Seen(request.method, request.url.path, {k: v for k, v in request.headers.items()}, await request.body())
        self.seen.append(seen)
        if self.delay:
            await asyncio.sleep(self.delay)
        answers = self.routes.get((seen.method, seen.path))
        if not answers:
            return JSONResponse({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return copy.copy(answer) if isinstance(answer, Response) else answer(seen)


@contextlib.asynccontextmanager
async def serve(api: ScriptedGitHub) -> AsyncIterator[ScriptedGitHub]:
    """``api`` under uvicorn on a free loopback port for the block; ``api.url`` is its base URL."""
    app = Starlette(routes=[Route("/{path:path}", api.handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    api.url = f"http://127.0.0.1:{port}"
    try:
        yield api
    finally:
        server.should_exit = True
        await task


class GitHubChainStack(ChainStack):
    """A chain test's stack that also posts GitHub deliveries."""

    async def github_run(
        self, run_id: int, repo: str, branch: str = "main", event: str = "workflow_dispatch"
    ) -> dict[str, Any]:
        """A completed, green ``workflow_run`` of ``repo``, signed with ``SECRET``; the app's answer (202)."""
        payload = workflow_run("success", run_id=run_id, repo=repo, branch=branch, event=event)
        body, headers = delivery(payload, guid=f"delivery-{run_id}")
        answer = await self.client.post("/hooks/github", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        return dict(answer.json())
