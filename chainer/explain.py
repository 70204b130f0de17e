"""What the active rules would do with a payload (DESIGN §8 explain), storing and sending nothing.

Used by ``POST /explain`` and ``chainer explain``. Authenticity is not checked: the operator is
asking a what-if question about a payload they hold, so the provider parses it as it would a
delivery, minus authentication (``Provider.parse_unverified``).
The JSON shape is stable: ``event``, ``rules`` (``name``, ``matched``, ``reasons``), ``actions``
(``rule``, ``action``, ``params``, plus ``error`` when it could not be rendered), and ``ignored``
(a reason, when the payload would be ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer import providers
from chainer.events import BuildEvent
from chainer.plan import ignored_reason
from chainer.providers.base import Ignored
from chainer.rules import Decision, RuleSet


def parse_any(provider: str, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
    """Parse ``body`` as ``provider`` would deliver it, skipping authentication.

    Raises PayloadError, or UnknownProviderError when no provider of that name is registered.
    """
    return providers.get(provider).parse_unverified(headers, body)


def _reasons(decision: Decision) -> list[str]:
    step = decision.join
    if step is not None and step.contributes:
        clauses = ", ".join(f"all[{i}]" for i in step.contributes)
        return [
            f"satisfies {clauses} of the fan-in on {step.on} {step.value}; it fires once all "
            f"{step.clauses} clauses have matching events within {step.within_ms // 1000} s"
        ]
    if decision.mismatch is not None:
        return [decision.mismatch.text]
    return ["every clause matched"]


def explain(ruleset: RuleSet, provider: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The parsed event, every rule's decision clause by clause, and the rendered actions."""
    parsed = parse_any(provider, headers, body)
    result: dict[str, Any] = {"rules_version": ruleset.version, "event": None, "rules": [], "actions": []}
    if isinstance(parsed, Ignored):
        result["ignored"] = parsed.reason
        return result
    decisions = ruleset.explain(parsed)
    result["event"] = parsed.as_dict()
    result["rules"] = [
        {
            "name": d.rule,
            "matched": d.matched,
            "reasons": _reasons(d),
            **(
                {"mismatch": {"field": d.mismatch.field, "expected": d.mismatch.expected, "actual": d.mismatch.actual}}
                if d.mismatch
                else {}
            ),
        }
        for d in decisions
    ]
    result["actions"] = [
        {"rule": a.rule, "action": a.action, "params": a.params, **({"error": a.error} if a.error else {})}
        for d in decisions
        for a in d.actions
    ]
    reason = ignored_reason(parsed, decisions)
    if reason is not None:
        result["ignored"] = reason  # as the intake would answer and audit it
    return result


def render_text(result: Mapping[str, Any]) -> str:
    """A human reading of ``explain``'s result, for the terminal."""
    lines = [f"rules version {result['rules_version']}"]
    event = result.get("event")
    if event:
        where = event.get("branch") or (f"tag {event['tag']}" if event.get("tag") else "-")
        slug = event.get("project_slug")
        title = providers.get(event["provider"]).title
        project = event.get("project") or f"(no project: {title} sent no organization/project name)"
        lines.append(
            f"event {event['event_id']}: {event['provider']} {event['kind']} {project}"
            f"{f' slug {slug}' if slug else ''} {where} {event['status']} (raw {event['raw_status']}) "
            f"commit {event.get('commit') or '-'}"
        )
    if result.get("ignored"):
        lines.append(f"ignored: {result['ignored']}")
    for rule in result["rules"]:
        mark = "MATCH" if rule["matched"] else "no   "
        lines.append(f"  {mark} {rule['name']}: {'; '.join(rule['reasons'])}")
    for action in result["actions"]:
        status = f"  (cannot send: {action['error']})" if action.get("error") else ""
        lines.append(f"  → {action['rule']}: {action['action']} {action['params']}{status}")
    if not result["actions"] and event:
        lines.append("  no action would run")
    return "\n".join(lines)
