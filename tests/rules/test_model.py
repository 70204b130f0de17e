"""Matching (DESIGN §5): patterns, named status sets and the first failing clause, in the documented order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chainer.rules import Mismatch
from chainer.rules.model import CLAUSE_ORDER
from tests.helpers import (
    document,
    only_rule,
)
from tests.helpers import rule_event as event

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "rules"


# ----------------------------------------------------------------------------- matching

# (id, when, event changes, matched)
MATCHING = [
    ("glob-exact", "{branch: main}", {"branch": "main"}, True),
    ("glob-whole-value-only", "{branch: main}", {"branch": "main-old"}, False),
    ("glob-case-sensitive", "{branch: main}", {"branch": "Main"}, False),
    ("glob-star", '{branch: "release/*"}', {"branch": "release/1.2"}, True),
    ("glob-star-crosses-slash", '{branch: "release/*"}', {"branch": "release/1.2/hotfix"}, True),
    ("glob-star-needs-prefix", '{branch: "release/*"}', {"branch": "prerelease/1"}, False),
    ("glob-question-one-char", '{branch: "v?"}', {"branch": "v1"}, True),
    ("glob-question-not-two", '{branch: "v?"}', {"branch": "v10"}, False),
    ("glob-class", '{branch: "rc-[0-9]"}', {"branch": "rc-7"}, True),
    ("glob-class-miss", '{branch: "rc-[0-9]"}', {"branch": "rc-x"}, False),
    ("glob-numeric-pattern", "{branch: 2024}", {"branch": "2024"}, True),
    ("list-first", '{branch: [main, "release/*"]}', {"branch": "main"}, True),
    ("list-second", '{branch: [main, "release/*"]}', {"branch": "release/3"}, True),
    ("list-none", '{branch: [main, "release/*"]}', {"branch": "dev"}, False),
    (
        "include-exclude-kept",
        '{branch: {include: ["release/*"], exclude: ["release/1.*"]}}',
        {"branch": "release/2.0"},
        True,
    ),
    (
        "include-exclude-cut",
        '{branch: {include: ["release/*"], exclude: ["release/1.*"]}}',
        {"branch": "release/1.2"},
        False,
    ),
    (
        "include-exclude-outside",
        '{branch: {include: ["release/*"], exclude: ["release/1.*"]}}',
        {"branch": "dev"},
        False,
    ),
    ("exclude-only-kept", "{branch: {exclude: [wip, 'dependabot/*']}}", {"branch": "main"}, True),
    ("exclude-only-cut", "{branch: {exclude: [wip, 'dependabot/*']}}", {"branch": "dependabot/npm"}, False),
    ("exclude-only-needs-a-value", "{branch: {exclude: [wip]}}", {"branch": None}, False),
    ("regex-fullmatch", r"{branch: 're:release/\d+'}", {"branch": "release/12"}, True),
    ("regex-not-search-suffix", r"{branch: 're:release/\d+'}", {"branch": "release/12-rc"}, False),
    ("regex-not-search-prefix", r"{branch: 're:release/\d+'}", {"branch": "old-release/12"}, False),
    ("regex-anchors-allowed", r"{branch: 're:^hotfix-\d+$'}", {"branch": "hotfix-4"}, True),
    ("regex-alternation", "{project: 're:acme/(lib|api)'}", {"project": "acme/api"}, True),
    ("regex-in-list", r"{branch: [main, 're:feature/[A-Z]+-\d+']}", {"branch": "feature/OPS-12"}, True),
    ("tag-glob", '{tag: "v*"}', {"tag": "v1.0.0"}, True),
    ("tag-glob-miss", '{tag: "v*"}', {"tag": "nightly"}, False),
    ("tag-absent-never-matches", '{tag: "*"}', {"tag": None}, False),
    ("tag-empty-never-matches", '{tag: "*"}', {"tag": ""}, False),
    ("tag-omitted-matches-tagless", "{branch: main}", {"tag": None}, True),
    ("workflow", '{workflow: "build*"}', {"workflow": "build-and-test"}, True),
    ("workflow-miss", '{workflow: "build*"}', {"workflow": "deploy"}, False),
    ("workflow-absent", '{workflow: "*"}', {"provider": "codeship", "kind": "build", "workflow": None}, False),
    ("job-list", "{job: [lint, test]}", {"job": "test"}, True),
    ("job-list-miss", "{job: [lint, test]}", {"job": "deploy"}, False),
    ("status-single", "{status: failed}", {"status": "failed"}, True),
    ("status-single-miss", "{status: failed}", {"status": "error"}, False),
    ("status-list", "{status: [failed, canceled]}", {"status": "canceled"}, True),
    ("status-list-miss", "{status: [failed, canceled]}", {"status": "error"}, False),
    ("status-finished-error", "{status: finished}", {"status": "error"}, True),
    ("status-finished-success", "{status: finished}", {"status": "success"}, True),
    ("status-finished-not-running", "{status: finished}", {"status": "running"}, False),
    ("status-finished-not-other", "{status: finished}", {"status": "other"}, False),
    ("status-not-success-canceled", "{status: not_success}", {"status": "canceled"}, True),
    ("status-not-success-not-success", "{status: not_success}", {"status": "success"}, False),
    ("status-not-success-not-running", "{status: not_success}", {"status": "running"}, False),
    ("status-any-running", "{status: any}", {"status": "running"}, True),
    ("status-any-other", "{status: any}", {"status": "other"}, True),
    ("status-set-and-name", "{status: [not_success, running]}", {"status": "running"}, True),
    ("status-omitted-success", "{}", {"status": "success"}, True),
    ("status-omitted-not-failed", "{}", {"status": "failed"}, False),
    ("status-omitted-not-running", "{}", {"status": "running"}, False),
    ("status-omitted-not-error", "{}", {"status": "error"}, False),
    ("provider-single", "{provider: circleci}", {}, True),
    ("provider-single-miss", "{provider: codeship}", {}, False),
    ("provider-list", "{provider: [codeship, circleci]}", {"provider": "codeship"}, True),
    ("kind-single", "{kind: workflow}", {}, True),
    ("kind-list-miss", "{kind: [build, job]}", {"kind": "workflow"}, False),
    ("kind-list", "{kind: [build, job]}", {"kind": "job"}, True),
    ("project-literal", "{project: acme/lib}", {}, True),
    ("project-glob-owner", '{project: "acme/*"}', {"project": "acme/web"}, True),
    ("project-glob-owner-miss", '{project: "acme/*"}', {"project": "other/web"}, False),
    ("project-list", "{project: [acme/api, acme/lib]}", {}, True),
    ("slug-literal", "{slug: gh/acme/lib}", {}, True),
    ("slug-glob", '{slug: "circleci/ORG/*"}', {"project": None, "project_slug": "circleci/ORG/PROJ"}, True),
    ("slug-glob-miss", '{slug: "circleci/ORG/*"}', {"project": None, "project_slug": "circleci/OTHER/PROJ"}, False),
    ("slug-list", "{slug: [circleci/A/B, gh/acme/lib]}", {}, True),
    ("slug-regex", "{slug: 're:circleci/[A-Za-z0-9]+/X1'}", {"project": None, "project_slug": "circleci/Q8m/X1"}, True),
    ("slug-exclude", "{slug: {exclude: ['gh/acme/*']}}", {}, False),
    ("slug-exclude-other", "{slug: {exclude: ['gh/other/*']}}", {}, True),
    ("slug-no-slug", "{slug: '*'}", {"provider": "codeship", "project_slug": None}, False),
    (
        "every-field",
        "{provider: circleci, kind: workflow, project: acme/lib, branch: main, workflow: build, job: test}",
        {},
        True,
    ),
    ("no-conditions", "{}", {"project": "anyone/anything"}, True),
]


@pytest.mark.parametrize(("when", "changes", "matched"), [c[1:] for c in MATCHING], ids=[c[0] for c in MATCHING])
def test_when_matches_events(when: str, changes: dict[str, Any], matched: bool) -> None:
    """A one-rule document matches, or does not match, the base event with ``changes`` applied."""
    ruleset = only_rule(document(when=when))
    (decision,) = ruleset.explain(event(**changes))
    assert decision.matched is matched, decision.mismatch
    assert (decision.mismatch is None) is matched


# ----------------------------------------------------------------------------- the first failing clause

# (id, when, event changes, Mismatch)
MISMATCHES = [
    (
        "provider",
        "{provider: codeship}",
        {},
        Mismatch("provider", ["codeship"], "circleci", "provider `circleci` is not `codeship`"),
    ),
    (
        "kind",
        "{kind: [build, job]}",
        {},
        Mismatch("kind", ["build", "job"], "workflow", "kind `workflow` is not `build`, `job`"),
    ),
    (
        "project",
        '{project: "acme/web-*"}',
        {},
        Mismatch("project", "acme/web-*", "acme/lib", "project `acme/lib` does not match `acme/web-*`"),
    ),
    (
        "project-absent-opaque-slug",
        "{project: acme/lib}",
        {"project": None, "project_slug": "circleci/ORG/PROJ"},
        Mismatch(
            "project",
            "acme/lib",
            None,
            "project is absent for this event: CircleCI sent empty organization.name/project.name (GitHub App, "
            "GitLab and Bitbucket DC projects), and its slug `circleci/ORG/PROJ` is opaque; the rule wants project "
            "`acme/lib`: match the slug with `slug:` instead",
        ),
    ),
    (
        "slug",
        '{slug: "circleci/ORG/*"}',
        {},
        Mismatch("slug", "circleci/ORG/*", "gh/acme/lib", "slug `gh/acme/lib` does not match `circleci/ORG/*`"),
    ),
    (
        "slug-of-a-codeship-event",
        "{slug: gh/acme/lib}",
        {"provider": "codeship", "project_slug": None},
        Mismatch(
            "slug",
            "gh/acme/lib",
            None,
            "slug is empty for this event; the rule wants `gh/acme/lib` (only CircleCI events have a slug; "
            "this is a codeship event)",
        ),
    ),
    (
        "status-named-set",
        "{status: not_success}",
        {},
        Mismatch(
            "status", "not_success", "success", "status `success` (raw `success`) is not one of canceled, error, failed"
        ),
    ),
    (
        "status-default",
        "{}",
        {"status": "error", "raw_status": "infrastructure_fail"},
        Mismatch("status", "success", "error", "status `error` (raw `infrastructure_fail`) is not one of success"),
    ),
    (
        "status-list",
        "{status: [failed, error]}",
        {"status": "canceled", "raw_status": "canceled"},
        Mismatch(
            "status", ["failed", "error"], "canceled", "status `canceled` (raw `canceled`) is not one of error, failed"
        ),
    ),
    (
        "branch-exclude",
        "{branch: {include: ['*'], exclude: ['release/*']}}",
        {"branch": "release/1.2"},
        Mismatch(
            "branch",
            {"include": ["*"], "exclude": ["release/*"]},
            "release/1.2",
            "branch `release/1.2` matched exclude `release/*`",
        ),
    ),
    (
        "branch-list",
        '{branch: [main, "release/*"]}',
        {"branch": "dev"},
        Mismatch("branch", ["main", "release/*"], "dev", "branch `dev` does not match `main`, `release/*`"),
    ),
    (
        "branch-empty",
        "{branch: main}",
        {"branch": None},
        Mismatch("branch", "main", None, "branch is empty for this event; the rule wants `main`"),
    ),
    (
        "tag-absent",
        '{tag: "v*"}',
        {"tag": None},
        Mismatch("tag", "v*", None, "tag is empty for this event; the rule wants `v*`"),
    ),
    ("tag", '{tag: "v*"}', {"tag": "nightly"}, Mismatch("tag", "v*", "nightly", "tag `nightly` does not match `v*`")),
    (
        "workflow-regex",
        "{workflow: 're:^deploy-.*'}",
        {},
        Mismatch("workflow", "re:^deploy-.*", "build", "workflow `build` does not match `re:^deploy-.*`"),
    ),
    (
        "job",
        "{job: [lint, e2e]}",
        {},
        Mismatch("job", ["lint", "e2e"], "test", "job `test` does not match `lint`, `e2e`"),
    ),
]


@pytest.mark.parametrize(("when", "changes", "expected"), [c[1:] for c in MISMATCHES], ids=[c[0] for c in MISMATCHES])
def test_explain_gives_the_failing_clause_with_expected_actual_and_text(
    when: str, changes: dict[str, Any], expected: Mismatch
) -> None:
    """A rule that does not match reports the field, what it wanted as written, what the event had, and why."""
    (decision,) = only_rule(document(when=when)).explain(event(**changes))
    assert decision.matched is False
    assert decision.mismatch == expected
    assert decision.actions == ()


FULL_WHEN = (
    "{provider: circleci, kind: workflow, project: acme/lib, slug: gh/acme/*, status: success, branch: main, "
    "tag: 'v*', workflow: build, job: test}"
)
BROKEN = {
    "provider": {"provider": "codeship"},
    "kind": {"kind": "job"},
    "project": {"project": "acme/other"},
    "slug": {"project_slug": "gh/other/lib"},
    "status": {"status": "failed"},
    "branch": {"branch": "dev"},
    "tag": {"tag": "nightly"},
    "workflow": {"workflow": "deploy"},
    "job": {"job": "lint"},
}


def test_the_documented_clause_order() -> None:
    """Clauses are checked in DESIGN's order: provider, kind, project (then its slug), status, branch, tag,
    workflow, job."""
    assert CLAUSE_ORDER == ("provider", "kind", "project", "slug", "status", "branch", "tag", "workflow", "job")
    assert list(BROKEN) == list(CLAUSE_ORDER)


@pytest.mark.parametrize("first", CLAUSE_ORDER, ids=[f"from-{name}" for name in CLAUSE_ORDER])
def test_with_several_clauses_failing_the_earliest_is_reported(first: str) -> None:
    """Breaking every clause from ``first`` on reports ``first``, whatever fails after it."""
    ruleset = only_rule(document(when=FULL_WHEN))
    assert ruleset.explain(event(tag="v1"))[0].matched
    changes: dict[str, Any] = {"tag": "v1"}
    for name in CLAUSE_ORDER[CLAUSE_ORDER.index(first) :]:
        changes.update(BROKEN[name])
    (decision,) = ruleset.explain(event(**changes))
    assert decision.mismatch is not None and decision.mismatch.field == first


def test_status_is_reported_before_branch() -> None:
    """An event failing both branch and status reports status, the earlier clause."""
    (decision,) = only_rule(document(when="{branch: 'release/*', status: success}")).explain(
        event(branch="main", status="failed", raw_status="failed")
    )
    assert decision.mismatch == Mismatch(
        "status", "success", "failed", "status `failed` (raw `failed`) is not one of success"
    )
