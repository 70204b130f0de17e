"""``chainer run``: web, worker (and the provider sandbox) in one process, with a private Redis if needed.

``run_all`` starts a private redis-server when none answers (``chainer.localredis``), serves until one
part ends or SIGINT/SIGTERM comes, and stops everything, the private redis-server last, whenever the
signal arrives: before, during or after the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import uvloop

from chainer import localredis
from chainer.settings import Settings
from chainer.web.server import HTTP_PROTOCOL

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How chainer serves HTTP, in `chainer web` (which adds uvicorn's loop="uvloop") and `chainer run` (which runs its
# own uvloop loop), and how bench/bare_app.py serves its baselines, so that they are measured alike. uvicorn's
# access log is off: it prints hook tokens (chainer.accesslog logs requests redacted).
SERVER_SETTINGS: dict[str, Any] = {
    "proxy_headers": True,
    "timeout_graceful_shutdown": 10,
    "log_config": None,
    "access_log": False,
    "http": HTTP_PROTOCOL,  # httptools (the C HTTP parser) with a deadline on each request head
}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM outside the event loop: `chainer run` stops as after a Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def run_all(
    app: Any, settings: Settings, host: str, port: int, sandbox: Any = None, *, announce: Callable[[str], None]
) -> int | None:
    """Serve ``app``, a worker and (``sandbox``: its state and port) the sandbox until they end or a signal
    comes; returns that signal. ``announce`` tells the operator about a private redis-server started here.

    Raises LocalRedisError when no Redis answers and none can be started (nothing is left running then).
    """
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
    private: subprocess.Popen[bytes] | None = None
    stopped_by: int | None = None
    try:
        if not localredis.answers(settings.redis_url):
            private = localredis.start(settings.redis_url)
            announce(
                f"no Redis answered at {settings.redis_url}; started a private redis-server "
                f"(AOF on, data under {localredis.PRIVATE_REDIS_DIR}/), pid {private.pid}"
            )
        # uvloop, as `chainer web` runs (uvicorn's loop="uvloop"); the signals stay ours (see _serve_all).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            stopped_by = runner.run(_serve_all(app, settings, host, port, sandbox))
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM before or after the event loop ran
        stopped_by = getattr(exc, "signum", signal.SIGINT)
    finally:
        for signum in STOP_SIGNALS:  # whatever comes now, the private redis-server is stopped
            signal.signal(signum, signal.SIG_IGN)
        if private is not None:
            localredis.stop(private)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return stopped_by


async def _serve_all(app: Any, settings: Settings, host: str, port: int, sandbox: Any = None) -> int | None:
    """Web, worker (and sandbox) until one of them ends or SIGINT/SIGTERM comes; returns that signal.

    The signals are handled here, not by uvicorn, whose ``serve`` raises a caught signal again after its
    shutdown: the default SIGTERM action would end the process before ``run_all`` stops its private
    redis-server.
    """
    import uvicorn

    from chainer.sandbox import SignalFreeServer, serve_sandbox
    from chainer.web.server import HeadDeadlineProtocol
    from chainer.web.stream import stop_streams
    from chainer.worker import create_worker

    config = uvicorn.Config(app, host=host, port=port, **SERVER_SETTINGS)
    HeadDeadlineProtocol.seconds = settings.header_timeout_seconds
    server = SignalFreeServer(config)
    worker = create_worker(settings, handle_signals=False)
    serving = asyncio.create_task(server.serve())
    tasks = {serving, asyncio.create_task(worker.async_run())}
    if sandbox is not None:
        state, sandbox_port = sandbox
        tasks.add(asyncio.create_task(serve_sandbox(host, sandbox_port, state, handle_signals=False)))
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        server.force_exit = bool(received)  # a second signal: do not wait for open connections
        received.append(signum)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(tasks | {stopping}, return_when=asyncio.FIRST_COMPLETED)
        stop_streams(app)  # open /audit/stream followers end now, not after the graceful timeout
        server.should_exit = True
        await worker.close()
        for task in tasks:
            if task is not serving and not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        stopping.cancel()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)  # back to SIG_DFL / KeyboardInterrupt, and so:
            signal.signal(signum, _interrupt)
    for ended in done - {stopping}:
        if not ended.cancelled() and ended.exception() is not None:
            raise ended.exception()  # type: ignore[misc]
    return received[0] if received else None
