"""Deployment files: they parse, and every command and variable in them exists in chainer."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from chainer.cli import main

REPO = Path(__file__).resolve().parents[1]
KNOWN_VARIABLES = set(re.findall(r'"(CHAINER_[A-Z0-9_]+)"', (REPO / "chainer" / "settings.py").read_text()))


def test_compose_file_parses_and_uses_real_commands_and_variables() -> None:
    """deploy/compose.yaml is valid YAML whose chainer commands and CHAINER_* variables all exist."""
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "web", "worker"} <= set(services)
    for name in ("web", "worker"):
        command = services[name]["command"]
        assert command[0] == "chainer" and command[1] in main.commands
        assert set(services[name]["environment"]) <= KNOWN_VARIABLES
    assert "--appendonly" in services["redis"]["command"]


def test_dockerfile_runs_a_real_command_and_copies_what_exists() -> None:
    """The Dockerfile's CMD is a chainer command, and every file it copies is in the repository."""
    text = (REPO / "Dockerfile").read_text()
    cmd = re.search(r"^CMD \[(.*)\]$", text, re.MULTILINE)
    assert cmd is not None
    words = [w.strip().strip('"') for w in cmd.group(1).split(",")]
    assert words[0] == "chainer" and words[1] in main.commands
    for source in re.findall(r"^COPY (\S+)", text, re.MULTILINE):
        assert (REPO / source).exists(), source
    for variable in re.findall(r"(CHAINER_[A-Z0-9_]+)=", text):
        assert variable in KNOWN_VARIABLES
