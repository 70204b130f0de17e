"""The ``chainer`` command: web, worker, run, lint (DESIGN §1, §5)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from chainer import __version__, runner
from chainer.errors import ConfigError, LocalRedisError, RulesError
from chainer.logs import configure_logging
from chainer.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _say(message: str) -> None:
    click.echo(f"chainer: {message}", err=True)


def _provider_names() -> list[str]:
    from chainer import providers

    return list(providers.names())


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"chainer: {message}", err=True)
    sys.exit(code)


def _configure_logging() -> None:
    try:
        configure_logging()
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")
        raise  # unreachable: _fail exits


def _load_app(settings: Settings) -> Any:
    from chainer.app import create_app

    try:
        return create_app(settings)
    except RulesError as exc:
        _fail(f"{settings.rules_path} has {len(exc.problems)} problem(s):\n" + "\n".join(exc.problems))
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def _server_options(f: F) -> F:
    f = click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")(f)
    f = click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")(f)
    return f


@click.group()
@click.version_option(version=__version__, prog_name="chainer")
def main() -> None:
    """chainer: when one CI build finishes, trigger, restart or rerun others."""


@main.command()
@_server_options
def web(host: str, port: int) -> None:
    """Serve the webhook endpoints and the operator API."""
    import uvicorn

    from chainer.web.server import HeadDeadlineProtocol

    _configure_logging()
    settings = _settings()
    app = _load_app(settings)
    from chainer.runner import SERVER_SETTINGS

    HeadDeadlineProtocol.seconds = settings.header_timeout_seconds
    # uvloop: the libuv event loop (a dependency of chainer, issue 11); the rest as `chainer run` serves.
    uvicorn.run(app, host=host, port=port, loop="uvloop", **SERVER_SETTINGS)


@main.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this worker's Prometheus metrics at http://<metrics-host>:<port>/metrics.",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True, help="Address the metrics port binds.")  # noqa: S104
def worker(burst: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Run the arq worker that calls the downstream CI APIs."""
    from chainer.providers import catalogue
    from chainer.rules import load_rules
    from chainer.worker import create_worker

    _configure_logging()
    settings = _settings()
    try:
        ruleset = load_rules(settings.rules_path, catalogue=catalogue())
    except RulesError as exc:
        _fail(f"{settings.rules_path} has {len(exc.problems)} problem(s):\n" + "\n".join(exc.problems))
    running = create_worker(settings, burst=burst, ruleset=ruleset)
    if metrics_port is not None:
        from chainer import metrics
        from chainer.store.connections import connect

        try:  # on the worker's own loop, so it answers while the worker runs
            running.loop.run_until_complete(metrics.serve(connect(settings.redis_url), metrics_host, metrics_port))
        except OSError as exc:
            _fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}")
        _say(f"worker metrics at http://{metrics_host}:{metrics_port}/metrics")
    running.run()


def api_credentials(settings: Settings) -> list[str]:
    """The providers whose API credentials ``settings`` carry (read from NAME or NAME_FILE alike)."""
    configured = {
        "codeship": settings.codeship_user or settings.codeship_api_key,
        "circleci": settings.circleci_token,
        "github": settings.github_token or settings.github_app_id,
        "buildkite": settings.buildkite_token,
    }
    return [name for name, value in configured.items() if value]


def _sandboxed(settings: Settings, host: str, sandbox_port: int, examples: Path) -> tuple[Settings, Any]:
    """Settings that send every provider call to a local sandbox, and the sandbox's state.

    The sandbox knows what the rules and the example payloads in ``examples`` refer to (``seed_sandbox``).
    """
    import dataclasses
    import secrets

    from chainer.providers import catalogue
    from chainer.rules import load_rules
    from chainer.sandbox import SandboxState, example_events, sandbox_settings, seed_sandbox
    from chainer.settings import Secret

    state = SandboxState()
    events, problems = example_events(examples) if examples.is_dir() else ([], [])
    problems += seed_sandbox(state, load_rules(settings.rules_path, catalogue=catalogue()), events)
    for problem in problems:
        click.echo(f"chainer: sandbox mode: not seeded: {problem}", err=True)
    click.echo(
        f"chainer: sandbox mode: the emulated providers know the projects, builds, jobs and workflows of "
        f"{settings.rules_path} and of {len(events)} example payload(s) in {examples}/",
        err=True,
    )
    base = f"http://{host}:{sandbox_port}"
    changes: dict[str, Any] = {}
    for name in ("hook_token", "admin_token"):
        if getattr(settings, name) is None:
            token = secrets.token_hex(12)
            changes[name] = Secret(token)
            click.echo(f"chainer: sandbox mode: CHAINER_{name.upper()} for this run is {token}", err=True)
    click.echo(f"chainer: sandbox mode: provider APIs are emulated at {base} (requests at {base}/_sandbox/)", err=True)
    return dataclasses.replace(sandbox_settings(settings, state, base), **changes), state


@main.command()
@_server_options
@click.option("--sandbox", is_flag=True, help="Send provider calls to a local emulation instead of the real APIs.")
@click.option("--sandbox-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--sandbox-examples",
    default=Path("examples"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Webhook payloads (*.json) whose projects, builds, jobs and workflows the sandbox knows.",
)
@click.option(
    "--sandbox-unless-configured",
    is_flag=True,
    help="Use the sandbox only when no provider API credentials are configured (NAME_FILE variables count).",
)
def run(
    host: str, port: int, sandbox: bool, sandbox_port: int, sandbox_examples: Path, sandbox_unless_configured: bool
) -> None:
    """Web and worker in one process, with a private redis-server when none answers.

    SIGINT or SIGTERM shuts it down cleanly, the private redis-server last.
    """
    from chainer.app import create_app

    _configure_logging()
    settings = _settings()
    app = _load_app(settings)
    sandboxed = None
    if sandbox_unless_configured and not api_credentials(settings):
        sandbox = True
    if sandbox:
        settings, state = _sandboxed(settings, host, sandbox_port, sandbox_examples)
        app = create_app(settings)
        sandboxed = (state, sandbox_port)
    try:
        stopped_by = runner.run_all(app, settings, host, port, sandboxed, announce=_say)
    except LocalRedisError as exc:
        _fail(str(exc))
    click.echo(f"chainer: stopped{f' ({signal.Signals(stopped_by).name})' if stopped_by else ''}", err=True)


@main.command(name="sandbox")
@_server_options
def sandbox_command(host: str, port: int) -> None:
    """Serve the provider sandbox alone: Codeship v1/v2, CircleCI v1.1/v2, Buildkite and GitHub on one port."""
    from chainer.sandbox import serve_sandbox

    _configure_logging()
    click.echo(f"chainer: provider sandbox on http://{host}:{port} (recorded requests at /_sandbox/)", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_sandbox(host, port))


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def lint(file: Path | None) -> None:
    """Check a rules file (default: CHAINER_RULES or ./rules.yaml); exit 1 listing every problem."""
    from chainer.providers import catalogue
    from chainer.rules import load_rules

    path = file or Path(os.environ.get("CHAINER_RULES") or "rules.yaml")
    try:
        ruleset = load_rules(path, catalogue=catalogue())
    except RulesError as exc:
        for problem in exc.problems:
            click.echo(problem)
        click.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        sys.exit(1)
    click.echo(ruleset.summary())


@main.command(name="explain")
@click.option("--provider", required=True, type=click.Choice(_provider_names()), help="Who sent it.")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--header", "headers", multiple=True, metavar="K:V", help="A delivery header (repeatable).")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path), help="Rules file.")
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON shape.")
def explain_command(
    provider: str, payload: Path, headers: tuple[str, ...], rules_file: Path | None, as_json: bool
) -> None:
    """What the rules would do with a payload file, offline: nothing is stored or sent."""
    import json

    from chainer.errors import WebhookError
    from chainer.explain import explain, render_text
    from chainer.providers import catalogue
    from chainer.rules import load_rules

    parsed_headers = {}
    for item in headers:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            _fail(f"--header {item!r}: use NAME:VALUE")
        parsed_headers[name.strip().lower()] = value.strip()
    path = rules_file or Path(os.environ.get("CHAINER_RULES") or "rules.yaml")
    try:
        ruleset = load_rules(path, catalogue=catalogue())
    except RulesError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    try:
        result = explain(ruleset, provider, parsed_headers, payload.read_bytes())
    except WebhookError as exc:
        _fail(f"{payload}: {exc}", code=1)
    click.echo(json.dumps(result, indent=2) if as_json else render_text(result))


@main.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of rules.yaml, for editors."""
    import json

    from chainer.providers import catalogue
    from chainer.rules import rules_schema

    click.echo(json.dumps(rules_schema(catalogue()), indent=2))


@main.group(name="dlq")
def dlq_group() -> None:
    """List, replay or discard dead actions (the same as the operator API's /dlq)."""


async def _with_store(work: Callable[[Any], Any]) -> Any:
    from chainer.errors import StoreUnavailableError
    from chainer.store import Store
    from chainer.store.connections import connect

    settings = _settings()
    client: Any = connect(settings.redis_url)
    try:
        return await work(Store.configured(client, settings))
    except StoreUnavailableError as exc:
        _fail(str(exc))
    finally:
        await client.aclose()


@dlq_group.command(name="list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def dlq_list(limit: int, as_json: bool) -> None:
    """Show dead actions, oldest first."""
    import json

    from chainer import dlq

    items = asyncio.run(_with_store(lambda store: dlq.list_dead(store, limit=limit)))
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no dead actions")
    for item in items:
        status = item["last_status"] or "-"
        click.echo(f"{item['action_id']}  {item['action']}  {item['reason']}  {status}  {item['last_error'] or ''}")


def _dlq_change(verb: str, action_id: str) -> None:
    from chainer import dlq

    operation = dlq.replay if verb == "replay" else dlq.discard
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    change = asyncio.run(_with_store(lambda store: operation(store, action_id, actor)))
    click.echo(change.message)
    if not change.ok:
        sys.exit(1)


@dlq_group.command(name="replay")
@click.argument("action_id")
def dlq_replay(action_id: str) -> None:
    """Queue a dead action again."""
    _dlq_change("replay", action_id)


@dlq_group.command(name="discard")
@click.argument("action_id")
def dlq_discard(action_id: str) -> None:
    """Drop a dead action for good."""
    _dlq_change("discard", action_id)


if __name__ == "__main__":
    main()
