"""Loading rules files (DESIGN §5): every problem of a file in file order, required arguments without a
default, YAML merge keys and aliases, files that cannot be read."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import payloads
from chainer import rules
from chainer.catalogue import ActionSpec, Param
from chainer.errors import RulesError
from chainer.providers import catalogue
from chainer.rules import _yaml
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


# ----------------------------------------------------------------------------- the C parser and the pure-Python one

# Documents the two YAML parsers could read differently: anchors, merge keys, aliases, duplicate and odd keys,
# tags, and what libyaml accepts but the pure-Python parser refuses or reads otherwise (a tab between tokens, a `?`
# inside a plain scalar in a flow collection, a tag on an empty scalar, a byte order mark past the start, `|#`).
TRICKY = {
    "merge-keys": MERGED,
    "self-alias": "version: 1\nrules: &r\n  - *r\n",
    "aliases": "version: 1\nx: &w {provider: codeship}\nrules:\n"
    "  - {name: a, when: *w, then: [{codeship.restart_build: {}}]}\n"
    "  - {name: b, when: *w, then: [{codeship.restart_build: {}}]}\n",
    "merge-list-and-bad-merge": "version: 1\nrules:\n  - name: r\n    when: {<<: [{branch: main}, {status: error}]}\n"
    "    then: [{codeship.restart_build: {<<: 5}}]\n",
    "odd-keys": "version: 1\n? [a, b]\n: 1\n7: seven\nnull: x\nrules: []\nrules: {}\n",
    "tags": "version: 1\nrules:\n  - name: r\n    description: !!binary aGVsbG8=\n    when: {branch: !!str 2024}\n"
    "    then: [{codeship.restart_build: {build: !!int '12'}}]\n    max_depth: !custom 3\n",
    "tab-between-tokens": "version: 1\nrules:\n  - name: r\n    when: {status:\terror}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "tab-in-quotes": 'version: 1\nrules:\n  - name: r\n    description: "a\tb"\n    when: {}\n'
    "    then: [{codeship.restart_build: {}}]\n",
    "question-mark-in-flow": "version: 1\nrules:\n  - name: r\n    when: {branch: re:^(?:main)$}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "question-mark-under-duplicate-key": "version: 1\nrules:\n  - name: r\n    when: {}\n    when: {branch: a?b}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "question-mark-quoted": "version: 1\nrules:\n  - name: r\n    when: {branch: 're:^(?:main)$'}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "empty-local-tag": "version: 1\nrules:\n  - name: r\n    description: !\n    when: {}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "empty-str-tag": "version: 1\nrules:\n  - name: r\n    description: !!str\n    when: {}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "tag-with-two-marks": "version: 1\nrules:\n  - name: r\n    description: !a&!b x\n    when: {}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "bom-inside": "version: 1\nrules:\n\ufeff  - {name: r, when: {}, then: [{codeship.restart_build: {}}]}\n",
    "block-scalar-touching-a-comment": "version: 1\nrules:\n  - name: r\n    description: |#\n      x\n    when: {}\n"
    "    then: [{codeship.restart_build: {}}]\n",
    "bad-int": document(extra="    max_depth: !!int many\n"),
    "syntax-error": "version: 1\nrules:\n  - name: r\n   when: {}\n",
}


def _outcome(text: str, source: str = "rules.yaml") -> Any:
    """What parse_rules makes of ``text``: the rules, or the problems."""
    try:
        return parse_rules(text, source).rules
    except RulesError as exc:
        return exc.problems


def _shape(value: Any) -> Any:
    """A composed document with every line it remembers, comparable with ==."""
    if isinstance(value, _yaml.LinedMap):
        return ("map", value.line, value.key_lines, {k: _shape(v) for k, v in value.items()})
    if isinstance(value, _yaml.LinedList):
        return ("list", value.line, value.item_lines, [_shape(v) for v in value])
    return (type(value).__name__, value)


def _composed(text: str) -> Any:
    problems: list[str] = []
    flaws: list[_yaml.Flaw] = []
    return _shape(_yaml.compose(text, "rules.yaml", problems, flaws)), problems, flaws


@pytest.mark.parametrize("name", list(TRICKY))
def test_the_c_parser_reads_every_document_as_the_pure_python_one_did(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libyaml composes the node tree; where it would read a text otherwise than the pure-Python parser did before
    (a tab between tokens, a `?` in a flow scalar, a tag on an empty scalar), the pure-Python parser reads it, so
    that values, lines, problems and their order stay what they were."""
    text = TRICKY[name]
    fast = _composed(text), _outcome(text)
    monkeypatch.setattr(_yaml, "_C_LOADER", None)
    assert fast == (_composed(text), _outcome(text))


def test_a_tab_between_tokens_is_still_the_syntax_error_it_was() -> None:
    """libyaml would take `{status:\terror}`; the file is refused with the pure-Python parser's words, as before."""
    (problem,) = problems_of(TRICKY["tab-between-tokens"])
    assert problem == "rules.yaml:4: YAML syntax error: found character '\\t' that cannot start any token"


def test_a_question_mark_in_a_flow_scalar_is_still_refused() -> None:
    """An unquoted `re:^(?:main)$` inside `{...}` was a syntax error and stays one; quoted, it is a pattern."""
    (problem,) = problems_of(TRICKY["question-mark-in-flow"])
    assert problem == "rules.yaml:4: YAML syntax error: expected ',' or '}', but got '?'"
    (rule,) = parse_rules(TRICKY["question-mark-quoted"]).rules
    assert rule.clause is not None and rule.clause.patterns["branch"].describe() == "re:^(?:main)$"


def test_a_big_generated_file_reads_the_same_with_both_parsers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """400 rules of the benchmark's mix (literal, glob and regex projects, templated actions, limits): the
    same rules, lines and summary whichever parser composes the file."""
    path = tmp_path / "rules.yaml"
    path.write_text(payloads.big_rules(400))
    fast = load_rules(path)
    fast_shape = _composed(path.read_text())
    monkeypatch.setattr(_yaml, "_C_LOADER", None)
    slow = load_rules(path)
    assert len(fast.rules) == 400
    assert fast.rules == slow.rules and fast.summary() == slow.summary()
    assert fast_shape == _composed(path.read_text())


def test_a_valid_file_is_composed_by_libyaml_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a valid file (startup, every reload) never runs the pure-Python YAML parser, about five times slower."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pure-Python YAML parser ran")

    path = tmp_path / "rules.yaml"
    path.write_text(payloads.big_rules(200))
    monkeypatch.setattr(yaml, "SafeLoader", refuse)
    assert len(load_rules(path).rules) == 200
    assert len(load_rules(REPO / "rules.yaml").rules) > 1
    assert [r.name for r in parse_rules(MERGED).rules] == ["restart", "report"]


def test_rules_with_the_same_template_share_one_compiled_template() -> None:
    """A template text is compiled once however many rules use it (a big file repeats `{{ event.branch }}`)."""
    then = "[{circleci.trigger_pipeline: {project: gh/acme/x, branch: '{{ event.branch }}'}}]"
    text = "version: 1\nrules:\n" + "".join(
        f"  - {{name: r{i}, when: {{project: acme/{i}}}, then: {then}}}\n" for i in range(3)
    )
    compiled = [rule.actions[0].compiled["branch"] for rule in parse_rules(text).rules]
    assert compiled[0].template is not None
    assert compiled[0].template is compiled[1].template is compiled[2].template


def test_loading_pauses_the_cyclic_garbage_collector_and_restores_it(tmp_path: Path) -> None:
    """Reading a file runs no collection of Python's cyclic garbage collector (it would walk the millions of
    objects of a big file again and again: three quarters of the time for 10 000 rules), and leaves the
    collector on, or off, as it found it."""
    path = tmp_path / "rules.yaml"
    path.write_text(payloads.big_rules(300))
    known = catalogue()
    runs: list[dict[str, Any]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            runs.append(info)

    threshold = gc.get_threshold()
    gc.collect()
    gc.callbacks.append(record)
    gc.set_threshold(50)  # a collection every 50 new objects, were the collector on: thousands for this file
    try:
        assert len(rules.load_rules(path, catalogue=known).rules) == 300
        assert len(runs) <= 1 and gc.isenabled()  # at most the one due when it is back on
        gc.disable()
        assert len(rules.load_rules(path, catalogue=known).rules) == 300
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(record)
