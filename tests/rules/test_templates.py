"""Rendering actions: templates over event fields, defaults from the event, actions that cannot be sent,
and the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest

from chainer.rules import PlannedAction, render_actions
from tests.helpers import (
    RESTART,
    R,
    document,
    only_rule,
    parse_rules,
    problems_of,
)
from tests.helpers import rule_event as event

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "rules"


# ----------------------------------------------------------------------------- rendering


def planned(then: str, when: str = "{status: any}", **changes: Any) -> PlannedAction:
    """The one action of a one-rule document rendered for the base event with ``changes``."""
    (rule,) = only_rule(document(when=when, then=then)).rules
    (action,) = render_actions(rule, event(**changes))
    return action


def test_templates_render_event_fields() -> None:
    """Templates read the event's fields, in plain and nested arguments; numbers render as text."""
    action = planned(
        "\n      - circleci.trigger_pipeline:\n          project: gh/acme/api\n          branch: '{{ event.branch }}'\n"
        "          parameters: {sha: '{{ event.commit }}', from: '{{ event.project }}#{{ event.pipeline_number }}'}"
    )
    assert action.error is None
    assert action.params == {
        "project": "gh/acme/api",
        "branch": "main",
        "parameters": {"sha": "a" * 40, "from": "acme/lib#3"},
    }
    assert (action.rule, action.index, action.action) == ("r", 0, "circleci.trigger_pipeline")


# (id, when, then, event changes, rendered params)
DEFAULTS = [
    (
        "codeship-restart-gets-project",
        "{provider: codeship, status: error}",
        "[{codeship.restart_build: {}}]",
        {"provider": "codeship", "kind": "build", "project": "acme/web"},
        {"project": "acme/web"},
    ),
    (
        "circleci-rerun-gets-workflow-and-from-failed",
        "{provider: circleci}",
        "[{circleci.rerun_workflow: {}}]",
        {},
        {"workflow": "wf-1", "from_failed": True},
    ),
    (
        "written-from-failed-wins",
        "{provider: circleci}",
        "[{circleci.rerun_workflow: {from_failed: false}}]",
        {},
        {"workflow": "wf-1", "from_failed": False},
    ),
    (
        "codeship-trigger-gets-ref-from-branch",
        "{}",
        "[{codeship.trigger_build: {project: acme/release}}]",
        {"branch": "release/2"},
        {"project": "acme/release", "ref": "heads/release/2"},
    ),
    (
        "pipeline-gets-slug-and-branch",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {}}]",
        {},
        {"project": "gh/acme/lib", "branch": "main"},
    ),
    (
        "pipeline-on-tag-gets-no-branch",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {tag: '{{ event.tag }}'}}]",
        {"tag": "v2.0.0"},
        {"project": "gh/acme/lib", "tag": "v2.0.0"},
    ),
    (
        "codeship-v1-restart-gets-build-id",
        "{provider: codeship}",
        "[{codeship.v1_restart_build: {}}]",
        {"provider": "codeship", "kind": "build", "build_id": 4411},
        {"build": 4411},
    ),
    (
        "circleci-v1-retry-gets-legacy-slug-and-build",
        "{provider: circleci}",
        "[{circleci.v1_retry_build: {}}]",
        {"project_slug": "bb/acme/lib"},
        {"project": "bitbucket/acme/lib", "build": 7},
    ),
    (
        "circleci-v1-trigger-gets-branch",
        "{provider: circleci}",
        "[{circleci.v1_trigger_build: {project: github/acme/pkg}}]",
        {},
        {"project": "github/acme/pkg", "branch": "main"},
    ),
]


@pytest.mark.parametrize(("when", "then", "changes", "params"), [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_omitted_arguments_default_from_the_event(
    when: str, then: str, changes: dict[str, Any], params: dict[str, Any]
) -> None:
    """Arguments a rule leaves out take the triggering event's value where the catalogue gives a default."""
    action = planned(then, when=when, **changes)
    assert action.error is None
    assert action.params == params


# (id, when, then, event changes, fragment of the error, argument missing from params)
RENDER_ERRORS = [
    (
        "tag-absent",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {tag: '{{ event.tag }}'}}]",
        {"tag": None},
        "argument 'tag': event.tag is empty for this event",
        "tag",
    ),
    (
        "tag-absent-in-a-parameter",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {parameters: {release: 'v={{ event.tag }}'}}}]",
        {"tag": None},
        "argument 'parameters.release': event.tag is empty for this event",
        "parameters",
    ),
    (
        "tag-empty-text",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {tag: '{{ event.tag }}'}}]",
        {"tag": ""},
        "event.tag is empty",
        "tag",
    ),
    (
        "ref-without-branch",
        "{}",
        "[{codeship.trigger_build: {project: acme/release}}]",
        {"branch": None, "tag": "v1"},
        "argument 'ref' has no value: set it in the rule (no default for this event)",
        "ref",
    ),
    (
        "pipeline-without-slug",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {}}]",
        {"project_slug": None},
        "argument 'project' has no value",
        "project",
    ),
    (
        "rerun-without-workflow-id",
        "{provider: circleci}",
        "[{circleci.rerun_workflow: {}}]",
        {"workflow_id": None},
        "argument 'workflow' has no value",
        "workflow",
    ),
    (
        "v1-restart-for-a-circleci-event",
        "{provider: codeship}",
        "[{codeship.v1_restart_build: {}}]",
        {},
        "needs 'build' or 'project'+'branch'",
        "build",
    ),
    (
        "rendered-text-over-the-circleci-limit",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {parameters: {long: '{{ event.commit * 13 }}'}}}]",
        {},
        "parameters.long: value is over 512 characters",
        "",
    ),
]


@pytest.mark.parametrize(
    ("when", "then", "changes", "fragment", "absent"), [c[1:] for c in RENDER_ERRORS], ids=[c[0] for c in RENDER_ERRORS]
)
def test_an_action_that_cannot_be_sent_carries_an_error(
    when: str, then: str, changes: dict[str, Any], fragment: str, absent: str
) -> None:
    """An empty field, a required argument still missing or a limit broken after rendering gives PlannedAction.error."""
    action = planned(then, when=when, **changes)
    assert action.error is not None and fragment in action.error, action.error
    assert "None" not in action.error
    if absent:
        assert absent not in action.params
    assert all(value is not None and "None" not in str(value) for value in action.params.values())


SANDBOX = [
    ("dunder-on-a-field", "{{ event.branch.__class__ }}"),
    ("subclasses-walk", "{{ event.branch.__class__.__mro__[1].__subclasses__() }}"),
    ("attr-filter", "{{ event | attr('__class__') }}"),
    ("method-globals", "{{ event.branch.format.__globals__ }}"),
    ("literal-dunder", "{{ ''.__class__.__base__ }}"),
    ("number-dunder", "{{ (7).__class__ }}"),
]


@pytest.mark.parametrize("template", [t for _, t in SANDBOX], ids=[i for i, _ in SANDBOX])
def test_the_sandbox_refuses_attribute_tricks_at_render_time(template: str) -> None:
    """Tricks lint cannot see in the template's names pass validation but are refused by the sandbox on render."""
    action = planned(f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    assert action.error is not None and action.error.startswith("argument 'ref': refused by the template sandbox: ")
    assert "unsafe" in action.error
    assert "ref" not in action.params


def test_the_sandbox_stops_an_exploit_that_runs_in_plain_jinja(tmp_path: Path) -> None:
    """A template that runs a shell command under plain Jinja passes lint, but rendering it runs nothing."""
    canary = tmp_path / "canary"
    template = (
        "{{ (event.branch.__class__.__mro__[1].__subclasses__() | selectattr('__name__', 'equalto', '_wrap_close')"
        f" | first).__init__.__globals__['system']('touch {canary}') }}}}"
    )
    jinja2.Environment(autoescape=True).from_string(template).render(event={"branch": "main"})
    assert canary.exists(), "the control: without the sandbox the template does run a command"
    canary.unlink()
    action = planned(f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    assert action.error is not None and "refused by the template sandbox" in action.error
    assert not canary.exists()


LINT_REFUSED = [
    ("dunder-on-event", "{{ event.__class__ }}", "template names `event.__class__`, which events do not have"),
    ("dunder-item-on-event", "{{ event['__init__'] }}", "template names `event.__init__`"),
    ("method-of-event", "{{ event.items() }}", "template names `event.items`"),
    ("raw-payload", "{{ event.raw }}", "template names `event.raw`"),
    ("jinja-global", "{{ cycler.__init__.__globals__.os.system('true') }}", "template names `cycler`"),
    ("lipsum-global", "{{ lipsum.__globals__['os'] }}", "template names `lipsum`"),
    ("range-global", "{{ range(10 ** 9) | list }}", "template names `range`"),
    ("self-reference", "{{ self }}", "template names `self`"),
    ("loop-variable", "{% for c in event.chain %}{{ c }}{% endfor %}", "template names `c`"),
]


@pytest.mark.parametrize(("template", "fragment"), [c[1:] for c in LINT_REFUSED], ids=[c[0] for c in LINT_REFUSED])
def test_lint_refuses_templates_reaching_past_the_event(template: str, fragment: str) -> None:
    """Templates naming anything but the event's canonical fields fail validation, before anything renders."""
    problems = problems_of(
        document(then=f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    )
    assert any(
        p.startswith(f"rules.yaml:5: {R}then[0].codeship.trigger_build.ref: ") and fragment in p for p in problems
    ), problems


FILTERS = [
    ("upper", "{{ event.branch | upper }}", "MAIN"),
    ("replace", "{{ event.project | replace('/', '-') }}", "acme-lib"),
    ("slice", "{{ event.commit[:7] }}", "aaaaaaa"),
    ("arithmetic", "{{ event.pipeline_number + 1 }}", "4"),
    ("default-for-an-empty-field", "{{ event.tag | default('untagged') }}", "untagged"),
    ("conditional", "{% if event.status == 'success' %}green{% else %}red{% endif %}", "green"),
    ("str-method", "{{ event.branch.upper() }}", "MAIN"),
]


@pytest.mark.parametrize(("template", "rendered"), [c[1:] for c in FILTERS], ids=[c[0] for c in FILTERS])
def test_filters_and_expressions_work_on_event_fields(template: str, rendered: str) -> None:
    """Ordinary Jinja filters and expressions on event fields render in the sandbox."""
    action = planned(f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    assert action.error is None
    assert action.params["ref"] == rendered


def test_evaluate_renders_the_actions_of_matching_rules_only() -> None:
    """evaluate attaches rendered actions to a matching rule and none to a rule that does not match."""
    text = (
        "version: 1\nrules:\n"
        "  - name: hit\n    when: {project: acme/lib}\n"
        "    then: [{codeship.trigger_build: {project: acme/release, commit: '{{ event.commit }}'}}]\n"
        "  - name: miss\n    when: {project: acme/lib, branch: dev}\n    then: " + RESTART + "\n"
    )
    hit, miss = parse_rules(text).evaluate(event())
    assert hit.matched and hit.actions[0].params == {"project": "acme/release", "ref": "heads/main", "commit": "a" * 40}
    assert not miss.matched and miss.actions == ()
