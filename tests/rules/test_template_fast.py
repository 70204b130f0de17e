"""Templates that are only text and ``{{ event.<field> }}`` render without Jinja, with Jinja's exact output.

Every comparison is against the template compiled by Jinja from the same text, rendered through the same
``_render`` that turns Jinja's errors into a ``RenderError``: the text must be byte-identical, or the error
message and argument the same. Hypothesis is derandomized with a fixed number of examples, so CI always runs the
same cases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainer.errors import RenderError
from chainer.events import EVENT_FIELDS, ChainLink
from chainer.rules.templates import _ENV, Template, _render, compile_value, context_for, template_problems
from tests.helpers import parse_rules, rule_event

FIELDS = sorted(EVENT_FIELDS)
FEW = ["branch", "build_id", "tag", "project"]  # most substitutions and drawn values use these, so they meet


def outcome(template: Template, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """What rendering ``template`` as argument ``args.x`` gives: ("ok", text, "") or ("error", message, argument)."""
    try:
        return ("ok", _render(template, context, "args.x"), "")
    except RenderError as exc:
        return ("error", str(exc), exc.argument)


def jinja_only(text: str) -> Template:
    """``text`` compiled by Jinja alone, as every template was before the plain renderer."""
    return Template(text, _ENV.from_string(text), None)


class NoJinja:
    """A compiled template that must not be used: rendering it fails the test."""

    def render(self, context: Mapping[str, Any]) -> str:
        raise AssertionError("Jinja rendered a template the plain renderer should have rendered")


# ----------------------------------------------------------------------------- equivalence with Jinja

OPENERS = ("{{", "{%", "{#")
# Literal text: braces, percent and hash signs, whitespace Jinja may strip, CR and CRLF it rewrites, unicode.
# A literal never holds a tag opener nor ends with "{" (which would open a tag with the next part), so every
# generated text is a plain template and parses.
literal = st.text(alphabet="ab {}%#-~\n\r\t é€😀\\'\"|.[]0", max_size=10).filter(
    lambda s: not any(o in s for o in OPENERS) and not s.endswith("{")
)


@st.composite
def substitution(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(FEW) | st.sampled_from(FIELDS))
    left = draw(st.sampled_from(["{{", "{{-"]))
    right = draw(st.sampled_from(["}}", "-}}"]))
    pad = draw(st.sampled_from(["", " ", "  ", "\n"]))
    return f"{left}{pad}event.{field}{pad}{right}"


comment = st.sampled_from(["{# note #}", "{#- trimmed -#}", "{#\nlines\n#}"])
raw = literal.map(lambda s: "{% raw %}" + s + "{% endraw %}")


@st.composite
def template_text(draw: st.DrawFn) -> str:
    """Literals, comments, raw blocks and substitutions, with at least one substitution."""
    parts = draw(st.lists(st.one_of(literal, substitution(), comment, raw), max_size=8))
    parts.insert(draw(st.integers(0, len(parts))), draw(substitution()))
    return "".join(parts)


value = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=8),
    st.text(alphabet=" \n\r\tab{}%-é😀", max_size=6),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.floats(allow_nan=False),
    st.just(["a", 1]),
    st.just({"k": "v"}),
)


@st.composite
def context(draw: st.DrawFn) -> dict[str, Any]:
    """What templates see: ``context_for`` of an event with drawn field values (None and "" are left out), or a
    context given as is (None and "" kept, as a caller passing its own context may)."""
    names = st.sampled_from(FEW) | st.sampled_from([f for f in FIELDS if f != "chain"])
    values = draw(st.dictionaries(names, value, max_size=6))
    chain = draw(st.sampled_from([(), (ChainLink("evt_0", "up", "acme/up"),)]))
    if draw(st.booleans()):
        return context_for(rule_event(**values, chain=chain))
    return {"event": {**values, "chain": [link.as_dict() for link in chain]}}


@settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)
@given(text=template_text(), ctx=context())
def test_plain_renderer_writes_what_jinja_writes(text: str, ctx: dict[str, Any]) -> None:
    """For text mixing literals and `{{ event.X }}` in every whitespace-control form, and events whose fields are
    text, numbers, true/false, None, empty or other values: the same bytes as Jinja, or the same RenderError."""
    compiled = compile_value(text)
    assert isinstance(compiled, Template)
    assert compiled.parts is not None, f"{text!r} should render without Jinja"
    assert outcome(compiled, ctx) == outcome(jinja_only(text), ctx)


# ----------------------------------------------------------------------------- which templates take the plain path


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("b-{{ event.build_id }}", ("b-", "build_id", "")),
        ("{{ event.branch }}", ("", "branch", "")),
        ("{{ event.project }}#{{ event.pipeline_number }}!\n", ("", "project", "#", "pipeline_number", "!\n")),
        ("a \n {{- event.tag -}} \n b", ("a", "tag", "b")),
        ("x{# note #}\r\ny{% raw %}{{ z }}{% endraw %}", ("x\ny{{ z }}",)),
    ],
)
def test_plain_templates_render_without_jinja(text: str, parts: tuple[str, ...]) -> None:
    """Text and `{{ event.<field> }}` become parts (with Jinja's whitespace control and newlines applied), and a
    render of str and int fields never calls Jinja; any other value type goes to Jinja."""
    compiled = compile_value(text)
    assert isinstance(compiled, Template)
    assert compiled.parts == parts
    ctx = context_for(rule_event(build_id=41, branch="feat/é", project="acme/lib", pipeline_number=3, tag="v1"))
    expected = jinja_only(text).render(ctx)
    assert dataclasses.replace(compiled, template=NoJinja()).render(ctx) == expected
    if len(parts) > 1:
        odd = {"event": {**ctx["event"], parts[1]: True}}
        with pytest.raises(AssertionError, match="Jinja rendered"):
            dataclasses.replace(compiled, template=NoJinja()).render(odd)
        assert compiled.render(odd) == jinja_only(text).render(odd)
        assert "True" in compiled.render(odd)


@pytest.mark.parametrize(
    ("text", "fan_in", "ctx", "rendered"),
    [
        ("{{ event.branch | upper }}", 0, {"event": {"branch": "main"}}, "MAIN"),
        ("{{ event['branch'] }}", 0, {"event": {"branch": "main"}}, "main"),
        ("{{ event.branch ~ '-x' }}", 0, {"event": {"branch": "main"}}, "main-x"),
        ("{{ 'lit' }}-{{ event.branch }}", 0, {"event": {"branch": "main"}}, "lit-main"),
        ("{% if event.tag is defined %}t{% else %}b{% endif %}", 0, {"event": {"branch": "main"}}, "b"),
        ("{{ events[0].branch }}/{{ events[1].branch }}", 2, {"events": [{"branch": "a"}, {"branch": "b"}]}, "a/b"),
        ("{% filter upper %}b-{{ event.branch }}{% endfilter %}", 0, {"event": {"branch": "main"}}, "B-MAIN"),
    ],
)
def test_other_templates_render_through_jinja(text: str, fan_in: int, ctx: dict[str, Any], rendered: str) -> None:
    """Filters, items, expressions, constants, tests and statements, and `events[i]` keep Jinja."""
    assert template_problems(text, fan_in) == []
    compiled = compile_value(text)
    assert isinstance(compiled, Template)
    assert compiled.parts is None
    assert compiled.render(ctx) == rendered == jinja_only(text).render(ctx)


def test_lint_marks_templates_without_compiling_them() -> None:
    """``compile_value(parse=False)`` (lint, before it knows a template parses) still compiles nothing."""
    assert compile_value({"a": ["{{ event.branch }}", "{{ nope("]}, parse=False) == {
        "a": [Template("{{ event.branch }}", None), Template("{{ nope(", None)]
    }
    assert template_problems("{{ event.branch | nosuchfilter }}") == [
        "template syntax error: No filter named 'nosuchfilter'."
    ]


# ----------------------------------------------------------------------------- through the rules of a user


def test_rule_renders_plain_and_filtered_templates_from_an_event() -> None:
    """A rule with plain and filtered templates, evaluated for real events: literal text around the fields is kept,
    numbers render as text, an empty field is the named RenderError, and filters still apply."""
    ruleset = parse_rules(
        "version: 1\nrules:\n  - name: r\n    when: {provider: circleci}\n    then:\n"
        "      - circleci.trigger_pipeline:\n"
        "          project: gh/acme/down\n"
        "          branch: 'b-{{ event.build_id }}-{{ event.branch }}.x'\n"
        "          parameters:\n"
        "            upper: '{{ event.branch | upper }}!'\n"
        '            from: "{{ event.project }}#{{ event.pipeline_number }}\\n"\n'
    )
    compiled = ruleset.rules[0].actions[0].compiled
    assert compiled["branch"].parts is not None and compiled["parameters"]["from"].parts is not None
    assert compiled["parameters"]["upper"].parts is None

    (decision,) = ruleset.evaluate(rule_event(build_id=1234, branch="feat/ü"))
    (action,) = decision.actions
    assert action.error is None
    assert action.params == {
        "project": "gh/acme/down",
        "branch": "b-1234-feat/ü.x",
        "parameters": {"upper": "FEAT/Ü!", "from": "acme/lib#3\n"},
    }

    (decision,) = ruleset.evaluate(rule_event(pipeline_number=None))
    (action,) = decision.actions
    assert action.error == "argument 'parameters.from': event.pipeline_number is empty for this event"
    assert "parameters" not in action.params

    (decision,) = ruleset.evaluate(rule_event(branch=""))
    (action,) = decision.actions
    assert action.error == "argument 'branch': event.branch is empty for this event"
    assert "branch" not in action.params
