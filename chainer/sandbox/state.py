"""In-memory state of the provider sandbox: the account, projects, builds, pipelines, scripted faults, the request log.

Everything here is plain data and synchronous; ``chainer.sandbox.app`` turns HTTP requests into calls on
:class:`SandboxState`. Ids are deterministic (counters and name-based UUIDs) so demos and tests repeat;
only Codeship access tokens are random. Shapes follow shared/reference/providers.md.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from chainer.providers.circleci.facts import MAX_PARAMETER_KEY, MAX_PARAMETER_VALUE, MAX_PARAMETERS, normalize_vcs
from chainer.providers.codeship import REQUESTS_PER_MINUTE
from chainer.sandbox.github_state import GitHubState
from chainer.sandbox.models import (
    BuildkiteBuild,
    BuildkitePipeline,
    CircleJob,
    CirclePipeline,
    CodeshipBuild,
    CodeshipProject,
    RecordedRequest,
    ScriptedFault,
    fake_sha,
)

CODESHIP_V2 = "codeship.v2"
CODESHIP_V1 = "codeship.v1"
CIRCLECI_V2 = "circleci.v2"
CIRCLECI_V11 = "circleci.v1.1"
BUILDKITE = "buildkite"
GITHUB = "github"
APIS = (CODESHIP_V2, CODESHIP_V1, CIRCLECI_V2, CIRCLECI_V11, BUILDKITE, GITHUB)
BUILDKITE_SCOPES = ("read_builds", "write_builds")
CODESHIP_SCOPES = ("project.read", "project.write", "build.read", "build.write")
TOKEN_LIFETIME_S = 3600
RATE_WINDOW_S = 60
MAX_RECORDED = 10_000
MAX_FAULT_DELAY_S = 3600.0
_IDS = uuid.UUID("8a0c7e52-3b1f-4f0e-9d6a-5c1e2b7d4f90")  # namespace of the sandbox's name-based UUIDs
_RUNNING = ("initiated", "testing", "waiting")


def org_uuid(name: str) -> str:
    """The stable UUID the sandbox gives the Codeship organization called ``name`` (case-insensitive)."""
    return str(uuid.uuid5(_IDS, f"codeship-org:{name.casefold()}"))


def _project_key(slug: str) -> str:
    vcs, _, rest = slug.partition("/")
    return f"{normalize_vcs(vcs) or vcs}/{rest}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SandboxState:
    """Everything the sandbox knows: one Codeship account and organization, one CircleCI token, data and log.

    The Codeship account belongs to one organization, ``codeship_org`` (its UUID is ``codeship_org_uuid``),
    where it holds ``codeship_scopes``; the Buildkite API token ``buildkite_token`` has ``buildkite_scopes``.
    ``clock`` drives timestamps, token expiry and the rate-limit window.
    Attributes may be changed between requests (say, ``two_factor`` or ``codeship_scopes``).
    """

    def __init__(
        self,
        *,
        codeship_user: str = "sandbox@example.org",
        codeship_password: str = "sandbox",  # noqa: S107 - the sandbox's published demo credentials
        codeship_org: str = "acme",
        codeship_scopes: Sequence[str] = CODESHIP_SCOPES,
        circleci_token: str = "sandbox-token",  # noqa: S107 - as above
        codeship_api_key: str = "sandbox-key",
        two_factor: bool = False,
        codeship_rate_limit: int = REQUESTS_PER_MINUTE,
        clock: Callable[[], float] = time.time,
        buildkite_token: str = "sandbox-buildkite-token",  # noqa: S107 - as above
        buildkite_scopes: Sequence[str] = BUILDKITE_SCOPES,
        github: GitHubState | None = None,
    ) -> None:
        # GitHub's repositories, runs and App live in their own state (chainer.sandbox.github_state).
        self.github = github if github is not None else GitHubState(clock=clock)
        self.codeship_user = codeship_user
        self.codeship_password = codeship_password
        self.codeship_org = codeship_org
        self.codeship_org_uuid = org_uuid(codeship_org)
        self.codeship_scopes = tuple(codeship_scopes)
        self.circleci_token = circleci_token
        self.codeship_api_key = codeship_api_key
        self.two_factor = two_factor
        self.codeship_rate_limit = codeship_rate_limit
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self.faults: list[ScriptedFault] = []
        self.projects: list[CodeshipProject] = []
        self.pipelines: list[CirclePipeline] = []
        self.workflows: dict[str, CirclePipeline] = {}  # workflow id -> its pipeline
        self.jobs: list[CircleJob] = []
        self.buildkite_token = buildkite_token
        self.buildkite_scopes = tuple(buildkite_scopes)
        self.buildkite_pipelines: dict[str, BuildkitePipeline] = {}  # "<org>/<slug>" -> pipeline
        self._tokens: dict[str, float] = {}
        self._window = (-1, 0)  # (window number, Codeship v2 requests seen in it)
        self._counter = 0
        self._next_request = 1
        self._next_build = 1001

    # -- plumbing ------------------------------------------------------------------------------

    def new_uuid(self, kind: str) -> str:
        """A fresh, deterministic UUID (the n-th id the state hands out)."""
        self._counter += 1
        return str(uuid.uuid5(_IDS, f"{kind}:{self._counter}"))

    def record(self, **fields: Any) -> RecordedRequest:
        """Append one request to the log (oldest entries dropped beyond ``MAX_RECORDED``)."""
        entry = RecordedRequest(id=self._next_request, time=self.clock(), **fields)
        self._next_request += 1
        self.requests.append(entry)
        del self.requests[:-MAX_RECORDED]
        return entry

    def script(
        self,
        api: str,
        *,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
        path_contains: str = "",
        effect: bool = False,
    ) -> None:
        """Answer the next ``times`` requests to ``api`` whose path contains ``path_contains`` with a canned reply.

        The reply (``status``; ``body`` as JSON, or as text when a string, or empty when None; ``headers``)
        comes after ``delay`` seconds, before any normal handling. With ``effect`` the request is handled as
        usual (it takes effect; ``status``, ``body`` and ``headers`` are not used) and its real answer comes
        after ``delay`` seconds: a client that stops waiting first loses the answer of a call that worked.
        Raises ``ValueError`` for an unknown api, a status outside 200-599, ``times`` < 1, a delay outside
        0-3600 s or malformed headers.
        """
        number = _is_int(delay) or isinstance(delay, float)
        pairs = headers.items() if isinstance(headers, dict) else [(0, 0)] if headers is not None else []
        for ok, problem in (
            (api in APIS, f"api must be one of {', '.join(APIS)}"),
            (_is_int(status) and 200 <= status <= 599, "status must be an integer from 200 to 599"),
            (_is_int(times) and times >= 1, "times must be a positive integer"),
            (number and 0 <= delay <= MAX_FAULT_DELAY_S, f"delay must be 0 to {MAX_FAULT_DELAY_S:g} seconds"),
            (isinstance(path_contains, str), "path_contains must be a string"),
            (isinstance(effect, bool), "effect must be true or false"),
            (all(isinstance(k, str) and isinstance(v, str) for k, v in pairs), "headers must map names to strings"),
        ):
            if not ok:
                raise ValueError(problem)
        fault = ScriptedFault(api, status, body, dict(headers or {}), times, float(delay), path_contains, effect)
        self.faults.append(fault)

    def take_fault(self, api: str, path: str) -> ScriptedFault | None:
        """The first scripted fault matching this request, counting one use of it."""
        for fault in self.faults:
            if fault.api == api and fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def over_codeship_rate_limit(self) -> bool:
        """Count one Codeship v2 request; true when it exceeds the limit of the current 60-s clock window."""
        window = math.floor(self.clock() / RATE_WINDOW_S)
        seen = self._window[1] + 1 if self._window[0] == window else 1
        self._window = (window, seen)
        return seen > self.codeship_rate_limit

    # -- Codeship --------------------------------------------------------------------------------

    def issue_codeship_token(self) -> tuple[str, int]:
        """A new API v2 access token and its ``expires_at`` (now + 1 h)."""
        token, now = secrets.token_urlsafe(24), self.clock()
        expires_at = int(now) + TOKEN_LIFETIME_S
        self._tokens = {t: e for t, e in self._tokens.items() if e > now} | {token: expires_at}
        return token, expires_at

    def codeship_token_valid(self, token: str) -> bool:
        """Whether ``token`` was issued here and has not expired."""
        expires_at = self._tokens.get(token)
        return expires_at is not None and self.clock() < expires_at

    def add_codeship_project(self, name: str, *, type: str = "basic", id: int | None = None) -> dict[str, Any]:
        """Create the project ``owner/repo`` (numeric ``id`` default: next free) and return its API v2 object.

        Adding an existing project again returns it unchanged; ``ValueError`` when the name, type and id clash.
        """
        same = next((p for p in self.projects if p.name == name), None)
        if same is not None and same.type == type and id in (None, same.id):
            return same.v2()
        if type not in ("basic", "pro") or same is not None or any(p.id == id for p in self.projects):
            raise ValueError(f"project {name!r} (type {type!r}, id {id}) clashes with another or has no known type")
        number = id if id is not None else max((p.id for p in self.projects), default=0) + 1
        uid = str(uuid.uuid5(_IDS, f"codeship-project:{self.codeship_org_uuid}:{name}"))
        project = CodeshipProject(number, uid, name, type, self.codeship_org_uuid, self.clock())
        self.projects.append(project)
        return project.v2()

    def add_codeship_build(
        self, project_name: str, *, branch: str, commit_sha: str, status: str = "success", id: int | None = None
    ) -> dict[str, Any]:
        """Record a build of ``project_name`` on ``branch``; returns its API v2 object (which has numeric ``id``).

        ``id`` is the numeric build id of webhooks and API v1 (default: the next free one). Builds whose
        status is ``initiated``, ``testing`` or ``waiting`` are running, others finished. Raises
        ``KeyError`` when no project has that name and ``ValueError`` when a build already has that id.
        """
        project = self.codeship_project_named(project_name)
        if project is None:
            raise KeyError(project_name)
        if id is not None and (not _is_int(id) or id < 1 or self.codeship_build_numbered(id) is not None):
            raise ValueError(f"build id {id!r} is not a positive integer or belongs to another build")
        build = self._new_build(project, f"heads/{branch}", commit_sha, status=status, build_id=id)
        return {**build.v2("https://api.codeship.com"), "id": build.id}

    def codeship_project_named(self, name: str) -> CodeshipProject | None:
        """The project called ``name`` (``owner/repo``)."""
        return next((p for p in self.projects if p.name == name), None)

    def codeship_build_numbered(self, build_id: int) -> CodeshipBuild | None:
        """The build with numeric id ``build_id``, in any project."""
        return next((b for p in self.projects for b in p.builds if b.id == build_id), None)

    def codeship_project(self, uid: str) -> CodeshipProject | None:
        """The project with API v2 uuid ``uid``."""
        return next((p for p in self.projects if p.uuid == uid), None)

    def create_codeship_build(self, project: CodeshipProject, ref: str, commit_sha: str | None) -> CodeshipBuild:
        """What ``POST …/builds`` does: queue a new build of ``ref`` (branch head when no sha is given)."""
        name = ref.split("/", 1)[1]
        heads = [b.commit_sha for b in project.builds if b.branch == name]
        sha = commit_sha or (heads[-1] if heads else fake_sha(project.uuid, ref))
        return self._new_build(project, ref, sha)

    def restart_codeship_build(self, build: CodeshipBuild) -> CodeshipBuild:
        """Restart a finished build: Basic reruns it under the same uuid, Pro queues a new build.

        A build still running is left alone (Codeship ignores such restarts but answers 202).
        """
        if build.finished_at is None:
            return build
        if build.project.type == "pro":
            return self._new_build(build.project, build.ref, build.commit_sha)
        build.status, build.queued_at, build.finished_at = "initiated", self.clock(), None
        return build

    def stop_codeship_build(self, build: CodeshipBuild) -> None:
        """Stop a running build (a finished one stays as it is)."""
        if build.finished_at is None:
            build.status, build.finished_at = "stopped", self.clock()

    def _new_build(
        self, project: CodeshipProject, ref: str, sha: str, *, status: str = "initiated", build_id: int | None = None
    ) -> CodeshipBuild:
        now, branch = self.clock(), ref.split("/", 1)[1]
        build_id = self._next_build if build_id is None else build_id
        self._next_build = max(self._next_build, build_id + 1)
        finished = None if status in _RUNNING else now
        message = f"sandbox build {build_id} of {branch}"
        uid = self.new_uuid("codeship-build")
        build = CodeshipBuild(build_id, uid, project, ref, branch, sha, message, status, now, finished)
        project.builds.append(build)
        return build

    # -- CircleCI --------------------------------------------------------------------------------

    def trigger_pipeline(
        self, slug: str, *, branch: str | None = None, tag: str | None = None, parameters: dict[str, Any] | None = None
    ) -> CirclePipeline:
        """Create a pipeline with one workflow, numbered per project (``gh/x/y`` and ``github/x/y`` are one).

        Neither branch nor tag means the default branch, as on CircleCI. Raises ``ValueError`` for both, for
        non-string ones, and for parameters that are not integers, strings or booleans or break CircleCI's
        limits (100 entries, keys of 128 and values of 512 characters).
        """
        if branch is not None and tag is not None:
            raise ValueError("branch and tag are mutually exclusive")
        if not all(isinstance(v, str | None) for v in (branch, tag)):
            raise ValueError("branch and tag must be strings")
        if parameters is not None and not isinstance(parameters, dict):
            raise ValueError("parameters must be a JSON object")
        if len(parameters or {}) > MAX_PARAMETERS:
            raise ValueError(f"parameters: at most {MAX_PARAMETERS} entries are allowed")
        for name, item in (parameters or {}).items():
            too_long = len(name) > MAX_PARAMETER_KEY or len(str(item)) > MAX_PARAMETER_VALUE
            if too_long or not isinstance(item, str | int | bool):
                raise ValueError(
                    f"parameter {name[:32]!r}: keys have at most {MAX_PARAMETER_KEY} characters, values are strings, "
                    f"integers or booleans of at most {MAX_PARAMETER_VALUE} characters"
                )
        key = _project_key(slug)
        number = self._next_pipeline_number(key)
        branch = None if tag else branch or "main"
        revision = fake_sha(key, tag or branch, number)
        pipeline = CirclePipeline(
            self.new_uuid("pipeline"), slug, number, branch, tag, revision, dict(parameters or {}), self.clock()
        )
        self.pipelines.append(pipeline)
        self._add_workflow(pipeline)
        return pipeline

    def add_circleci_workflow(
        self,
        workflow_id: str,
        slug: str,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
        pipeline_id: str | None = None,
        pipeline_number: int | None = None,
    ) -> CirclePipeline:
        """Make the workflow ``workflow_id`` known (so it can be rerun), in a pipeline of project ``slug``.

        The pipeline is the one with ``pipeline_id`` when the sandbox has it, else a new one with that id and
        number (defaults: fresh). A workflow the sandbox knows already stays as it is.
        """
        known = self.workflows.get(workflow_id)
        if known is not None:
            return known
        pipeline = next((p for p in self.pipelines if pipeline_id is not None and p.id == pipeline_id), None)
        if pipeline is None:
            key = _project_key(slug)
            number = pipeline_number if pipeline_number is not None else self._next_pipeline_number(key)
            branch = None if tag else branch or "main"
            sha = revision or fake_sha(key, tag or branch, number)
            pipeline = CirclePipeline(
                pipeline_id or self.new_uuid("pipeline"), slug, number, branch, tag, sha, {}, self.clock()
            )
            self.pipelines.append(pipeline)
        pipeline.workflow_ids.append(workflow_id)
        self.workflows[workflow_id] = pipeline
        return pipeline

    def _next_pipeline_number(self, key: str) -> int:
        return 1 + max((p.number for p in self.pipelines if _project_key(p.slug) == key), default=0)

    def rerun_workflow(self, workflow_id: str) -> str | None:
        """A new workflow id in the same pipeline, or None when the workflow is unknown."""
        pipeline = self.workflows.get(workflow_id)
        return None if pipeline is None else self._add_workflow(pipeline)

    def _add_workflow(self, pipeline: CirclePipeline) -> str:
        workflow_id = self.new_uuid("workflow")
        pipeline.workflow_ids.append(workflow_id)
        self.workflows[workflow_id] = pipeline
        return workflow_id

    def trigger_job(
        self, vcs: str, org: str, repo: str, branch: str, revision: str | None, build_parameters: dict[str, Any] | None
    ) -> CircleJob:
        """What v1.1 ``tree/{branch}`` does: a new job, ``not_running`` yet."""
        sha = revision or fake_sha(vcs, org, repo, branch)
        return self._add_job(CircleJob(vcs, org, repo, branch, sha, build_parameters, "not_running", "api"))

    def trigger_tag_job(
        self, vcs: str, org: str, repo: str, tag: str, build_parameters: dict[str, Any] | None
    ) -> CircleJob:
        """What v1.1 ``POST /project/{vcs}/{org}/{repo}`` with ``{"tag": …}`` does: a new job of that tag."""
        sha = fake_sha(vcs, org, repo, "tags", tag)
        job = CircleJob(vcs, org, repo, "", sha, build_parameters, "not_running", "api", tag=tag)
        return self._add_job(job)

    def add_circleci_job(
        self, project: str, build_num: int, *, branch: str, revision: str | None = None, status: str = "failed"
    ) -> CircleJob:
        """Make the v1.1 job ``build_num`` of ``project`` (``<vcs>/<org>/<repo>``, ``gh``/``bb`` allowed) known.

        A job the sandbox has under that number already stays as it is. Raises ``ValueError`` for a project
        that is not ``<github|bitbucket>/<org>/<repo>`` or a ``build_num`` that is not a positive integer.
        """
        parts = project.split("/")
        vcs = normalize_vcs(parts[0]) if len(parts) == 3 and all(parts) else None
        if vcs is None or not _is_int(build_num) or build_num < 1:
            raise ValueError(f"job {project!r} #{build_num!r}: need <github|bitbucket>/<org>/<repo> and a build number")
        known = self.find_job(vcs, parts[1], parts[2], build_num)
        if known is not None:
            return known
        sha = revision or fake_sha(vcs, parts[1], parts[2], branch)
        job = CircleJob(vcs, parts[1], parts[2], branch, sha, None, status, "github", build_num=build_num)
        return self._add_job(job)

    def retry_job(self, job: CircleJob) -> CircleJob:
        """What v1.1 ``{build_num}/retry`` does: a queued copy with ``retry_of`` set."""
        return self._add_job(replace(job, status="queued", why="retry", retry_of=job.build_num, build_num=0))

    def find_job(self, vcs: str, org: str, repo: str, build_num: int) -> CircleJob | None:
        """The v1.1 job ``build_num`` of a project."""
        return next((j for j in self.jobs if (j.vcs, j.org, j.repo, j.build_num) == (vcs, org, repo, build_num)), None)

    def _add_job(self, job: CircleJob) -> CircleJob:
        """Add ``job``, numbered after the project's highest job unless it carries its own ``build_num``."""
        mine = [j for j in self.jobs if (j.vcs, j.org, j.repo) == (job.vcs, job.org, job.repo)]
        previous = {"build_num": mine[-1].build_num, "status": mine[-1].status} if mine else None
        number = job.build_num or 1 + max((j.build_num for j in mine), default=0)
        job = replace(job, build_num=number, previous=previous, queued_at=self.clock())
        self.jobs.append(job)
        return job

    # -- Buildkite -------------------------------------------------------------------------------

    def add_buildkite_pipeline(self, name: str) -> BuildkitePipeline:
        """The pipeline ``<org>/<slug>``, created on first use; ``ValueError`` for a name of another form."""
        org, _, slug = name.partition("/")
        if not org or not slug or "/" in slug or any(c.isspace() for c in name):
            raise ValueError(f"pipeline {name!r} is not <org>/<pipeline-slug>")
        known = self.buildkite_pipelines.get(name)
        if known is None:
            known = BuildkitePipeline(org, slug, self.new_uuid("buildkite-pipeline"), self.clock())
            self.buildkite_pipelines[name] = known
        return known

    def add_buildkite_build(
        self, pipeline: str, number: int, *, branch: str, commit: str | None = None, state: str = "passed"
    ) -> BuildkiteBuild:
        """Make build ``number`` of ``pipeline`` known (so it can be rebuilt); a known number stays as it is."""
        if not _is_int(number) or number < 1:
            raise ValueError(f"build number {number!r} is not a positive integer")
        owner = self.add_buildkite_pipeline(pipeline)
        known = self.buildkite_build(owner, number)
        if known is not None:
            return known
        sha = commit or fake_sha("buildkite", pipeline, branch, number)
        message = f"sandbox build {number}"
        return self._new_buildkite_build(owner, branch, sha, message, {}, {}, state, "webhook", number)

    def buildkite_build(self, pipeline: BuildkitePipeline, number: int) -> BuildkiteBuild | None:
        """Build ``number`` of ``pipeline``."""
        return next((b for b in pipeline.builds if b.number == number), None)

    def create_buildkite_build(
        self,
        pipeline: BuildkitePipeline,
        branch: str,
        commit: str,
        message: str | None,
        env: dict[str, Any],
        meta_data: dict[str, Any],
    ) -> BuildkiteBuild:
        """What ``POST …/builds`` does: a new ``scheduled`` build (``HEAD`` stays ``HEAD`` until an agent runs)."""
        text = message or f"sandbox build of {branch}"
        return self._new_buildkite_build(pipeline, branch, commit, text, env, meta_data, "scheduled", "api")

    def rebuild_buildkite_build(self, build: BuildkiteBuild) -> BuildkiteBuild:
        """What ``PUT …/builds/{number}/rebuild`` does: a new build of the same branch, commit, env and meta-data."""
        new = self._new_buildkite_build(
            build.pipeline, build.branch, build.commit, build.message, build.env, build.meta_data, "scheduled", "api"
        )
        new.rebuilt_from = build
        return new

    def _new_buildkite_build(
        self,
        pipeline: BuildkitePipeline,
        branch: str,
        commit: str,
        message: str,
        env: dict[str, Any],
        meta_data: dict[str, Any],
        state: str,
        source: str,
        number: int | None = None,
    ) -> BuildkiteBuild:
        number = number or 1 + max((b.number for b in pipeline.builds), default=0)
        build = BuildkiteBuild(
            pipeline,
            self.new_uuid("buildkite-build"),
            number,
            branch,
            commit,
            message,
            dict(env),
            dict(meta_data),
            state,
            source,
            self.clock(),
        )
        pipeline.builds.append(build)
        return build
