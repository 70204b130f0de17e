"""Seeding the sandbox from the rules and example payloads, so the rules' actions on those events succeed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from chainer.errors import WebhookError
from chainer.events import BuildEvent
from chainer.explain import parse_any
from chainer.providers.circleci.facts import normalize_vcs
from chainer.providers.payload import decode_json_object
from chainer.rules import RuleSet
from chainer.sandbox.state import SandboxState

_V2_STATUS = {"error": "failed"}  # Codeship webhooks say error where API v2 says failed (providers.md §3.3)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def example_events(directory: Path) -> tuple[list[BuildEvent], list[str]]:
    """The events of the webhook bodies in ``directory/*.json`` (by file name), and one problem per unreadable file.

    Each body is parsed as chainer parses a delivery, authentication aside: ``{"build": …}`` as Codeship's,
    anything else as CircleCI's (legacy ``{"payload": …}`` or outbound). Bodies chainer ignores (a ping) are
    left out without a problem.
    """
    events: list[BuildEvent] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        try:
            body = path.read_bytes()
            provider = "codeship" if "build" in decode_json_object(body) else "circleci"
            parsed = parse_any(provider, {}, body)
        except (OSError, WebhookError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if isinstance(parsed, BuildEvent):
            events.append(parsed)
    return events, problems


def seed_sandbox(state: SandboxState, ruleset: RuleSet, events: Iterable[BuildEvent] = ()) -> list[str]:
    """Teach ``state`` what the example ``events`` and ``ruleset`` refer to, so the rules' actions on them succeed.

    From each event, with the ids of its payload: a Codeship event's project (numeric id) and build (numeric
    id, branch, commit, status), which ``codeship.restart_build`` finds by commit and branch and
    ``codeship.v1_restart_build`` by id; a CircleCI event's workflow, which ``circleci.rerun_workflow`` reruns,
    and a job's v1.1 build number, which ``circleci.v1_retry_build`` retries. Then each Codeship project the
    rules name literally: the ``project`` of Codeship actions and of ``when`` clauses that can match a Codeship
    event. Returns one line per event that clashes with what came before (two projects with one numeric id,
    say); everything else is seeded.
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
    return problems


def _seed_event(state: SandboxState, event: BuildEvent) -> None:
    if event.provider == "codeship":
        _seed_codeship(state, event)
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
