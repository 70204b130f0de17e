"""Builders for webhook bodies and headers in the providers' shapes, for HTTP-level tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chainer.sandbox.models import BuildkiteBuild

COMMIT = "9f2c4e1b7a3d5c6e8f0a1b2c3d4e5f60718293a4"


def codeship(
    status: str = "success",
    *,
    build_id: int = 4711,
    project: str = "acme/lib",
    branch: str = "main",
    commit: str = COMMIT,
    project_id: int = 1234,
) -> dict[str, Any]:
    """A Codeship notification webhook body."""
    return {
        "build": {
            "build_url": f"https://app.codeship.com/projects/{project_id}/builds/{build_id}",
            "commit_url": f"https://github.com/{project}/commit/{commit}",
            "project_id": project_id,
            "build_id": build_id,
            "status": status,
            "project_name": project,
            "project_full_name": project,
            "commit_id": commit,
            "short_commit_id": commit[:7],
            "message": "Fix the thing",
            "committer": "octocat",
            "branch": branch,
        }
    }


def circleci_workflow(
    status: str = "success",
    *,
    delivery: str = "7a3c1b52-2f0e-4d35-9a44-0e8a5b6c7d10",
    workflow_id: str = "fda08377-fe7e-46b1-8992-3a7aaecac9c3",
    org: str = "acme",
    repo: str = "lib",
    branch: str = "main",
    commit: str = COMMIT,
    workflow: str = "build-and-test",
) -> dict[str, Any]:
    """A CircleCI outbound ``workflow-completed`` body (GitHub OAuth form)."""
    return {
        "type": "workflow-completed",
        "id": delivery,
        "happened_at": "2026-11-20T10:15:40.799826Z",
        "webhook": {"id": "cf8c4fdd-0587-4da1-b4ca-4846e9640af9", "name": "chainer"},
        "workflow": {
            "id": workflow_id,
            "name": workflow,
            "created_at": "2026-11-20T10:12:01.123Z",
            "stopped_at": "2026-11-20T10:15:40.690Z",
            "url": f"https://app.circleci.com/pipelines/github/{org}/{repo}/42/workflows/{workflow_id}",
            "status": status,
        },
        "pipeline": {
            "id": "1285fe1d-d3a6-44fc-8886-8979558254c4",
            "number": 42,
            "created_at": "2026-11-20T10:12:00.000Z",
            "trigger": {"type": "webhook"},
            "vcs": {
                "provider_name": "github",
                "origin_repository_url": f"https://github.com/{org}/{repo}",
                "target_repository_url": f"https://github.com/{org}/{repo}",
                "revision": commit,
                "branch": branch,
                "commit": {"subject": "Fix the thing", "body": "", "author": {"name": "A", "email": "a@example.org"}},
            },
        },
        "project": {"id": "84996744-a854-4f5e-aea3-04e2851dc1d2", "name": repo, "slug": f"github/{org}/{repo}"},
        "organization": {"id": "f22b6566-597d-46d5-ba74-99ef5bb3d85c", "name": org},
    }


def circleci_ping() -> dict[str, Any]:
    return {
        "type": "ping",
        "id": "3888f21b-eaa7-38e3-8f3d-75a63bba8895",
        "happened_at": "2026-11-20T10:00:00.000Z",
        "webhook": {"id": "cf8c4fdd-0587-4da1-b4ca-4846e9640af9", "name": "chainer"},
    }


def signed(body: dict[str, Any] | bytes, secret: str, event_type: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Body bytes and the headers CircleCI sends with them, signed with ``secret``."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "user-agent": "CircleCI-Webhook/1.0",
        "circleci-signature": f"v1={digest}",
    }
    if event_type or isinstance(body, dict):
        headers["circleci-event-type"] = event_type or str(body.get("type") if isinstance(body, dict) else "")
    return raw, headers


def buildkite_build(
    event: str = "build.finished",
    state: str = "passed",
    *,
    build_id: str = "0190a9c4-5b7e-4d8a-9f3e-2c1b0a987654",
    number: int = 12,
    org: str = "acme",
    pipeline: str = "lib",
    branch: str = "main",
    commit: str = COMMIT,
    blocked: bool | None = False,
    meta_data: dict[str, str] | None = None,
    finished_at: str | None = "2026-11-20 10:15:40 UTC",
) -> dict[str, Any]:
    """A Buildkite ``build.*`` webhook body in the current shape (``event`` in the body, ``blocked`` set)."""
    api = f"https://api.buildkite.com/v2/organizations/{org}/pipelines/{pipeline}"
    build: dict[str, Any] = {
        "id": build_id,
        "url": f"{api}/builds/{number}",
        "web_url": f"https://buildkite.com/{org}/{pipeline}/builds/{number}",
        "number": number,
        "state": state,
        "message": "Fix the thing",
        "commit": commit,
        "branch": branch,
        "tag": None,
        "source": "webhook",
        "created_at": "2026-11-20 10:12:00 UTC",
        "scheduled_at": "2026-11-20 10:12:01 UTC",
        "started_at": "2026-11-20 10:12:05 UTC",
        "finished_at": finished_at,
        "meta_data": dict(meta_data or {}),
    }
    if blocked is not None:
        build["blocked"] = blocked
    return {
        "event": event,
        "build": build,
        "pipeline": {
            "id": "4a1e7c2d-8b3f-4e6a-9d0c-5f2b1a3e7c90",
            "url": api,
            "web_url": f"https://buildkite.com/{org}/{pipeline}",
            "name": pipeline.title(),
            "slug": pipeline,
        },
        "sender": {"id": "8c2f1e4d-3b5a-4f6e-9a7d-0b1c2d3e4f50", "name": "Octo Cat"},
    }


def buildkite_webhook_of(build: BuildkiteBuild, state: str = "passed") -> dict[str, Any]:
    """The build.finished webhook Buildkite sends for a build the sandbox holds (its id, number and meta-data)."""
    commit = build.commit if build.commit != "HEAD" else COMMIT
    pipeline = build.pipeline
    return buildkite_build(
        state=state,
        build_id=build.id,
        number=build.number,
        org=pipeline.org,
        pipeline=pipeline.slug,
        branch=build.branch,
        commit=commit,
        meta_data=build.meta_data,
    )


def buildkite_signed(
    body: dict[str, Any] | bytes, token: str, timestamp: int, event: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body bytes and the headers Buildkite sends in signature mode: HMAC-SHA256 over ``<timestamp>.`` + body."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    digest = hmac.new(token.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    name = event or str(json.loads(raw)["event"])
    headers = {
        "content-type": "application/json",
        "user-agent": "Buildkite-Request",
        "x-buildkite-event": name,
        "x-buildkite-signature": f"timestamp={timestamp},signature={digest}",
    }
    return raw, headers
