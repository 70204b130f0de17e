"""What the deployment tests share: the files, the chainer CLI as a parser, Settings as the judge of variables."""

from __future__ import annotations

import ast
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml

from chainer.cli import main
from chainer.errors import ConfigError
from chainer.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
# The Kubernetes release the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.30.0"
VARIABLE = re.compile(r"^CHAINER_[A-Z0-9_]+$")


def known_variables() -> set[str]:
    """Every ``CHAINER_*`` name chainer's code reads: the string literals that are exactly such a name.

    Read from the source (not a module attribute) so it survives moving the settings code around.
    """
    names: set[str] = set()
    for path in (REPO / "chainer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                names.add(node.value)
    return names


def _outcome(environ: Mapping[str, str]) -> Settings | str:
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        return f"ConfigError: {exc}"


def settings_read_from_file(name: str, tmp_path: Path) -> bool:
    """Whether Settings takes ``name`` from the file named by ``name_FILE`` just as it takes ``name`` itself.

    Judged by behaviour: the value through the file gives the same settings (or the same error) as the
    value in the environment, and that differs from leaving the variable out.
    """
    value = "a-value-for-the-test"
    path = tmp_path / f"{name.lower()}.txt"
    path.write_text(value + "\n")
    direct = _outcome({name: value})
    return direct != _outcome({}) and _outcome({f"{name}_FILE": str(path)}) == direct


def empty_file_means_unset(name: str, tmp_path: Path) -> bool:
    """Whether an empty ``name_FILE`` gives the same settings as no ``name`` at all (how unused providers look)."""
    path = tmp_path / f"{name.lower()}-empty.txt"
    path.write_text("")
    return _outcome({f"{name}_FILE": str(path)}) == _outcome({})


def check_variable(name: str, tmp_path: Path, known: set[str]) -> None:
    """``name`` is a variable chainer reads, or ``X_FILE`` for a secret X that Settings reads from a file."""
    assert VARIABLE.match(name), name
    if name in known:
        return
    base = name.removesuffix("_FILE")
    assert base != name and base in known, f"{name} is not a variable chainer knows"
    assert settings_read_from_file(base, tmp_path), f"{name}: chainer does not read {base} from a file"


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``chainer ...`` with the real click commands, options and types; return the command path and params.

    Fails the test on an unknown command or option, or a bad option value.
    """
    assert argv and argv[0] == "chainer", argv
    command: click.Command = main
    ctx = click.Context(main, info_name="chainer")
    path: list[str] = []
    args = list(argv[1:])
    while isinstance(command, click.Group):
        assert args, f"{shlex.join(argv)}: no subcommand"
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{shlex.join(argv)}: {name!r} is not a chainer command ({sorted(command.commands)})"
        path.append(name)
        command = sub
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=name, parent=ctx)
    try:
        parsed = command.make_context(path[-1], args, parent=ctx)
    except click.UsageError as exc:
        pytest.fail(f"{shlex.join(argv)}: {exc.format_message()}")
    return " ".join(path), dict(parsed.params)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes resource of the kustomize base, with its file."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in load_yaml_documents(KUBERNETES / name):
            yield KUBERNETES / name, doc


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def chainer_env() -> dict[str, str]:
    """The test process's environment without any CHAINER_* variable (a subprocess gets only what a test sets)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5)
