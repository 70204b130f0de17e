"""Action arguments: sandboxed Jinja templates compiled at load, rendered per event, checked before sending.

Templates see ``event`` (the triggering event's canonical fields) and, in a fan-in, ``events[i]``
(the contributing events in clause order). The environment is Jinja's sandbox with strict undefined
values, so a field the event lacks is a ``RenderError`` naming the argument, never the text "None".
``argument_problems`` holds the checks lint and rendering share: types, exclusive pairs, groups one of
which must be filled, and each argument's own limits as its provider declares them (``Param.check``).

Most templates are text with ``{{ event.<field> }}`` in it. For those, compiling also keeps the template's
parts (literal text and field names, read off Jinja's own parse tree, so whitespace control and newlines are
already applied) and rendering joins them without Jinja's per-render context: the same text Jinja writes, the
same error for an empty field, and Jinja itself for any value that is not a plain ``str`` or ``int``.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from chainer.catalogue import ActionSpec
from chainer.errors import RenderError
from chainer.events import EVENT_FIELDS, BuildEvent
from chainer.rules.model import PlannedAction, Rule

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_TYPE_NAMES: Mapping[type, str] = {str: "a string", int: "a number", bool: "true/false", dict: "a mapping"}


@dataclass(frozen=True, slots=True)
class Template:
    """A templated argument value: its text and the compiled template (None when only marked, not parsed).

    ``parts`` is set when the template is only text and ``{{ event.<field> }}``: literal text at even
    indexes, field names at odd ones (``("b-", "build_id", "")`` for ``b-{{ event.build_id }}``).
    """

    source: str
    template: Any
    parts: tuple[str, ...] | None = None

    def render(self, context: Mapping[str, Any]) -> str:
        parts = self.parts
        if parts is not None:
            event = context.get("event")
            if type(event) is dict:
                pieces = list(parts)
                for i in range(1, len(parts), 2):
                    value = event.get(parts[i], _MISSING)
                    kind = type(value)
                    if kind is str:
                        pieces[i] = value
                    elif kind is int:  # not bool, not an int subclass such as an enum: str() is what Jinja writes
                        pieces[i] = str(value)
                    elif value is _MISSING:  # Jinja's own error for it: StrictUndefined of the dict and field
                        str(_ENV.undefined(obj=event, name=parts[i]))  # raises UndefinedError
                        break
                    else:  # None, bool, float, list, dict, …: whatever Jinja writes for them
                        break
                else:
                    return "".join(pieces)
        rendered: str = self.template.render(context)
        return rendered


_MISSING: Any = object()
# Fields a template may read as `event.<field>` without Jinja: a dict attribute of the same name would win
# over the key in Jinja's getattr, so such a field (none today) always goes through Jinja.
_PLAIN_FIELDS = frozenset(f for f in EVENT_FIELDS if not hasattr(dict, f))


def _plain_parts(tree: nodes.Template) -> tuple[str, ...] | None:
    """The parts of a template that is only text and ``{{ event.<field> }}``; None for anything else."""
    parts = [""]
    for output in tree.body:
        if type(output) is not nodes.Output:
            return None
        for child in output.nodes:
            if type(child) is nodes.TemplateData:
                parts[-1] += child.data
            elif (
                type(child) is nodes.Getattr
                and child.ctx == "load"
                and child.attr in _PLAIN_FIELDS
                and type(child.node) is nodes.Name
                and child.node.name == "event"
                and child.node.ctx == "load"
            ):
                parts += [child.attr, ""]
            else:
                return None
    return tuple(parts)


def template_problems(text: str, fan_in: int = 0) -> list[str]:
    """Syntax errors and names a template may not use: ``event.<field>``, and ``events[i].<field>`` in fan-in."""
    return list(_template_problems(text, fan_in))


# A big rules file repeats a few templates (`{{ event.branch }}`) many times: each text is parsed, checked and
# compiled once. Both caches are bounded; the compiled templates are immutable and shared by every rule using them.
@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    try:
        tree = _ENV.parse(text)
        parts = _plain_parts(tree)  # before compiling: Jinja's optimizer may rewrite the tree in place
        return Template(text, _ENV.from_string(tree), parts)
    except TemplateSyntaxError:
        return Template(text, _ENV.from_string(text))  # raises the error exactly as compiling the text does


@functools.lru_cache(maxsize=1024)
def _template_problems(text: str, fan_in: int) -> tuple[str, ...]:
    try:
        tree = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        return (f"template syntax error: {exc.message}",)
    problems = []
    allowed = ("event", "events") if fan_in else ("event",)
    for node in tree.find_all(nodes.Name):
        if node.name not in allowed and node.ctx == "load":
            problems.append(f"template names `{node.name}`; only {' and '.join(f'`{a}`' for a in allowed)} exist here")
    for item in tree.find_all(nodes.Getitem) if fan_in else ():  # outside a fan-in, `events` is refused above
        target = getattr(item, "node", None)
        if isinstance(target, nodes.Name) and target.name == "events":
            index = getattr(getattr(item, "arg", None), "value", None)
            if not isinstance(index, int) or not 0 <= index < fan_in:
                problems.append(f"template names `events[{index}]`; this fan-in has events[0] to events[{fan_in - 1}]")
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(access, "node", None)
        if isinstance(base, nodes.Name) and base.name == "event":
            shown = "event"
        elif isinstance(base, nodes.Getitem) and isinstance(base.node, nodes.Name) and base.node.name == "events":
            shown = f"events[{getattr(base.arg, 'value', '?')}]"
        else:
            continue
        attr = (
            access.attr if isinstance(access, nodes.Getattr) else getattr(getattr(access, "arg", None), "value", None)
        )
        if not isinstance(attr, str) or attr not in EVENT_FIELDS:
            close = difflib.get_close_matches(str(attr), sorted(EVENT_FIELDS), n=1)
            hint = f" (did you mean `{shown}.{close[0]}`?)" if close else ""
            problems.append(f"template names `{shown}.{attr}`, which events do not have{hint}")
    if not problems:
        try:  # what only compiling finds, such as a filter Jinja does not have: a problem, not a crash at load
            _compiled(text)
        except TemplateSyntaxError as exc:
            problems.append(f"template syntax error: {exc.message}")
    return tuple(problems)


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def compile_value(value: Any, *, parse: bool = True) -> Any:
    """``value`` with every templated text replaced by a ``Template``.

    ``parse=False`` marks templates without parsing them: lint checks arguments before it knows they parse.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        return _compiled(value) if parse else Template(value, None)
    if isinstance(value, dict):
        return {k: compile_value(v, parse=parse) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v, parse=parse) for v in value]
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, Mapping):
        return {k: compile_value(v, parse=parse) for k, v in value.items()}
    return value


def _render(value: Any, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, Template):
        try:
            return value.render(context)
        except UndefinedError as exc:
            missing = re.search(r"attribute '([^']+)'", str(exc))
            what = f"event.{missing.group(1)}" if missing else "a value"
            raise RenderError(f"argument '{path}': {what} is empty for this event", argument=path) from None
        except SecurityError as exc:
            raise RenderError(f"argument '{path}': refused by the template sandbox: {exc}", argument=path) from None
        except Exception as exc:  # any template runtime failure must become a clear error
            raise RenderError(f"argument '{path}': {type(exc).__name__}: {exc}", argument=path) from None
    if isinstance(value, Mapping):
        return {k: _render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _fields(event: BuildEvent) -> dict[str, Any]:
    # Fields without a value are left out so that StrictUndefined names them instead of rendering "None".
    return {k: v for k, v in event.template_context().items() if v is not None and v != ""}


def context_for(event: BuildEvent, events: Sequence[BuildEvent] = ()) -> dict[str, Any]:
    """What templates see: ``event``, and ``events`` for a fan-in."""
    context: dict[str, Any] = {"event": _fields(event)}
    if events:
        context["events"] = [_fields(e) for e in events]
    return context


def argument_problems(spec: ActionSpec, params: Mapping[str, Any], final: bool) -> list[str]:
    """Type, exclusivity, one-of and limit checks; ``final`` adds required-argument and entry checks."""
    problems = []
    for name, value in params.items():
        param = spec.param(name)
        if param is None:
            continue
        if isinstance(value, Template):
            if str not in param.types:
                wanted = " or ".join(_TYPE_NAMES[t] for t in param.types)
                problems.append(f"argument '{name}' is a template, which renders text, but must be {wanted}")
            continue
        ok = isinstance(value, param.types) and not (bool not in param.types and isinstance(value, bool))
        if not ok:
            wanted = " or ".join(_TYPE_NAMES[t] for t in param.types)
            problems.append(f"argument '{name}' must be {wanted}, got {type(value).__name__} {value!r}")
    for a, b in spec.exclusive:
        if params.get(a) is not None and params.get(b) is not None:
            problems.append(f"arguments '{a}' and '{b}' cannot both be given")
    if final and spec.one_of and not any(all(_given(params.get(n)) for n in g) for g in spec.one_of):
        needs = "needs " + " or ".join("+".join(f"'{n}'" for n in g) for g in spec.one_of)
        problems.append(f"{needs}: {spec.one_of_reason}" if spec.one_of_reason else needs)
    for name, value in params.items():
        param = spec.param(name)
        if param is not None and param.check is not None:
            problems += param.check(value)
        if final and param is not None and param.entries is not None and isinstance(value, Mapping):
            problems += [f"{name}.{key}: {flaw}" for key, item in value.items() if (flaw := param.entries(item))]
    return problems


def _given(value: Any) -> bool:
    """Whether a rendered argument has a value: None, empty and blank text count as left out."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def render_actions(
    rule: Rule, event: BuildEvent, events: Sequence[BuildEvent] = (), context: Mapping[str, Any] | None = None
) -> tuple[PlannedAction, ...]:
    """Render ``rule``'s actions for ``event``: written arguments, then defaults from the event.

    For a fan-in, ``events`` are the contributing events (``events[i]`` in templates) and ``event``
    is the one that completed the join.
    """
    context = context if context is not None else context_for(event, events)
    planned = []
    for template in rule.actions:
        spec = template.spec
        params: dict[str, Any] = {}
        error: str | None = None
        try:
            for name, value in template.compiled.items():
                params[name] = _render(value, context, name)
        except RenderError as exc:
            error = str(exc)
        for param in spec.params:
            value = param.default_for(event, template.args)
            if value is not None:
                params[param.name] = value
        if params.pop("pass_chain", False) is True and spec.carry_chain is not None:
            # The lineage travels with the action: the cause's chain and this action, deepest last.
            links = [f"{link.event_id}:{link.rule}" for link in event.chain] + [f"{event.event_id}:{rule.name}"]
            params = spec.carry_chain(params, " ".join(links))
        if error is None:
            missing = [p.name for p in spec.params if p.required and params.get(p.name) in (None, "")]
            if missing:
                error = f"argument '{missing[0]}' has no value: set it in the rule (no default for this event)"
        if error is None:
            problems = argument_problems(spec, params, final=True)
            error = problems[0] if problems else None
        planned.append(PlannedAction(rule.name, template.index, spec.name, params, error))
    return tuple(planned)
