"""Releases: the version lives in one place, the sdist and wheel build and run from a clean virtualenv,
constraints.txt pins every runtime dependency, and CHANGELOG.md follows Keep a Changelog."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import chainer
from tests.deploy.support import REPO, chainer_env

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def _runtime_closure() -> dict[str, set[Requirement]]:
    """Every distribution chainer needs at run time (its dependencies, their extras, transitively), by name."""
    needed: dict[str, set[Requirement]] = {}
    pending = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        needed.setdefault(name, set()).add(requirement)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for raw in metadata.requires(name) or []:
            child = Requirement(raw)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(child)
    return needed


def test_constraints_pin_every_runtime_dependency_at_the_installed_version() -> None:
    """constraints.txt (scripts/lock) pins the whole runtime closure, each pin allowed by every requirement on it.

    And the development virtualenv runs those very versions (scripts/install uses -c constraints.txt),
    so what the tests exercise is what the image ships. Nothing else is pinned (no dev tool in the image).
    """
    pins = _pins()
    closure = _runtime_closure()
    assert "arq" in closure and "hiredis" in closure  # the walk follows extras (redis[hiredis])
    missing = sorted(set(closure) - set(pins))
    assert not missing, f"not pinned in constraints.txt (run scripts/lock): {missing}"
    assert sorted(set(pins) - set(closure)) == [], "constraints.txt pins something chainer does not need"
    for name, requirements in closure.items():
        for requirement in requirements:
            assert Version(pins[name]) in requirement.specifier, f"{name}=={pins[name]} does not satisfy {requirement}"
        assert metadata.version(name) == pins[name], f"{name}: .venv has {metadata.version(name)} (run scripts/install)"


def test_the_version_lives_in_chainer_init_and_chainer_version_prints_it() -> None:
    """pyproject reads the version from chainer/__init__.py; `chainer --version` prints that same version."""
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "chainer/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chainer.__version__)
    result = subprocess.run(
        [sys.executable, "-m", "chainer.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=chainer_env(),
    )
    assert result.returncode == 0 and result.stdout.strip() == f"chainer, version {chainer.__version__}"


def test_chainer_version_reads_the_source_not_stale_install_metadata(tmp_path: Path) -> None:
    """A changed __version__ shows in `chainer --version` at once, without reinstalling (an editable install's
    metadata keeps the version of the last install)."""
    shutil.copytree(REPO / "chainer", tmp_path / "chainer", ignore=shutil.ignore_patterns("__pycache__"))
    init = tmp_path / "chainer" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{chainer.__version__}"', '"9.8.7"'))
    result = subprocess.run(
        [sys.executable, "-m", "chainer.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=chainer_env(),
    )
    assert result.returncode == 0 and result.stdout.strip() == "chainer, version 9.8.7", result.stdout + result.stderr


def test_changelog_keeps_a_changelog() -> None:
    """CHANGELOG.md: Keep a Changelog headings; Unreleased first; released versions with dates, newest first."""
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text and "semver.org" in text
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
    assert headings and headings[0] == ("Unreleased", "")
    released = [Version(version) for version, _ in headings[1:]]
    assert all(date for _, date in headings[1:]) and released == sorted(released, reverse=True)
    assert all(Version(chainer.__version__) >= v for v in released), "the version in chainer/__init__.py is current"
    for section in re.findall(r"^### (.+)$", text, re.MULTILINE):
        assert section in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, section
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert re.search(r"^### Added$", unreleased, re.MULTILINE) and unreleased.count("\n- ") >= 5


def test_sdist_and_wheel_build_install_into_a_clean_virtualenv_and_run(tmp_path: Path) -> None:
    """`python -m build` makes an sdist and a wheel from it; the wheel installs into a new venv and runs.

    Offline and bounded: the build uses .venv's hatchling (--no-isolation), the new venv reaches chainer's
    dependencies through a .pth line naming .venv's site-packages (which holds no chainer of its own that
    Python would load: the editable install's own .pth files are not processed there), and chainer itself
    comes only from the wheel.
    """
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (sdist,) = dist.glob("chainer-*.tar.gz")
    (wheel,) = dist.glob("chainer-*.whl")
    assert sdist.name == f"chainer-{chainer.__version__}.tar.gz"
    assert wheel.name == f"chainer-{chainer.__version__}-py3-none-any.whl"
    package_files = {p.relative_to(REPO).as_posix() for p in (REPO / "chainer").rglob("*") if p.is_file()}
    package_files = {p for p in package_files if "__pycache__" not in p}
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md"} | package_files <= in_sdist
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        entry_points = archive.read(f"chainer-{chainer.__version__}.dist-info/entry_points.txt").decode()
    assert package_files <= in_wheel, sorted(package_files - in_wheel)
    page_files = {"chainer/web/templates/base.html", "chainer/web/static/ui.css", "chainer/web/static/live.js"}
    assert page_files <= in_wheel, "the operator page's templates and static files ship in the wheel"
    assert not any(name.startswith(("tests/", "deploy/", "bench/")) for name in in_wheel)
    assert "chainer = chainer.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    (Path(site) / "dependencies-from-dot-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
    env = chainer_env()
    env.pop("PYTHONPATH", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=workdir, env=env)

    where = run(str(python), "-c", "import chainer; print(chainer.__file__)")
    assert where.returncode == 0 and where.stdout.strip().startswith(site), where.stdout + where.stderr
    version = run(str(venv / "bin" / "chainer"), "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"chainer, version {chainer.__version__}"
    lint = run(str(venv / "bin" / "chainer"), "lint", "rules.yaml")
    assert lint.returncode == 0 and "rules.yaml:" in lint.stdout and "rule(s)" in lint.stdout, lint.stdout + lint.stderr
    check = run(sys.executable, "-m", "pip", "--python", str(python), "check")
    assert check.returncode == 0, check.stdout + check.stderr
