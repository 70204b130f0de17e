"""The lineage of an event drawn as server-rendered SVG: upstream build → rule and action → downstream build.

Input is ``chainer.web.views.chain_view``'s tree. Builds and actions alternate in columns, left to right;
each leaf takes a row. Nodes are coloured by outcome (build status, action state), the event the page is
about is outlined, and every node links to its event page. No script; every text is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

COLUMN_W = 200
ROW_H = 56
NODE_W = 176
NODE_H = 40
MAX_NODES = 200
_BUILD_COLOURS = {"success": "ok", "failed": "bad", "error": "bad", "stopped": "warn", "running": "busy"}
_ACTION_COLOURS = {"done": "ok", "dead": "bad", "pending": "busy", "calling": "busy", "skipped": "muted"}


@dataclass
class _Node:
    column: int
    row: float
    title: str
    subtitle: str
    tone: str
    href: str | None
    current: bool = False


def lineage_svg(tree: dict[str, Any], current: str) -> str:
    """The SVG markup of the lineage ``tree`` (a ``chain_view`` tree), the event ``current`` outlined."""
    nodes: list[_Node] = []
    edges: list[tuple[int, int]] = []
    next_row = [0]

    def build(node: dict[str, Any], column: int) -> int:
        index = len(nodes)
        event_id = str(node.get("event_id", ""))
        if node.get("missing"):
            title, subtitle, tone = "(expired build)", event_id[:24], "muted"
        else:
            title = f"{node.get('provider') or '?'} {node.get('project') or ''}".strip()
            subtitle = f"{node.get('branch') or node.get('tag') or ''} {str(node.get('commit') or '')[:7]} · " + str(
                node.get("status") or "?"
            )
            tone = _BUILD_COLOURS.get(str(node.get("status")), "muted")
        nodes.append(_Node(column, 0, title, subtitle, tone, f"/ui/events/{event_id}", event_id == current))
        rows = []
        for action in node.get("actions", [])[: MAX_NODES - len(nodes)]:
            a_index = len(nodes)
            state = str(action.get("state") or "?")
            nodes.append(
                _Node(
                    column + 1,
                    0,
                    str(action.get("action") or "?"),
                    f"{action.get('rule')} · {state}",
                    _ACTION_COLOURS.get(state, "muted"),
                    None,
                )
            )
            edges.append((index, a_index))
            child_rows = []
            for child in action.get("builds", []):
                if len(nodes) >= MAX_NODES:
                    break
                c_index = build(child, column + 2)
                edges.append((a_index, c_index))
                child_rows.append(nodes[c_index].row)
            nodes[a_index].row = _middle(child_rows) if child_rows else _take(next_row)
            rows.append(nodes[a_index].row)
        nodes[index].row = _middle(rows) if rows else _take(next_row)
        return index

    build(tree, 0)
    width = (max(n.column for n in nodes) + 1) * COLUMN_W
    height = max(next_row[0], 1) * ROW_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="lineage">'
    ]
    for start, end in edges:
        a, b = nodes[start], nodes[end]
        x1, y1 = a.column * COLUMN_W + NODE_W, a.row * ROW_H + ROW_H / 2
        x2, y2 = b.column * COLUMN_W, b.row * ROW_H + ROW_H / 2
        parts.append(f'<path class="edge" d="M{x1},{y1} C{x1 + 12},{y1} {x2 - 12},{y2} {x2},{y2}"/>')
    for node in nodes:
        x, y = node.column * COLUMN_W, node.row * ROW_H + (ROW_H - NODE_H) / 2
        classes = f"node {node.tone}" + (" current" if node.current else "")
        box = (
            f'<g class="{classes}"><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 8}" y="{y + 16}" class="title">{escape(_clip(node.title))}</text>'
            f'<text x="{x + 8}" y="{y + 32}" class="sub">{escape(_clip(node.subtitle))}</text></g>'
        )
        parts.append(f'<a href="{escape(node.href)}">{box}</a>' if node.href else box)
    parts.append("</svg>")
    return "".join(parts)


def _take(counter: list[int]) -> float:
    counter[0] += 1
    return float(counter[0] - 1)


def _middle(rows: list[float]) -> float:
    return (min(rows) + max(rows)) / 2


def _clip(text: str, size: int = 26) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
