"""Downstream: CircleCI API v2 and v1.1 requests, argument checks and error messages."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from chainer.errors import PermanentDownstreamError, TransientDownstreamError
from chainer.providers import Downstream
from tests.helpers import (
    CIRCLE_TOKEN,
    CIRCLECI,
    COMMIT,
    Recorder,
    assert_error_secret_free,
    assert_secret_free,
    make_event,
    make_settings,
)

PIPELINE = "5034460f-c7c4-4c43-9457-de07e2029e7b"
WORKFLOW = "fda08377-fe7e-46b1-8992-3a7aaecac9c3"
NEW_WORKFLOW = "0e53027b-521a-4c40-9042-47e72adc1ab5"


def circle_event(**overrides: Any) -> Any:
    values = {"provider": "circleci", "kind": "workflow", "project": "acme/lib", "project_slug": "gh/acme/lib"}
    values.update(overrides)
    return make_event(**values)


def assert_circle_headers(request: httpx.Request) -> None:
    assert request.headers["circle-token"] == CIRCLE_TOKEN
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


async def run(rec: Recorder, action: str, params: dict[str, Any], **settings: Any) -> Any:
    async with rec.client() as http:
        return await Downstream(make_settings(**settings), http).execute(action, params, circle_event())


async def test_trigger_pipeline_sends_exact_request() -> None:
    """trigger_pipeline posts {branch, parameters} with Circle-Token to /api/v2/project/{slug}/pipeline."""
    rec = Recorder()
    answer = {"id": PIPELINE, "state": "created", "number": 42, "created_at": "2024-05-01T10:00:00Z"}
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(201, json=answer))
    params = {"project": "gh/acme/api", "branch": "main", "parameters": {"upstream_sha": COMMIT, "deploy": True}}
    result = await run(rec, "circleci.trigger_pipeline", params)
    [request] = rec.requests
    assert str(request.url) == f"{CIRCLECI}/api/v2/project/gh/acme/api/pipeline"
    assert_circle_headers(request)
    assert json.loads(request.content) == {"branch": "main", "parameters": {"upstream_sha": COMMIT, "deploy": True}}
    assert result.status == 201 and result.downstream_id == PIPELINE
    assert result.detail == {"number": 42, "state": "created", "created_at": "2024-05-01T10:00:00Z"}
    assert result.request == {
        "method": "POST",
        "url": f"{CIRCLECI}/api/v2/project/gh/acme/api/pipeline",
        "body": {"branch": "main", "parameters": {"upstream_sha": COMMIT, "deploy": True}},
    }
    assert_secret_free(result)


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({"tag": "v1.0.0"}, {"tag": "v1.0.0"}),
        ({"branch": None, "tag": "v1.0.0"}, {"tag": "v1.0.0"}),
        ({"branch": "pull/12/head", "parameters": {}}, {"branch": "pull/12/head", "parameters": {}}),
    ],
    ids=["tag", "null-branch", "empty-parameters"],
)
async def test_trigger_pipeline_body_omits_absent_keys(params: dict[str, Any], body: dict[str, Any]) -> None:
    """Only the keys the action was given appear in the trigger body."""
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(201, json={"id": PIPELINE, "number": 1}))
    await run(rec, "circleci.trigger_pipeline", {"project": "gh/acme/api", **params})
    assert json.loads(rec.requests[0].content) == body


@pytest.mark.parametrize(
    ("slug", "raw_path"),
    [
        ("github/acme/api", "/api/v2/project/github/acme/api/pipeline"),
        (f"circleci/{PIPELINE}/{WORKFLOW}", f"/api/v2/project/circleci/{PIPELINE}/{WORKFLOW}/pipeline"),
        ("gh/acme/my repo#1?x", "/api/v2/project/gh/acme/my%20repo%231%3Fx/pipeline"),
    ],
    ids=["long-form", "opaque", "reserved-characters"],
)
async def test_trigger_pipeline_slug_keeps_slashes(slug: str, raw_path: str) -> None:
    """Slugs go into the path with their slashes kept and other reserved characters percent-encoded."""
    rec = Recorder()

    def created(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"id": PIPELINE, "number": 1, "state": "pending"})

    rec.on("POST", httpx.URL(f"{CIRCLECI}{raw_path}").path, created)
    await run(rec, "circleci.trigger_pipeline", {"project": slug, "branch": "main"})
    assert rec.requests[0].url.raw_path.decode() == raw_path


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"project": "gh/acme/api", "branch": "main", "tag": "v1"}, "either branch or tag"),
        ({"project": "gh/acme/api", "parameters": {f"k{i}": "v" for i in range(101)}}, "101 parameters"),
        ({"project": "gh/acme/api", "parameters": {"k" * 129: "v"}}, "1 to 128 characters"),
        ({"project": "gh/acme/api", "parameters": {"k": "v" * 513}}, "513 characters, CircleCI allows 512"),
        ({"project": "gh/acme/api", "parameters": {"k": {"nested": 1}}}, "integer, string or boolean"),
        ({"project": "gh/acme/api", "branch": "main", "parameters": {"k": 1.5}}, "integer, string or boolean"),
        ({"project": "gh/acme/api", "branch": "main", "parameters": {"k": None}}, "integer, string or boolean"),
        ({"project": "gh/acme/api"}, "no branch or tag to build"),
        ({"project": "gh/acme/api", "branch": None, "tag": " "}, "no branch or tag to build"),
        ({"project": "gh/acme/api", "parameters": ["k"]}, "must be a mapping"),
        ({"project": "acme"}, "not a project slug"),
        ({"project": "gh/acme/../api"}, "not a project slug"),
        ({"project": ""}, "'project' is missing"),
    ],
    ids=[
        "branch-and-tag",
        "too-many",
        "long-key",
        "long-value",
        "nested-value",
        "float-value",
        "null-value",
        "no-branch-or-tag",
        "blank-tag",
        "not-mapping",
        "short-slug",
        "dot-segment",
        "no-project",
    ],
)
async def test_trigger_pipeline_arguments_checked_before_sending(params: dict[str, Any], match: str) -> None:
    """Invalid trigger arguments are permanent errors and nothing is sent."""
    rec = Recorder()
    with pytest.raises(PermanentDownstreamError, match=match):
        await run(rec, "circleci.trigger_pipeline", params)
    assert rec.requests == []


async def test_trigger_pipeline_parameter_limits_are_inclusive() -> None:
    """Exactly 100 parameters, 128-character keys and 512-character values are accepted."""
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(201, json={"id": PIPELINE}))
    parameters = {f"k{i}".ljust(128, "x"): "v" * 512 for i in range(100)}
    await run(rec, "circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "main", "parameters": parameters})
    assert len(json.loads(rec.requests[0].content)["parameters"]) == 100


async def test_trigger_pipeline_without_id_in_answer_is_success_with_note() -> None:
    """A 201 without a JSON id still counts as created: no id, a note in detail."""
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(201, text="Created"))
    result = await run(rec, "circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "main"})
    assert result.status == 201 and result.downstream_id is None and "note" in result.detail


@pytest.mark.parametrize(("from_failed", "body"), [(True, {"from_failed": True}), (False, {})], ids=["failed", "all"])
async def test_rerun_workflow(from_failed: bool, body: dict[str, Any]) -> None:
    """rerun_workflow posts {"from_failed": true} (or {}) and returns the new workflow id."""
    rec = Recorder()
    rec.on("POST", f"/api/v2/workflow/{WORKFLOW}/rerun", httpx.Response(202, json={"workflow_id": NEW_WORKFLOW}))
    result = await run(rec, "circleci.rerun_workflow", {"workflow": WORKFLOW, "from_failed": from_failed})
    [request] = rec.requests
    assert_circle_headers(request)
    assert json.loads(request.content) == body
    assert result.status == 202 and result.downstream_id == NEW_WORKFLOW
    assert result.detail == {"rerun_of": WORKFLOW, "from_failed": from_failed}


async def test_rerun_workflow_defaults_to_from_failed() -> None:
    """Without from_failed the rerun restarts from the failed jobs."""
    rec = Recorder()
    rec.on("POST", f"/api/v2/workflow/{WORKFLOW}/rerun", httpx.Response(202, json={"workflow_id": NEW_WORKFLOW}))
    await run(rec, "circleci.rerun_workflow", {"workflow": WORKFLOW})
    assert json.loads(rec.requests[0].content) == {"from_failed": True}


async def test_v1_trigger_build_encodes_the_branch() -> None:
    """v1.1 trigger posts to …/tree/{branch} with '/' in the branch as %2F, JSON Accept and Circle-Token."""
    rec = Recorder()
    job = {"build_num": 311, "build_url": "https://circleci.com/gh/acme/api/311", "status": "queued"}
    rec.on("POST", "/api/v1.1/project/github/acme/api/tree/feature/x y", httpx.Response(201, json=job))
    params = {"project": "gh/acme/api", "branch": "feature/x y", "revision": COMMIT, "build_parameters": {"A": "1"}}
    result = await run(rec, "circleci.v1_trigger_build", params)
    [request] = rec.requests
    assert request.url.raw_path == b"/api/v1.1/project/github/acme/api/tree/feature%2Fx%20y"
    assert_circle_headers(request)
    assert json.loads(request.content) == {"revision": COMMIT, "build_parameters": {"A": "1"}}
    assert result.downstream_id == "311"
    assert result.detail == job


async def test_v1_trigger_build_minimal_body() -> None:
    """Without revision or build_parameters the v1.1 trigger body is empty JSON."""
    rec = Recorder()
    rec.on("POST", "/api/v1.1/project/bitbucket/acme/api/tree/main", httpx.Response(201, json={"build_num": 1}))
    await run(rec, "circleci.v1_trigger_build", {"project": "bitbucket/acme/api", "branch": "main"})
    assert json.loads(rec.requests[0].content) == {}


async def test_v1_trigger_build_of_a_tag_posts_the_tag_to_the_project() -> None:
    """A tag builds with the v1.1 project trigger: POST …/project/{vcs}/{org}/{repo} with {"tag": …} in the body."""
    rec = Recorder()
    job = {"build_num": 77, "build_url": "https://circleci.com/gh/acme/pkg/77", "status": "not_running"}
    rec.on("POST", "/api/v1.1/project/github/acme/pkg", httpx.Response(201, json=job))
    params = {"project": "gh/acme/pkg", "tag": "v2.0.0", "build_parameters": {"RELEASE": "1"}}
    result = await run(rec, "circleci.v1_trigger_build", params)
    [request] = rec.requests
    assert request.url.raw_path == b"/api/v1.1/project/github/acme/pkg"
    assert_circle_headers(request)
    assert json.loads(request.content) == {"tag": "v2.0.0", "build_parameters": {"RELEASE": "1"}}
    assert result.downstream_id == "77"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"project": "github/acme/pkg"}, "no branch or tag to build"),
        ({"project": "github/acme/pkg", "branch": "", "tag": None}, "no branch or tag to build"),
        ({"project": "github/acme/pkg", "branch": "main", "tag": "v1"}, "either branch or tag"),
        ({"project": "github/acme/pkg", "tag": "v1", "revision": COMMIT}, "'revision' cannot go with a tag"),
    ],
    ids=["neither", "empty-branch", "both", "tag-and-revision"],
)
async def test_v1_trigger_build_needs_exactly_one_of_branch_and_tag(params: dict[str, Any], match: str) -> None:
    """Without a branch or tag (CircleCI would build the default branch), with both, or a tag with a revision,
    the v1.1 trigger is refused and nothing is sent."""
    rec = Recorder()
    with pytest.raises(PermanentDownstreamError, match=match):
        await run(rec, "circleci.v1_trigger_build", params)
    assert rec.requests == []


async def test_v1_retry_build() -> None:
    """v1.1 retry posts to …/{build_num}/retry and returns the new job's build_num."""
    rec = Recorder()
    job = {"build_num": 312, "build_url": "https://circleci.com/gh/acme/api/312", "status": "queued", "retry_of": 311}
    rec.on("POST", "/api/v1.1/project/github/acme/api/311/retry", httpx.Response(200, json=job))
    result = await run(rec, "circleci.v1_retry_build", {"project": "github/acme/api", "build": "311"})
    [request] = rec.requests
    assert_circle_headers(request)
    assert request.content == b""
    assert result.downstream_id == "312"
    assert result.detail == {"build_num": 312, "build_url": job["build_url"], "status": "queued", "retry_of": 311}


@pytest.mark.parametrize(
    ("action", "params", "match"),
    [
        ("circleci.v1_retry_build", {"project": "gitlab/acme/api", "build": 1}, "<github|bitbucket>/<org>/<repo>"),
        ("circleci.v1_retry_build", {"project": "github/acme/api", "build": "latest"}, "numeric id"),
        ("circleci.v1_trigger_build", {"project": "github/acme", "branch": "main"}, "<github|bitbucket>"),
        ("circleci.v1_trigger_build", {"project": "github/a/b", "branch": "x", "build_parameters": 3}, "mapping"),
        ("circleci.rerun_workflow", {"workflow": WORKFLOW, "from_failed": "yes"}, "true or false"),
    ],
    ids=["v1-gitlab", "v1-build-not-numeric", "v1-short-project", "v1-bad-build-parameters", "rerun-bad-flag"],
)
async def test_legacy_and_rerun_arguments_checked(action: str, params: dict[str, Any], match: str) -> None:
    """Malformed v1.1 and rerun arguments are permanent errors and nothing is sent."""
    rec = Recorder()
    with pytest.raises(PermanentDownstreamError, match=match):
        await run(rec, action, params)
    assert rec.requests == []


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "main"}),
        ("circleci.rerun_workflow", {"workflow": WORKFLOW}),
        ("circleci.v1_trigger_build", {"project": "github/acme/api", "branch": "main"}),
        ("circleci.v1_retry_build", {"project": "github/acme/api", "build": 1}),
    ],
    ids=["trigger", "rerun", "v1-trigger", "v1-retry"],
)
async def test_missing_token_names_the_variable(action: str, params: dict[str, Any]) -> None:
    """Every CircleCI action without CHAINER_CIRCLECI_TOKEN fails naming it and sends nothing."""
    rec = Recorder()
    with pytest.raises(PermanentDownstreamError, match="set CHAINER_CIRCLECI_TOKEN"):
        await run(rec, action, params, circleci_token=None)
    assert rec.requests == []


async def test_not_found_carries_circleci_message() -> None:
    """A 404 is permanent and carries CircleCI's {"message"} text."""
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(404, json={"message": "Project not found"}))
    with pytest.raises(PermanentDownstreamError) as caught:
        await run(rec, "circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "main"})
    assert caught.value.message == "CircleCI POST /api/v2/project/gh/acme/api/pipeline answered 404: Project not found"
    assert caught.value.status == 404


async def test_unauthorized_points_at_the_token_without_showing_it() -> None:
    """A 401 is permanent, names CHAINER_CIRCLECI_TOKEN and never contains the token, even when echoed."""
    rec = Recorder()
    rec.on("POST", f"/api/v2/workflow/{WORKFLOW}/rerun", httpx.Response(401, json={"message": f"bad {CIRCLE_TOKEN}"}))
    with pytest.raises(PermanentDownstreamError, match="CHAINER_CIRCLECI_TOKEN") as caught:
        await run(rec, "circleci.rerun_workflow", {"workflow": WORKFLOW})
    assert_error_secret_free(caught.value)


async def test_circleci_403_mentioning_rate_limit_is_permanent() -> None:
    """Only Codeship signals its rate limit with 403; a CircleCI 403 stays a permanent error."""
    rec = Recorder()
    rec.on("POST", f"/api/v2/workflow/{WORKFLOW}/rerun", httpx.Response(403, json={"message": "rate limit? no"}))
    with pytest.raises(PermanentDownstreamError):
        await run(rec, "circleci.rerun_workflow", {"workflow": WORKFLOW})


async def test_circleci_429_is_transient_with_retry_after() -> None:
    """A CircleCI 429 is transient with the Retry-After delay."""
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(429, headers={"Retry-After": "11"}))
    with pytest.raises(TransientDownstreamError) as caught:
        await run(rec, "circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "main"})
    assert caught.value.retry_after == 11.0


async def test_errors_carry_the_provider_action_and_status_as_attributes() -> None:
    """Every DownstreamError leaving Downstream names its provider and action (and status, when answered), whether
    an API answer, an argument check before sending, or a start-up check raised it."""
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/acme/api/pipeline", httpx.Response(404, json={"message": "Project not found"}))
    rec.on("POST", "/v2/auth", httpx.Response(401, json={"error": "Unauthorized"}))
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http)
        with pytest.raises(PermanentDownstreamError) as answered:
            params = {"project": "gh/acme/api", "branch": "main"}
            await downstream.execute("circleci.trigger_pipeline", params, circle_event())
        with pytest.raises(PermanentDownstreamError) as checked:
            await downstream.execute("codeship.trigger_build", {"project": "acme/web", "ref": "main"}, make_event())
        with pytest.raises(PermanentDownstreamError) as refused:
            await downstream.clients["codeship"].check()
    assert (answered.value.provider, answered.value.action, answered.value.status) == (
        "circleci",
        "circleci.trigger_pipeline",
        404,
    )
    assert (checked.value.provider, checked.value.action, checked.value.status) == (
        "codeship",
        "codeship.trigger_build",
        None,
    )
    assert (refused.value.provider, refused.value.action, refused.value.status) == ("codeship", None, 401)
    assert [r.url.path for r in rec.requests] == ["/api/v2/project/gh/acme/api/pipeline", "/v2/auth"]
