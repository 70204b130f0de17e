"""Time one way of reading a rules file, in a process of its own: ``python -m bench.rules_load FILE --how load|yaml``.

* ``load``: ``chainer.rules.load_rules`` (what ``chainer web``, ``worker`` and every reload do), called through
  ``load_rules_compat``, which passes the provider catalogue when the installed chainer wants one;
* ``yaml``: the baseline, ``yaml.load(text, Loader=yaml.CSafeLoader)`` of the same bytes: PyYAML's C parser with
  no line numbers and no checks.

Prints one JSON line: ``{"how", "seconds", "rules", "bytes"}``. The suite runs it with a timeout.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any


def catalogue_kwargs(function: Any) -> dict[str, Any]:
    """``{"catalogue": …}`` when ``function`` takes a ``catalogue`` argument and chainer has one to give:
    ``chainer.providers.catalogue()`` when that exists, else ``chainer.actions.catalogue()``; else ``{}``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    if "catalogue" not in parameters:
        return {}
    for module_name in ("chainer.providers", "chainer.actions"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        make = getattr(module, "catalogue", None)
        if callable(make):
            return {"catalogue": make()}
    return {}


def load_rules_compat(path: str | Path) -> Any:
    from chainer.rules import load_rules

    return load_rules(path, **catalogue_kwargs(load_rules))


def parse_rules_compat(text: str | bytes, source: str = "rules.yaml") -> Any:
    from chainer.rules import parse_rules

    return parse_rules(text, source, **catalogue_kwargs(parse_rules))


def rule_count(ruleset: Any) -> int:
    rules = getattr(ruleset, "rules", None)
    return len(rules) if rules is not None else -1


def measure(path: Path, how: str) -> dict[str, Any]:
    size = path.stat().st_size
    if how == "load":
        from chainer.rules import load_rules

        kwargs = catalogue_kwargs(load_rules)  # imports and the catalogue are made once at start, not timed
        started = time.perf_counter()
        ruleset = load_rules(path, **kwargs)
        seconds = time.perf_counter() - started
        return {"how": how, "seconds": seconds, "rules": rule_count(ruleset), "bytes": size}
    import yaml

    text = path.read_text(encoding="utf-8")
    started = time.perf_counter()
    doc = yaml.load(text, Loader=yaml.CSafeLoader)
    seconds = time.perf_counter() - started
    return {"how": how, "seconds": seconds, "rules": len(doc.get("rules") or []), "bytes": size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--how", choices=["load", "yaml"], required=True)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.file, args.how)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
