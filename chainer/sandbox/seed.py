"""Seeding the sandbox from the rules and example payloads, so the rules' actions on those events succeed."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chainer.errors import WebhookError
from chainer.events import BuildEvent
from chainer.explain import parse_any
from chainer.providers.buildkite.actions import PIPELINE
from chainer.providers.circleci.facts import normalize_vcs
from chainer.providers.payload import decode_json_object
from chainer.rules import RuleSet
from chainer.sandbox.state import SandboxState
from chainer.settings import Secret, Settings

_V2_STATUS = {"error": "failed"}  # Codeship webhooks say error where API v2 says failed (providers.md §3.3)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def example_events(directory: Path) -> tuple[list[BuildEvent], list[str]]:
    """The events of the webhook bodies in ``directory/*.json`` (by file name), and one problem per unreadable file.

    Each body is parsed as chainer parses a delivery, authentication aside: ``{"build": …}`` as Codeship's,
    ``{"workflow_run": …}`` or ``{"workflow_job": …}`` as GitHub's, anything else as CircleCI's (legacy
    ``{"payload": …}`` or outbound). Bodies chainer ignores (a ping) are left out without a problem.
    """
    events: list[BuildEvent] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        try:
            body = path.read_bytes()
            provider = _provider_of(decode_json_object(body))
            parsed = parse_any(provider, {}, body)
        except (OSError, WebhookError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if isinstance(parsed, BuildEvent):
            events.append(parsed)
    return events, problems


def _provider_of(data: dict[str, Any]) -> str:
    """Who sent an example body: Buildkite names its ``event`` beside a pipeline, GitHub sends a ``workflow_run`` or
    ``workflow_job``, Codeship sends ``build`` alone."""
    if isinstance(data.get("event"), str) and isinstance(data.get("pipeline"), dict):
        return "buildkite"
    if isinstance(data.get("workflow_run"), dict) or isinstance(data.get("workflow_job"), dict):
        return "github"
    return "codeship" if "build" in data else "circleci"


def sandbox_settings(settings: Settings, state: SandboxState, base: str) -> Settings:
    """``settings`` with every provider's API at the sandbox served at ``base``, with the sandbox's credentials (GitHub
    App credentials are set aside: the sandbox's token stands in for them)."""
    return dataclasses.replace(
        settings,
        github_url=base,
        github_token=Secret(state.github.token),
        github_app_id=None,
        github_app_private_key=None,
        circleci_url=base,
        circleci_token=Secret(state.circleci_token),
        codeship_url=base,
        codeship_v1_url=base,
        codeship_user=state.codeship_user,
        codeship_password=Secret(state.codeship_password),
        codeship_org=None,
        codeship_api_key=Secret(state.codeship_api_key),
        buildkite_url=base,
        buildkite_token=Secret(state.buildkite_token),
    )


def seed_sandbox(state: SandboxState, ruleset: RuleSet, events: Iterable[BuildEvent] = ()) -> list[str]:
    """Teach ``state`` what the example ``events`` and ``ruleset`` refer to, so the rules' actions on them succeed.

    From each event, with the ids of its payload: a Codeship event's project (numeric id) and build (numeric
    id, branch, commit, status), which ``codeship.restart_build`` finds by commit and branch and
    ``codeship.v1_restart_build`` by id; a CircleCI event's workflow, which ``circleci.rerun_workflow`` reruns,
    and a job's v1.1 build number, which ``circleci.v1_retry_build`` retries; a Buildkite event's pipeline and
    build number, which ``buildkite.rebuild`` rebuilds. Then each Codeship project the rules name literally:
    the ``project`` of Codeship actions and of ``when`` clauses that can match a Codeship event; and each
    Buildkite pipeline: the ``pipeline`` of Buildkite actions and the projects of ``provider: buildkite``
    clauses. Returns one line per event that clashes with what came before (two projects with one numeric
    id, say); everything else is seeded.
    """
    problems: list[str] = []
    for event in events:
        try:
            _seed_event(state, event)
        except ValueError as exc:
            problems.append(f"{event.provider} event {event.event_id} of {event.project}: {exc}")
    for name in _literal_codeship_projects(ruleset):
        if state.codeship_project_named(name) is None:
            state.add_codeship_project(name)
    _seed_github_targets(state, ruleset)
    for name in _literal_buildkite_pipelines(ruleset):
        state.add_buildkite_pipeline(name)
    return problems


def _seed_event(state: SandboxState, event: BuildEvent) -> None:
    if event.provider == "codeship":
        _seed_codeship(state, event)
        return
    if event.provider == "github":
        _seed_github(state, event)
        return
    if event.provider == "buildkite":
        if event.project and event.build_id is not None:
            branch, state_of = event.branch or "main", event.raw_status.split("/")[0]  # "passed/blocked": passed
            state.add_buildkite_build(event.project, event.build_id, branch=branch, commit=event.commit, state=state_of)
        return
    slug = event.project_slug
    if not slug:
        return
    if event.workflow_id:
        pipeline = event.raw.get("pipeline")
        pipeline_id = pipeline.get("id") if isinstance(pipeline, dict) else None
        state.add_circleci_workflow(
            event.workflow_id,
            slug,
            branch=event.branch,
            tag=event.tag,
            revision=event.commit,
            pipeline_id=pipeline_id if isinstance(pipeline_id, str) else None,
            pipeline_number=event.pipeline_number,
        )
    if event.kind == "job" and event.build_id is not None and normalize_vcs(slug.split("/")[0]):
        state.add_circleci_job(
            slug, event.build_id, branch=event.branch or "main", revision=event.commit, status=event.raw_status
        )


def _seed_codeship(state: SandboxState, event: BuildEvent) -> None:
    if event.project is None:  # Codeship always names its project; nothing to seed without one
        return
    state.add_codeship_project(event.project, id=event.project_id if isinstance(event.project_id, int) else None)
    if event.build_id is None or not event.branch or not event.commit:
        return
    known = state.codeship_build_numbered(event.build_id)
    if known is None or known.project.name != event.project:  # the same id in another project: ValueError
        status = _V2_STATUS.get(event.raw_status, event.raw_status)
        state.add_codeship_build(
            event.project, branch=event.branch, commit_sha=event.commit, status=status, id=event.build_id
        )


def _literal_codeship_projects(ruleset: RuleSet) -> list[str]:
    names: list[str] = []
    for rule in ruleset.rules:
        for clause in rule.clauses:
            matcher = clause.patterns.get("project")
            if matcher is not None and (clause.providers is None or "codeship" in clause.providers):
                names += [p.text for p in matcher.include if p.literal]
        for action in rule.actions:
            project = action.args.get("project")
            if action.spec.provider == "codeship" and isinstance(project, str) and "{" not in project:
                names += [] if _UUID.match(project) or project.isdigit() else [project]
    return list(dict.fromkeys(names))


def _seed_github(state: SandboxState, event: BuildEvent) -> None:
    """A GitHub event's repository, workflow and run (at its attempt and state), so ``github.rerun_workflow_run``
    finds the run and ``github.dispatch_workflow`` the workflow."""
    if event.project is None or event.build_id is None:
        return
    raw = event.raw.get("workflow_run") if event.kind == "workflow" else None
    run: dict[str, Any] = raw if isinstance(raw, dict) else {}
    path, attempt = run.get("path"), run.get("run_attempt")
    repo_id = event.project_id if isinstance(event.project_id, int) else None
    state.github.add_repo(event.project, id=repo_id)
    status, _, conclusion = event.raw_status.partition("/")
    state.github.add_run(
        event.project,
        event.build_id,
        workflow=path if isinstance(path, str) and path else ".github/workflows/ci.yml",
        workflow_id=int(event.workflow_id) if event.workflow_id and event.workflow_id.isdigit() else None,
        head_branch=event.branch,
        head_sha=event.commit or "0" * 40,
        status=status,
        conclusion=conclusion or None,
        run_attempt=attempt if isinstance(attempt, int) else 1,
    )


def _seed_github_targets(state: SandboxState, ruleset: RuleSet) -> None:
    """Each repository and workflow the GitHub actions of the rules name literally (templates cannot be known)."""
    for rule in ruleset.rules:
        for action in rule.actions:
            if action.spec.provider != "github":
                continue
            repo, workflow = action.args.get("repo"), action.args.get("workflow")
            if not isinstance(repo, str) or "{" in repo or repo.count("/") != 1:
                continue
            state.github.add_repo(repo)
            if isinstance(workflow, str) and "{" not in workflow and not workflow.isdigit():
                state.github.add_workflow(repo, workflow)
            elif isinstance(workflow, int):
                state.github.add_workflow(repo, f"workflow-{workflow}.yml", id=workflow)


def _literal_buildkite_pipelines(ruleset: RuleSet) -> list[str]:
    """The pipelines the rules name literally: ``project`` clauses that can match Buildkite events, and the
    ``pipeline`` of Buildkite actions (the names the sandbox's create and rebuild calls must find)."""
    names: list[str] = []
    for rule in ruleset.rules:
        for clause in rule.clauses:
            matcher = clause.patterns.get("project")
            if matcher is not None and clause.providers is not None and "buildkite" in clause.providers:
                names += [p.text for p in matcher.include if p.literal and PIPELINE.fullmatch(p.text)]
        for action in rule.actions:
            pipeline = action.args.get("pipeline")
            if action.spec.provider == "buildkite" and isinstance(pipeline, str) and PIPELINE.fullmatch(pipeline):
                names.append(pipeline)
    return list(dict.fromkeys(names))
