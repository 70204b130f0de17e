"""YAML with line numbers: the safe loader's node tree built into dicts and lists that remember lines.

Every mapping and list of a rules document is a ``LinedMap`` or ``LinedList`` carrying the line it
starts on and the line of each key or item, so that the checker can name the line of every problem.
Key-level trouble (duplicate or non-string keys, a merge key without a mapping, self-containing
aliases, tags the safe loader cannot build) is collected as a ``Flaw`` instead of raised, so that
validation goes on and each one is reported in its rule. ``collector_paused`` keeps Python's cyclic
garbage collector out of the way while a big file is read and while its project graph is drawn.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator, Mapping
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


# libyaml's parser (PyYAML's C extension) composes the node tree several times faster than the pure-Python one;
# both mark every node with its line. Where the two read a text differently, the pure-Python parser reads it, so
# that every file reads as it always did: any YAML error (reported in the pure-Python parser's words); texts with
# a tab, a byte order mark past the start, a NEL or Unicode line break, a directive (`%YAML`), or characters the
# pure-Python reader refuses, or a block scalar header touching a comment (`|#`); and, met while building, a plain
# scalar with `?` in a flow collection (text to libyaml, an error to the pure-Python parser), a tag `!x!y` (a
# local tag to libyaml, a handle to the pure-Python parser) and a tag on an empty plain scalar.
_C_LOADER: Any = getattr(yaml, "CSafeLoader", None)
if _C_LOADER is not None:

    class _CLoader(_C_LOADER):  # type: ignore[misc]
        """The C safe loader, resolving each distinct plain scalar's tag once (keys repeat in every rule)."""

        def __init__(self, text: str) -> None:
            super().__init__(text)
            self.tags: dict[str, str] = {}

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is yaml.ScalarNode and implicit[0] and not self.yaml_path_resolvers:
                tag = self.tags.get(value)
                if tag is None:
                    tag = self.tags[value] = super().resolve(kind, value, implicit)
                return tag
            return super().resolve(kind, value, implicit)

    _C_LOADER = _CLoader
_PURE_ONLY = re.compile(r"[\t\x85\u2028\u2029]|.\ufeff|^%|[|>][-+0-9]*#", re.MULTILINE | re.DOTALL)
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_Path = tuple[Any, ...] | None


class _ReadAgain(Exception):
    """The C parser read something the pure-Python parser reads differently."""


class _TooBig(Exception):
    """Aliases expand the document past its budget of values (a billion-laughs bomb); ``line`` is where."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


# How many mapping entries and list items a document may build: each alias is built out in full (the checker and
# templates need plain values), so nine levels of nine aliases would be 9**9 values. Without aliases a document
# cannot have more entries than bytes; aliases may add four values per byte of the file and 100 000 besides.
_BUDGET_PER_BYTE = 4
_BUDGET_EXTRA = 100_000


def compose(text: str, source: str, problems: list[str], flaws: list[Flaw]) -> Any:
    """The document with lines, or None after a YAML syntax error (then ``problems`` holds it).

    Key-level trouble goes to ``flaws`` instead, so that validation goes on.
    """
    budget = _BUDGET_PER_BYTE * len(text) + _BUDGET_EXTRA
    if _C_LOADER is not None and not _PURE_ONLY.search(text) and not _NON_PRINTABLE.search(text):
        c_flaws: list[Flaw] = []
        loader = _C_LOADER(text)
        try:
            node = loader.get_single_node()
            builder = _Builder(loader, c_flaws, from_c=True, flow_marks="?" in text, budget=budget)
            doc = None if node is None else builder.build(node, None)
        except (yaml.YAMLError, _ReadAgain):
            pass  # read again below, by the pure-Python parser, which reports errors in its own words
        except _TooBig as exc:
            problems.append(_too_big(source, exc, budget))
            return None
        else:
            flaws += c_flaws
            return doc
        finally:
            loader.dispose()
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters (NUL, ESC) at once
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problems.append(f"{source}:{line}: YAML syntax error: control character {chr(exc.character)!r} is not allowed")
        return None
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.append(f"{source}:{line}: YAML syntax error: {getattr(exc, 'problem', None) or exc}")
        return None
    finally:
        loader.dispose()
    try:
        return None if node is None else _Builder(loader, flaws, budget=budget).build(node, None)
    except _TooBig as exc:
        problems.append(_too_big(source, exc, budget))
        return None


def _too_big(source: str, exc: _TooBig, budget: int) -> str:
    return f"{source}:{exc.line}: YAML aliases expand the document past {budget} values (an alias bomb?)"


def _text(path: _Path) -> str:
    """A field path kept as nested ``(parent, key)`` pairs (cheap to extend), as text: ``rules[0].when``."""
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = ""
    for key in reversed(keys):
        text = f"{text}[{key}]" if isinstance(key, int) else f"{text}.{key}" if text else key
    return text


def _odd_tag(node: yaml.Node) -> bool:
    """A tag the pure-Python parser reads differently: `!x!y` (a handle to it), or a tag on an empty plain scalar."""
    tag = node.tag
    if type(node) is _Scalar and not node.value and not node.style:
        return tag != _NULL_TAG  # `!x` or `!!str` with nothing after it: `!` gives null there, `!x,` is refused
    return tag[0] == "!" and "!" in tag[1:]


_Scalar = yaml.ScalarNode


class _Builder:
    """Builds a node tree into ``LinedMap``/``LinedList`` values; trouble goes to ``flaws``.

    Most nodes are non-empty text scalars: the loops of ``mapping`` and ``sequence`` take their value
    directly, and call ``build`` for everything else.
    """

    def __init__(
        self, loader: Any, flaws: list[Flaw], *, from_c: bool = False, flow_marks: bool = False, budget: int
    ) -> None:
        self.budget = budget  # mapping entries and list items left to build (aliases count each time)
        self.loader = loader
        self.flaws = flaws
        self.from_c = from_c
        self.flow_marks = flow_marks  # whether the text has a `?` at all: else no flow scalar needs a look
        self.open_nodes: set[int] = set()

    def flaw(self, line: int, path: _Path, message: str) -> None:
        self.flaws.append((line, _text(path), message))

    def build(self, node: yaml.Node, path: _Path) -> Any:
        if type(node) is _Scalar:
            if self.from_c and _odd_tag(node):
                raise _ReadAgain
            if node.tag == _STR_TAG:
                return node.value
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:  # a tag the safe loader refuses (``!!python/name:…``): a problem, not a crash
                self.flaw(node.start_mark.line + 1, path, f"YAML error: {getattr(exc, 'problem', None) or exc}")
                return None
            except Exception:  # a value its tag cannot take: `!!int many`, `!!bool maybe`, `!!timestamp 2001-1214`
                tag = node.tag.replace("tag:yaml.org,2002:", "!!")
                self.flaw(node.start_mark.line + 1, path, f"YAML error: {node.value!r} is not a valid {tag}")
                return None
        key = id(node)
        if key in self.open_nodes:
            self.flaw(node.start_mark.line + 1, path, "a YAML alias may not contain itself")
            return None
        if self.from_c:
            self.check(node)
        self.open_nodes.add(key)
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node, path)
            return self.loader.construct_object(node, deep=True)  # pragma: no cover (the composer makes no other node)
        finally:
            self.open_nodes.discard(key)

    def check(self, node: Any) -> None:
        """Raise ``_ReadAgain`` where the pure-Python parser reads a collection otherwise: its tag, its flow scalars."""
        if _odd_tag(node):
            raise _ReadAgain
        if node.flow_style and self.flow_marks:
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
            for child in children:
                if type(child) is _Scalar and not child.style and "?" in child.value:
                    raise _ReadAgain

    def skipped(self, node: yaml.Node) -> None:
        """Check a value left unbuilt (of a duplicate or non-text key) as ``build`` would, without building it."""
        stack, seen = [node], set()
        while stack:
            item = stack.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            if type(item) is _Scalar:
                if _odd_tag(item):
                    raise _ReadAgain
                continue
            self.check(item)
            stack += [n for pair in item.value for n in pair] if isinstance(item, yaml.MappingNode) else item.value

    def spend(self, node: yaml.Node) -> None:
        self.budget -= len(node.value)
        if self.budget < 0:
            raise _TooBig(node.start_mark.line + 1)

    def mapping(self, node: yaml.MappingNode, path: _Path) -> LinedMap:
        self.spend(node)
        result = LinedMap()
        key_lines: dict[str, int] = {}
        result.line, result.key_lines = node.start_mark.line + 1, key_lines
        merged: list[tuple[int, Any]] = []
        build = self.build
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            tag = key_node.tag
            if tag == _STR_TAG and type(key_node) is _Scalar and key_node.value:
                key = key_node.value
            elif tag == _MERGE_TAG:
                value = build(value_node, path)
                merged += [(line, v) for v in (value if isinstance(value, LinedList) else [value])]
                continue
            else:
                key = build(key_node, path)
            if not isinstance(key, str):
                self.flaw(line, path, f"keys must be strings, got {plain(key)!r}")
                if self.from_c:
                    self.skipped(value_node)
                continue
            if key in key_lines:
                self.flaw(line, (path, key), f"duplicate key (first at line {key_lines[key]})")
                if self.from_c:
                    self.skipped(value_node)
                continue
            if value_node.tag == _STR_TAG and type(value_node) is _Scalar and value_node.value:
                result[key] = value_node.value
            else:
                result[key] = build(value_node, (path, key))
            key_lines[key] = line
        # YAML merge keys (`<<: *common`): the mapping's own keys win, then earlier merged mappings.
        for merge_line, base in merged:
            if not isinstance(base, LinedMap):
                self.flaw(merge_line, path, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            for key, value in base.items():
                if key not in result:
                    result[key] = value
                    key_lines[key] = base.key_lines[key]
        return result

    def sequence(self, node: yaml.SequenceNode, path: _Path) -> LinedList:
        self.spend(node)
        items = LinedList()
        items.line = node.start_mark.line + 1
        items.item_lines = [child.start_mark.line + 1 for child in node.value]
        build = self.build
        items.extend(
            child.value if child.tag == _STR_TAG and type(child) is _Scalar and child.value else build(child, (path, i))
            for i, child in enumerate(node.value)
        )
        return items


def line_of(container: Any, key: str | int | None = None) -> int:
    """The line of ``key`` in ``container`` (a key of a mapping, an index of a list), else the container's."""
    if isinstance(container, LinedMap) and isinstance(key, str) and key in container.key_lines:
        return container.key_lines[key]
    if isinstance(container, LinedList) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", 1)


def plain(value: Any) -> Any:
    """``value`` as plain dicts and lists, without line numbers (keys as text)."""
    # This copies every rule of a file: the Mapping ABC (a slow isinstance) only after the common types.
    if isinstance(value, dict):
        return {str(k): v if type(v) is str else plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [v if type(v) is str else plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside, back on after (unless it was off already).

    Reading a big rules file, or drawing its project graph, makes millions of objects that stay alive, and
    the collector would walk them again and again as they pile up: three quarters of the time of a load of
    10 000 rules (3.8 of 4.9 s, PyYAML's own C loader as much as ours), two thirds of drawing its graph.
    Nothing made there needs it: the only cycles, self-containing YAML aliases, wait for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
