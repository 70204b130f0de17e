"""`chainer` commands as real subprocesses for the tests: ``chainer_process`` (started, waited for, stopped with
SIGINT) and ``worker_process`` (`chainer worker` logging to a file, killed on the way out)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class Running:
    """A `chainer` subprocess; ``stderr`` and ``returncode`` are filled in once it has stopped."""

    process: subprocess.Popen[bytes]
    stderr: str = ""
    returncode: int | None = None


@contextlib.contextmanager
def chainer_process(args: list[str], cwd: Path, env: dict[str, str], ready: list[str]) -> Iterator[Running]:
    """Run `chainer ARGS` until every URL in ``ready`` answers 200, then SIGINT it on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chainer.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    running = Running(process)
    try:
        deadline = time.monotonic() + 30
        pending = list(ready)
        while pending and time.monotonic() < deadline:
            try:
                if httpx.get(pending[0], timeout=1).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        if pending:
            pytest.fail(f"chainer {' '.join(args)} did not answer {pending[0]} within 30 s")
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        running.stderr, running.returncode = stderr.decode(), process.returncode


@contextlib.contextmanager
def worker_process(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`chainer worker` as a real process logging to a file; killed on the way out if still running."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "chainer.cli", "worker"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            yield process, log_path
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
