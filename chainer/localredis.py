"""A private redis-server for ``chainer run`` when none answers at ``CHAINER_REDIS_URL`` (DESIGN §1).

It listens on the URL's loopback port with its data under ``.chainer/`` (AOF on, fsync always,
noeviction), in its own process group so that a Ctrl-C in the terminal reaches chainer only, which
stops the server last (``stop``: SIGTERM, so it finishes its AOF, then SIGKILL after 30 s).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis as syncredis

from chainer.errors import LocalRedisError

PRIVATE_REDIS_DIR = Path(".chainer")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT_S = 10
STOP_TIMEOUT_S = 30


def answers(url: str) -> bool:
    """Whether a Redis answers PING at ``url`` within a second."""
    try:
        client = syncredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (syncredis.RedisError, OSError, ValueError):
        return False


def start(url: str, directory: Path = PRIVATE_REDIS_DIR) -> subprocess.Popen[bytes]:
    """Start redis-server for ``url`` and wait until it answers; LocalRedisError when it cannot.

    Whatever stops the wait (a timeout, SIGINT or SIGTERM meanwhile) leaves no server behind.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in LOCAL_HOSTS:
        raise LocalRedisError(
            f"no Redis answers at CHAINER_REDIS_URL={url} and it is not a local address to start one on", url=url
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalRedisError(
            f"no Redis answers at {url} and redis-server is not installed (apt-get install redis-server)", url=url
        )
    directory.mkdir(exist_ok=True)
    args = [
        binary,
        *("--bind", "127.0.0.1", "--port", str(parts.port or 6379), "--dir", str(directory.resolve())),
        *("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction"),
        *("--logfile", "redis.log"),
    ]
    # Its own process group: a Ctrl-C in the terminal reaches chainer only, which stops the server last.
    process = subprocess.Popen(  # noqa: S603
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise LocalRedisError(f"the private redis-server did not start; see {directory / 'redis.log'}", url=url)
            time.sleep(0.1)
    except BaseException:  # it did not start in time, or SIGINT/SIGTERM came meanwhile: leave no server behind
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (redis-server then finishes its AOF and exits) and wait; SIGKILL after 30 s."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
