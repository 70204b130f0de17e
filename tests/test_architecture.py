"""The layout keeps the promises of docs/architecture.md: every module on the map, no import cycles, small
modules, one provider boundary, pure parsing and rules, every Redis key in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "chainer"
DOC = REPO / "docs" / "architecture.md"
PROVIDER_NAMES = ("codeship", "circleci", "github", "buildkite")
# Where provider names may appear freely in code: the providers, their emulation, settings and the CLI.
PROVIDER_HOMES = ("chainer/providers/", "chainer/sandbox/", "chainer/settings.py", "chainer/cli.py")
# Modules that must stay pure: no web framework, HTTP client, Redis or arq, and no chainer I/O layers.
PURE = ("chainer/rules/", "chainer/providers/payload.py", "chainer/events.py", "chainer/catalogue.py")
PURE_PARSERS = re.compile(r"^chainer/providers/[a-z]+/parse\.py$")
IMPURE_LIBRARIES = ("starlette", "httpx", "redis", "arq", "uvicorn")
IMPURE_CHAINER = ("chainer.web", "chainer.store", "chainer.app", "chainer.worker", "chainer.jobs", "chainer.intake")
# The two logger names operators filter on (docs/architecture.md); everything else logs as its module.
NAMED_LOGGERS = {"chainer/accesslog.py": "chainer.access", "chainer/providers/http.py": "chainer.downstream"}


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _type_only_nodes(tree: ast.Module) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    return hidden


def _imported(name: str, path: Path, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module name ``name`` imports, in absolute form.

    ``from a import b`` gives ``a.b`` when that is a module of ``modules`` (a submodule, not the package's
    ``__init__``), else ``a`` and ``a.b``.
    """
    tree = _tree(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    hidden = _type_only_nodes(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                targets.update((target,) if target in modules else (base, target))
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = frozenset(modules)
    return {
        name: {t for t in _imported(name, path, known) if t in known and t != name} for name, path in modules.items()
    }


def test_every_module_is_on_the_map_and_every_mapped_module_exists() -> None:
    """docs/architecture.md lists each module of chainer/ once, and names no module that is gone."""
    mapped = set(re.findall(r"^\| `(chainer/[\w/]+\.py)` \|", DOC.read_text(encoding="utf-8"), re.MULTILINE))
    actual = {_relative(path) for path in PACKAGE.rglob("*.py")}
    assert sorted(mapped - actual) == [], "docs/architecture.md names modules that do not exist"
    assert sorted(actual - mapped) == [], "modules missing from the map in docs/architecture.md"


def test_no_import_cycles() -> None:
    """No chainer module reaches itself through its imports (type-only imports aside)."""
    graph = _graph()
    cycles: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []


def test_modules_are_small_and_app_is_composition_only() -> None:
    """No module passes 500 lines; app.py stays under 200."""
    sizes = {_relative(p): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > 500} == {}
    assert sizes["chainer/app.py"] < 200


def test_the_core_imports_the_registry_never_a_provider() -> None:
    """Outside chainer/providers/ (and its emulation), nothing imports a provider; no provider imports another."""
    offenders = []
    providers = {f"chainer.providers.{name}" for name in PROVIDER_NAMES}
    for name, targets in _graph().items():
        reached = {p for p in providers for t in targets if t == p or t.startswith(p + ".")}
        own = {p for p in providers if name == p or name.startswith(p + ".")}
        if name == "chainer.providers" or name.startswith("chainer.sandbox"):
            continue  # the registry imports every provider (its job); the emulation shares their facts
        if reached - own:
            offenders.append(f"{name} imports {sorted(reached - own)}")
    assert offenders == []


def test_provider_names_appear_only_in_their_homes() -> None:
    """The registry is the way: no provider is named outside the providers, sandbox, settings and CLI, not even
    in a comment or docstring (what a module says about one provider it says about all)."""
    mentions = []
    for path in PACKAGE.rglob("*.py"):
        where = _relative(path)
        if where.startswith(PROVIDER_HOMES):
            continue
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(name in text.lower() for name in PROVIDER_NAMES):
                mentions.append(f"{where}:{line}: {text.strip()[:80]!r}")
    assert mentions == [], "\n".join(mentions)


@pytest.mark.parametrize("library", IMPURE_LIBRARIES)
def test_pure_parsing_and_rules_import_no_io(library: str) -> None:
    """Rules, payload reading, parsers, events and the catalogue import no web, HTTP, Redis or queue code."""
    offenders = []
    for name, path in _modules().items():
        where = _relative(path)
        if not (where.startswith(PURE) or PURE_PARSERS.match(where)):
            continue
        for target in _imported(name, path):
            if target == library or target.startswith(library + "."):
                offenders.append(f"{where} imports {target}")
            if library == IMPURE_LIBRARIES[0] and target.startswith((*IMPURE_CHAINER, "chainer.providers.http")):
                offenders.append(f"{where} imports {target}")
    assert offenders == []


def test_rules_import_nothing_under_providers() -> None:
    """chainer/rules/ receives the catalogue as data: it imports chainer.catalogue, never chainer.providers."""
    offenders = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        if name.startswith("chainer.rules")
        for target in targets
        if target.startswith("chainer.providers")
    ]
    assert offenders == []


def test_only_the_composition_roots_build_settings_from_the_environment() -> None:
    """Settings.from_env is called by the composition roots (app, worker, runner, CLI) only."""
    roots = {"chainer/app.py", "chainer/worker.py", "chainer/runner.py", "chainer/cli.py", "chainer/settings.py"}
    callers = {
        _relative(path) for path in PACKAGE.rglob("*.py") if "Settings.from_env(" in path.read_text(encoding="utf-8")
    }
    assert callers <= roots


def test_loggers_are_named_after_their_module() -> None:
    """logging.getLogger(__name__) everywhere, but for the two names operators filter on."""
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        where = _relative(path)
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "logging.getLogger" and node.args):
                continue
            if node.args and ast.unparse(node.args[0]) == "__name__":
                continue
            if where == "chainer/logs.py":  # configures other libraries' loggers by their names
                continue
            named = NAMED_LOGGERS.get(where)
            if not (isinstance(node.args[0], ast.Constant) and node.args[0].value == named):
                wrong.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert wrong == []


def test_no_formatter_fights() -> None:
    """No `# fmt: skip` / `# fmt: off` in code or tests: the formatter wins and the code is shaped for it."""
    found = [
        f"{_relative(path)}:{number}"
        for root in ("chainer", "tests", "bench")
        for path in (REPO / root).rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line) and path != Path(__file__)
    ]
    assert found == []


def test_no_test_module_imports_another_test_module() -> None:
    """Shared test code lives in helpers, never in a test module that another one imports."""
    offenders = []
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(_tree(path)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(re.search(r"(^|\.)test_\w+$", n) and n.startswith("tests") for n in names):
                offenders.append(_relative(path))
    assert offenders == []
