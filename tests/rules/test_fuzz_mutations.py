"""rules.yaml fuzz: random mutations of every shipped rules file never crash the loader, and every problem names
its place.

The mutated bases are the repository's ``rules.yaml``, ``deploy/rules/rules.yaml`` and the documents under
tests/data/rules/. A mutation deletes, duplicates or swaps lines, changes indentation, replaces a scalar with
another YAML type (list, map, null, huge int, float, ``!!binary``, ``!!timestamp``, ``!!set``, ``!!python/...``),
adds anchors and aliases (including a billion-laughs alias bomb), truncates the text, or inserts tabs and invalid
UTF-8. Every outcome is a RuleSet or a ``RulesError`` whose every problem starts ``<source>:<line>:`` and whose
line is inside the file (or the document's length plus one, for trouble at its end). ``load_rules`` reads each
mutated file from disk, and ``chainer lint`` (click's CliRunner) prints the same problems and exits 0 or 1.

Hypothesis is derandomized with a fixed number of examples, so CI always runs the same cases.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chainer.cli import main
from chainer.errors import RulesError
from chainer.rules import RuleSet
from tests.conftest import REPO
from tests.helpers import load_rules, parse_rules

BASES = {
    path.relative_to(REPO).as_posix(): path.read_bytes()
    for path in [
        REPO / "rules.yaml",
        REPO / "deploy" / "rules" / "rules.yaml",
        *sorted((REPO / "tests" / "data" / "rules").glob("*.yaml")),
    ]
}
EXAMPLES = 1000
SEEN: list[str] = []

SCALARS = [
    b"[a, b, [c]]",
    b"{k: v, n: {m: 1}}",
    b"null",
    b"~",
    b"",
    b"99999999999999999999999999999999999999999",
    b"-0x7fffffffffffffffffff",
    b"1e400",
    b".nan",
    b"-.inf",
    b"3.5",
    b"true",
    b"!!binary aGVsbG8=",
    b"!!timestamp 2001-12-14t21:59:43.10-05:00",
    b"!!set {a, b}",
    b"!!omap [a: 1, b: 2]",
    b"!!python/object/apply:os.system [echo pwned]",
    b"!!python/name:os.system",
    b"!!int many",
    b"!!float x",
    b"!custom tag",
    b"&anchor value",
    b"*anchor",
    b"*undefined",
    b"&a [*a]",
    b"<<: *anchor",
    b"'unterminated",
    b'"\\xZZ"',
    b"{{ event.nope | nosuchfilter }}",
    b"'{{ event.__class__.__mro__ }}'",
    b"'{% for x in y %}'",
    b"re:([",
    b"x" * 5000,
    b"\t",
    b"\xff\xfe",
    b"\xc3(",
    b"\x00",
    b"?",
    b"- - -",
    b": :",
    b"|",
    b">-",
    b"%YAML 1.1",
    b"---",
    b"...",
]

# A billion-laughs bomb: nine levels of nine aliases each; a loader that expands it builds 9**9 strings.
BOMB = b"\n".join(
    [b'lol0: &l0 "lol"']
    + [b"lol%d: &l%d [%s]" % (n, n, b",".join([b"*l%d" % (n - 1)] * 9)) for n in range(1, 10)]
    + [b"version: 1", b"rules: *l9"]
)

scalar_line = re.compile(rb"^(\s*-?\s*[A-Za-z_.][\w.-]*:\s)(.+)$")


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(BASES)))
    lines = BASES[name].split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [b""]
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "indent", "dedent", "scalar", "insert", "truncate", "bytes", "anchor"]
            )
        )
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "indent":
            lines[at] = draw(st.sampled_from([b" ", b"  ", b"\t", b"    ", b" \t"])) + lines[at]
        elif kind == "dedent":
            lines[at] = lines[at][draw(st.integers(1, 4)) :]
        elif kind == "scalar":
            candidates = [n for n, line in enumerate(lines) if scalar_line.match(line)]
            if candidates:
                at = draw(st.sampled_from(candidates))
                match = scalar_line.match(lines[at])
                assert match is not None
                lines[at] = match.group(1) + draw(st.sampled_from(SCALARS))
        elif kind == "insert":
            lines.insert(at, draw(st.sampled_from([*SCALARS, b"  - name: x", b"- {}", b"rules: []", b"version: 2"])))
        elif kind == "truncate":
            text = b"\n".join(lines)
            lines = text[: draw(st.integers(0, len(text)))].split(b"\n")
        elif kind == "bytes":
            line = lines[at]
            cut = draw(st.integers(0, len(line)))
            lines[at] = (
                line[:cut]
                + draw(st.sampled_from([b"\xff", b"\xc3", b"\t", b"\x00", b"\xe2\x80\xa8", b"\r"]))
                + line[cut:]
            )
        else:  # anchor: name a value and refer to it elsewhere (maybe before it is defined, maybe into itself)
            candidates = [n for n, line in enumerate(lines) if scalar_line.match(line)]
            if len(candidates) >= 2:
                first, second = draw(st.sampled_from(candidates)), draw(st.sampled_from(candidates))
                head = scalar_line.match(lines[first])
                tail = scalar_line.match(lines[second])
                assert head is not None and tail is not None
                lines[first] = head.group(1) + b"&fz " + head.group(2)
                lines[second] = tail.group(1) + b"*fz"
    text = b"\n".join(lines)
    if draw(st.integers(0, 30)) == 0:
        text = BOMB + b"\n" + text
    return name, text


def _check_outcome(source: str, text: bytes, outcome: RuleSet | RulesError) -> None:
    if isinstance(outcome, RuleSet):
        SEEN.append("ruleset")
        return
    SEEN.append("error")
    assert outcome.problems, "a RulesError without problems"
    limit = text.count(b"\n") + 2
    for problem in outcome.problems:
        match = re.match(rf"{re.escape(source)}:(\d+): \S", problem)
        assert match, f"a problem that does not name its place: {problem!r}"
        assert 1 <= int(match.group(1)) <= limit, f"line outside the file ({limit} lines): {problem!r}"


def _parse(text: bytes, source: str) -> RuleSet | RulesError:
    try:
        return parse_rules(text, source)
    except RulesError as exc:
        return exc


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no `explain`: tracing the bomb's 10**5 values is slow
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutated())
def test_mutated_rules_load_or_name_the_place_of_every_problem(tmp_path: Path, case: tuple[str, bytes]) -> None:
    name, text = case
    source = tmp_path / "rules.yaml"
    source.write_bytes(text)
    try:
        outcome: RuleSet | RulesError = load_rules(source)
    except RulesError as exc:
        outcome = exc
    _check_outcome(str(source), text, outcome)
    assert type(_parse(text, name)) is type(outcome)  # the same answer from bytes as from the file


def test_the_fuzz_met_both_outcomes() -> None:
    """The mutations above produced both valid rule sets and errors (so they are neither all no-ops nor all junk)."""
    assert len(SEEN) >= EXAMPLES and {"ruleset", "error"} <= set(SEEN), (len(SEEN), set(SEEN))


RULE_WITH_BOMB = b"""
version: 1
rules:
  - name: bombed
    when: {project: acme/lib}
    then:
      - circleci.trigger_pipeline:
          project: gh/acme/api
          parameters: {payload: *l9}
"""


@pytest.mark.parametrize(
    "text", [BOMB, BOMB.replace(b"version: 1\nrules: *l9", RULE_WITH_BOMB.strip())], ids=["list", "param"]
)
def test_a_billion_laughs_alias_bomb_is_refused_at_its_line(tmp_path: Path, text: bytes) -> None:
    """Regression: the builder expanded every alias in full, so nine levels of nine aliases (a 300-byte file) took
    all the machine's memory. Now aliases may add only a bounded number of values, and the file is refused with
    a problem at the line where the budget ran out (through ``load_rules`` and ``chainer lint``)."""
    path = tmp_path / "bomb.yaml"
    path.write_bytes(text)
    started = time.process_time()
    with pytest.raises(RulesError) as refused:
        load_rules(path)
    assert time.process_time() - started < 30  # a guard only: expanding the bomb would not finish at all
    assert refused.value.problems == [
        f"{path}:2: YAML aliases expand the document past {4 * len(text) + 100_000} values (an alias bomb?)"
    ]
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1 and "alias bomb" in result.stdout


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x07"])
def test_a_control_character_is_a_problem_at_its_line(tmp_path: Path, char: str) -> None:
    """Regression: a control character sent the text to the pure-Python reader, whose constructor raised
    ReaderError outside the loader's error handling, so `chainer lint` crashed with a traceback."""
    path = tmp_path / "rules.yaml"
    path.write_text(BASES["rules.yaml"].decode().replace("version: 1", f"version: 1{char}", 1))
    line = BASES["rules.yaml"].decode().split("\n").index("version: 1") + 1
    with pytest.raises(RulesError) as refused:
        load_rules(path)
    assert refused.value.problems == [f"{path}:{line}: YAML syntax error: control character {char!r} is not allowed"]
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1 and result.stdout.startswith(f"{path}:{line}: YAML syntax error")


def test_aliases_within_the_budget_still_load() -> None:
    """A shared `then` block reused by 200 rules through an alias is an ordinary file, not a bomb."""
    rules = "\n".join(f"  - {{name: r{n}, when: {{project: acme/lib{n}}}, then: *then}}" for n in range(1, 200))
    text = (
        "version: 1\nrules:\n  - name: r0\n    when: {project: acme/lib}\n    then: &then\n"
        "      - circleci.trigger_pipeline: {project: gh/acme/api, parameters: {a: '1', b: '2'}}\n" + rules
    )
    assert len(parse_rules(text).rules) == 200


def test_chainer_lint_on_mutated_files_exits_0_or_1_with_placed_problems(tmp_path: Path) -> None:
    """``chainer lint`` through click on a sample of mutations: exit 0 with a summary, or exit 1 with every
    problem line naming the file and line; never a traceback."""
    runner = CliRunner()
    samples = [BOMB, BASES["rules.yaml"].replace(b"version: 1", b"version: !!binary aGVsbG8="), b"\xff\xfe", b""]
    samples += [BASES["rules.yaml"][:n] for n in range(0, len(BASES["rules.yaml"]), 397)]
    samples += [BASES["rules.yaml"].replace(b"  ", b"\t", n) for n in (1, 5)]
    for n, text in enumerate(samples):
        path = tmp_path / f"r{n}.yaml"
        path.write_bytes(text)
        result = runner.invoke(main, ["lint", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert result.exit_code in (0, 1), (result.exit_code, result.output)
        if result.exit_code == 1:
            lines = [line for line in result.stdout.splitlines() if line.strip()]
            assert lines and all(line.startswith(f"{path}:") for line in lines), result.stdout
