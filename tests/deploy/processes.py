"""Run what a deployment file describes, here: chainer processes with its environment, redis-server with its config."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis as syncredis

from tests.redis_server import free_port


@contextlib.contextmanager
def redis_with(args: list[str], directory: Path) -> Iterator[syncredis.Redis]:
    """redis-server with ``args`` (a config file and/or options), moved to a free loopback port and ``directory``."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    # Options after the deployment's own override them: only where it listens and writes changes.
    command = [
        binary,
        *args,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
        "--logfile",
        str(directory / "redis.log"),
    ]
    output = (directory / "redis.out").open("wb")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    output.close()
    client = syncredis.Redis(port=port, socket_timeout=5, decode_responses=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                said = [f.read_text()[-2000:] for f in (directory / "redis.out", directory / "redis.log") if f.exists()]
                raise AssertionError(f"redis-server {args} exited: {' '.join(said)}")
            try:
                client.ping()
                break
            except syncredis.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server {args} did not answer within 10 s") from None
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def config(client: syncredis.Redis, *names: str) -> dict[str, str]:
    """CONFIG GET for ``names``, as text."""
    found: dict[str, str] = {}
    for name in names:
        found.update(client.config_get(name))
    return found


@contextlib.contextmanager
def chainer(
    args: list[str], cwd: Path, env: dict[str, str], ready: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`chainer ARGS` as a real subprocess; waits until ``ready`` answers 200; SIGINT and a bounded wait at the end.

    Fails at once with the process's stderr when it exits before it is ready (a bad setting, an unknown option).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "chainer.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while ready is not None:
            if process.poll() is not None:
                raise AssertionError(
                    f"chainer {' '.join(args)} exited with {process.returncode}: {process.stderr.read()}"
                )  # type: ignore[union-attr]
            try:
                if httpx.get(ready, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"chainer {' '.join(args)} did not answer {ready} within 30 s")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
