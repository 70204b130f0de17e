"""The store's Lua scripts: every file is found, fragments are included, Redis compiles them, and they ship."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chainer.store import Store
from chainer.store.lua import _INCLUDE, SCRIPTS, ScriptBatcher, source

REPO = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO / "chainer" / "store" / "scripts"


def test_every_lua_file_is_a_script_or_an_included_fragment() -> None:
    """No script is left unused and every fragment (``_*.lua``) is pulled in by some script."""
    files = {p.name for p in SCRIPTS_DIR.glob("*.lua")}
    scripts = {f"{name}.lua" for name in SCRIPTS}
    included = {m.group(1) for name in SCRIPTS for m in _INCLUDE.finditer((SCRIPTS_DIR / f"{name}.lua").read_text())}
    assert scripts <= files
    assert included == {name for name in files if name.startswith("_")}
    assert files == scripts | included


def test_includes_are_replaced_by_the_fragment_text() -> None:
    fragment = (SCRIPTS_DIR / "_write_actions.lua").read_text().rstrip("\n")
    for name in SCRIPTS:
        assert "--#include" not in source(name), name
    assert fragment in source("accept") and fragment in source("fire_join")
    assert source("accept").count("redis.call('XADD', KEYS[2], '*'") == 3  # duplicate, audit fragment, progress


@pytest.mark.integration
async def test_redis_compiles_every_script_under_the_sha_the_batcher_calls(redis: Redis) -> None:
    """SCRIPT LOAD accepts each script (a Lua syntax error fails here) and gives the sha EVALSHA uses."""
    for name in SCRIPTS:
        batcher = ScriptBatcher(redis, name)
        assert await redis.script_load(source(name)) == batcher._sha, name
    store = Store(redis)
    assert [b.name for b in (store._accept, store._append, store._transition, store._first, store._fire)] == [
        "accept",
        "append_audit",
        "transition",
        "first_value",
        "fire_join",
    ]


def _pip(*args: str) -> None:
    """Run pip offline (no index: nothing is downloaded; the build uses the hatchling installed here)."""
    command = [sys.executable, "-m", "pip", *args, "-q", "--no-index", "--disable-pip-version-check"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_wheel_ships_the_scripts_and_the_installed_package_loads_them(tmp_path: Path) -> None:
    """``pip install .`` gets every .lua file and compression dictionary, and the installed package reads them."""
    wheels = tmp_path / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO))
    (wheel,) = wheels.glob("chainer-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("chainer/store/scripts/")}
    assert shipped == {f"chainer/store/scripts/{p.name}" for p in SCRIPTS_DIR.glob("*.lua")}
    dictionaries = SCRIPTS_DIR.parent / "dictionaries"
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("chainer/store/dictionaries/")}
    assert shipped == {f"chainer/store/dictionaries/{p.name}" for p in dictionaries.glob("*.*dict")} and shipped

    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    check = (
        "import chainer.store.lua as lua, pathlib, sys\n"
        "assert pathlib.Path(lua.__file__).is_relative_to(sys.argv[1]), lua.__file__\n"
        "from chainer.store import codec\n"
        "assert all(codec.unpack_record(p.pack_record({'a': 1})) == {'a': 1} for p in codec.PACKERS.values())\n"
        "print(sum(len(lua.source(n)) for n in lua.SCRIPTS))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    loaded = subprocess.run(
        [sys.executable, "-c", check, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert int(loaded.stdout) == sum(len(source(n)) for n in SCRIPTS)
