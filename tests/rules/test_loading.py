"""Loading rules files (DESIGN §5): every problem of a file in file order, required arguments without a
default, YAML merge keys and aliases, files that cannot be read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chainer import rules
from chainer.catalogue import ActionSpec, Param
from chainer.errors import RulesError
from chainer.providers import catalogue
from tests.helpers import (
    R,
    document,
    load_rules,
    parse_rules,
    problems_of,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "rules"


# (file, [(line, subject, fragment), ...]) in the order parse_rules must report them
FILES = [
    ("syntax_error.yaml", [(7, "", "YAML syntax error: expected <block end>")]),
    ("not_a_mapping.yaml", [(1, "", "the file must be a mapping with `version: 1` and `rules:`")]),
    (
        "unknown_keys.yaml",
        [
            (3, "max_dept", "unknown key (did you mean 'max_depth'?)"),
            (6, "rule 'typo-everywhere' (rules[0]) descripton", "unknown key (did you mean 'description'?)"),
            (9, "rule 'typo-everywhere' (rules[0]) when.branhc", "unknown key (did you mean 'branch'?)"),
            (
                12,
                "rule 'typo-everywhere' (rules[0]) then[0].codeship.trigger_build.projcet",
                "unknown key (did you mean 'project'?)",
            ),
            (14, "rule 'typo-everywhere' (rules[0]) limit.per_dya", "unknown key (did you mean 'per_day'?)"),
        ],
    ),
    ("duplicate_names.yaml", [(12, "rule 'deploy' (rules[2]) name", "duplicate rule name (first at line 4)")]),
    (
        "duplicate_keys.yaml",
        [
            (9, "rule 'twice' (rules[0]) then[0].codeship.trigger_build.project", "duplicate key (first at line 8)"),
            (10, "rule 'twice' (rules[0]) when", "duplicate key (first at line 5)"),
            (11, "version", "duplicate key (first at line 2)"),
        ],
    ),
    (
        "five_problems.yaml",
        [
            (7, "rule 'first' (rules[0]) when.status", "'green' is not a status or named set"),
            (
                9,
                "rule 'first' (rules[0]) then[0].circleci.trigger_pipeline.branch",
                "template names `event.brnch`, which events do not have (did you mean `event.branch`?)",
            ),
            (
                12,
                "rule 'second' (rules[1]) then[0].codeship.restart_buidl",
                "unknown action (did you mean 'codeship.restart_build'?)",
            ),
            (14, "rule 'second' (rules[1]) when.branch", "bad regex 're:release/(['"),
            (15, "rule 'first' (rules[2]) name", "duplicate rule name (first at line 5)"),
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), FILES, ids=[Path(name).stem for name, _ in FILES])
def test_load_rules_reports_every_problem_of_a_file_in_file_order(
    name: str, expected: list[tuple[int, str, str]]
) -> None:
    """load_rules on a broken file of tests/data/rules reports exactly the expected problems, with path and line."""
    path = DATA / name
    with pytest.raises(RulesError) as info:
        load_rules(path)
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for problem, (line, subject, fragment) in zip(problems, expected, strict=True):
        prefix = f"{path}:{line}: {subject}: " if subject else f"{path}:{line}: "
        assert problem.startswith(prefix), problem
        assert fragment in problem[len(prefix) :], problem


def test_five_mistakes_give_five_problems_in_file_order() -> None:
    """One file with five unrelated mistakes yields five problems at once, sorted by line although
    the second rule puts `then` before `when`."""
    with pytest.raises(RulesError) as info:
        load_rules(DATA / "five_problems.yaml")
    lines = [int(p.split(":")[1]) for p in info.value.problems]
    assert lines == [7, 9, 12, 14, 15]
    assert str(info.value) == "\n".join(info.value.problems)


def test_parse_rules_names_a_required_argument_without_any_default() -> None:
    """An action argument that is required and has no default must be written in the rule."""
    spec = ActionSpec("codeship.test_only", "codeship", (Param("project", (str,), required=True),), "test action")
    base = catalogue()
    extended = dataclasses.replace(base, actions={**base.actions, spec.name: spec})
    with pytest.raises(RulesError) as info:
        rules.parse_rules(document(then="[{codeship.test_only: {}}]"), catalogue=extended)
    (problem,) = info.value.problems
    assert problem == f"rules.yaml:5: {R}then[0].codeship.test_only: missing required argument 'project'"
    ruleset = rules.parse_rules(document(then="[{codeship.test_only: {project: acme/x}}]"), catalogue=extended)
    assert len(ruleset.rules) == 1
    assert ruleset.rules[0].actions[0].name == spec.name


MERGED = """
version: 1
rules:
  - name: restart
    when: &infra {provider: codeship, status: error, branch: main}
    then: [{codeship.restart_build: {}}]
  - name: report
    when:
      <<: *infra
      status: failed
    then: [{codeship.restart_build: {}}]
"""


def test_merge_keys_share_conditions_and_own_keys_win() -> None:
    """A YAML merge key (`<<: *anchor`) copies conditions into a rule; keys the rule writes itself take precedence."""
    restart, report = parse_rules(MERGED).rules
    assert report.clause is not None and restart.clause is not None
    assert report.clause.providers == frozenset({"codeship"})
    assert report.clause.statuses == frozenset({"failed"})
    assert report.clause.patterns["branch"] == restart.clause.patterns["branch"]


def test_a_self_containing_alias_is_a_problem_not_a_crash() -> None:
    """An alias inside its own anchor (`&r [*r]`) is reported with its line instead of recursing forever."""
    problems = problems_of("version: 1\nrules: &r\n  - *r\n")
    assert problems[0] == "rules.yaml:2: rules[0]: a YAML alias may not contain itself"


# ----------------------------------------------------------------------------- reading files


def test_load_rules_on_a_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing rules file is one problem naming its path, not an OSError."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(RulesError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: cannot read the rules file: ")


def test_load_rules_on_a_directory_names_the_path(tmp_path: Path) -> None:
    """A directory where the file should be is one problem naming the path."""
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{tmp_path}: cannot read the rules file: ")


def test_load_rules_refuses_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is one problem with the path and the offending byte."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(document().encode() + b"# caf\xe9\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:1: not UTF-8 text (invalid continuation byte at byte ")
