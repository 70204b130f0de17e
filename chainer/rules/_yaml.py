"""YAML with line numbers: the safe loader's node tree built into dicts and lists that remember lines.

Every mapping and list of a rules document is a ``LinedMap`` or ``LinedList`` carrying the line it
starts on and the line of each key or item, so that the checker can name the line of every problem.
Key-level trouble (duplicate or non-string keys, a merge key without a mapping, self-containing
aliases, tags the safe loader cannot build) is collected as a ``Flaw`` instead of raised, so that
validation goes on and each one is reported in its rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
# A problem met while building the document: (line, field path such as ``rules[0].when``, message).
Flaw = tuple[int, str, str]


class LinedMap(dict[str, Any]):
    """A YAML mapping with the line it starts on and the line of each key."""

    line: int
    key_lines: dict[str, int]


class LinedList(list[Any]):
    """A YAML sequence with the line it starts on and the line of each item."""

    line: int
    item_lines: list[int]


def compose(text: str, source: str, problems: list[str], flaws: list[Flaw]) -> Any:
    """The document with lines, or None after a YAML syntax error (then ``problems`` holds it).

    Key-level trouble goes to ``flaws`` instead, so that validation goes on.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.append(f"{source}:{line}: YAML syntax error: {getattr(exc, 'problem', None) or exc}")
        return None
    finally:
        loader.dispose()
    return None if node is None else _build(node, loader, flaws, "", set())


def _build(node: yaml.Node, loader: yaml.SafeLoader, flaws: list[Flaw], path: str, open_nodes: set[int]) -> Any:
    if id(node) in open_nodes:
        flaws.append((node.start_mark.line + 1, path, "a YAML alias may not contain itself"))
        return None
    if isinstance(node, yaml.MappingNode):
        open_nodes.add(id(node))
        result = LinedMap()
        result.line, result.key_lines = node.start_mark.line + 1, {}
        merged: list[tuple[int, Any]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                value = _build(value_node, loader, flaws, path, open_nodes)
                merged += [(line, v) for v in (value if isinstance(value, LinedList) else [value])]
                continue
            key = _build(key_node, loader, flaws, path, open_nodes)
            if not isinstance(key, str):
                flaws.append((line, path, f"keys must be strings, got {plain(key)!r}"))
                continue
            key_path = f"{path}.{key}" if path else key
            if key in result:
                flaws.append((line, key_path, f"duplicate key (first at line {result.key_lines[key]})"))
                continue
            result[key] = _build(value_node, loader, flaws, key_path, open_nodes)
            result.key_lines[key] = line
        # YAML merge keys (`<<: *common`): the mapping's own keys win, then earlier merged mappings.
        for merge_line, base in merged:
            if not isinstance(base, LinedMap):
                flaws.append((merge_line, path, "a merge key (<<) takes a mapping or a list of mappings"))
                continue
            for key, value in base.items():
                if key not in result:
                    result[key] = value
                    result.key_lines[key] = base.key_lines[key]
        open_nodes.discard(id(node))
        return result
    if isinstance(node, yaml.SequenceNode):
        open_nodes.add(id(node))
        items = LinedList()
        items.line, items.item_lines = node.start_mark.line + 1, []
        for i, child in enumerate(node.value):
            items.append(_build(child, loader, flaws, f"{path}[{i}]", open_nodes))
            items.item_lines.append(child.start_mark.line + 1)
        open_nodes.discard(id(node))
        return items
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # a tag the safe loader refuses (``!!python/name:…``) is a problem, not a crash
        flaws.append((node.start_mark.line + 1, path, f"YAML error: {getattr(exc, 'problem', None) or exc}"))
        return None


def line_of(container: Any, key: str | int | None = None) -> int:
    """The line of ``key`` in ``container`` (a key of a mapping, an index of a list), else the container's."""
    if isinstance(container, LinedMap) and isinstance(key, str) and key in container.key_lines:
        return container.key_lines[key]
    if isinstance(container, LinedList) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", 1)


def plain(value: Any) -> Any:
    """``value`` as plain dicts and lists, without line numbers (keys as text)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
