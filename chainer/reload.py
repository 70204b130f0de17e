"""Rules reload (DESIGN §5): on SIGHUP or a change of the file, validate and swap, or refuse and keep.

The file is read and validated in a thread (``asyncio.to_thread``): loading 10 000 rules takes about a
second, and deliveries keep being answered meanwhile with the rules active until then. The new rules are
swapped in on the event loop, in one assignment, only once the whole file has loaded.

The worker renders nothing from the rules (actions are rendered at acceptance and stored in their
ledgers), so only web processes hold rules and reload them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import weakref
from collections.abc import Callable
from pathlib import Path

from chainer import heap
from chainer.errors import RulesError, StoreUnavailableError
from chainer.rules import RuleSet
from chainer.store import Store

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class RulesWatcher:
    """Keeps the active RuleSet in step with its file; every outcome goes to the audit log.

    ``load`` reads and validates the file (``load_rules`` with the provider catalogue); it runs in a worker
    thread, so it must not touch the event loop.
    """

    def __init__(
        self,
        path: Path,
        current: Callable[[], RuleSet],
        activate: Callable[[RuleSet], None],
        store: Store,
        *,
        load: Callable[[Path], RuleSet],
    ) -> None:
        self.path = path
        self._load = load
        self._current = current
        self._activate = activate
        self._store = store
        self._stamp = _stamp(path)
        self._lock = asyncio.Lock()

    async def reload(self, cause: str) -> bool:
        """Load the file now; activate it when valid and different. Returns whether rules changed."""
        async with self._lock:
            self._stamp = _stamp(self.path)
            old = self._current()
            try:
                new = await asyncio.to_thread(self._load, self.path)
            except RulesError as exc:
                log.error("rules_refused", extra={"cause": cause, "problems": exc.problems})
                await self._audit(
                    {
                        "type": "rules.refused",
                        "cause": cause,
                        "path": str(self.path),
                        "rules_version": old.version,
                        "problems": exc.problems[:50],
                        "problem_count": len(exc.problems),
                    }
                )
                return False
            if new.version == old.version:
                return False
            self._activate(new)
            previous = old.version
            del old  # the replaced rules go, with their cycles (chainer.heap); the new ones are frozen
            heap.settle(refresh=True)
            log.info("rules_reloaded", extra={"cause": cause, "version": new.version, "previous": previous})
            await self._audit(
                {
                    "type": "rules.reloaded",
                    "cause": cause,
                    "path": str(self.path),
                    "rules_version": new.version,
                    "previous_version": previous,
                    "rules": len(new.rules),
                }
            )
            return True

    async def _audit(self, record: dict[str, object]) -> None:
        try:
            await self._store.append_audit([record])
        except StoreUnavailableError as exc:
            log.warning("reload_not_audited", extra={"error": str(exc)})

    async def changed(self) -> bool:
        """Reload if the file's modification time, size or inode changed (or it appeared or vanished)."""
        if _stamp(self.path) == self._stamp:
            return False
        return await self.reload("file changed")

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the file until cancelled; also reload on SIGHUP when running in the main thread."""
        loop = asyncio.get_running_loop()
        hup = _listen_for_hangup(loop, self)
        try:
            while True:
                await asyncio.sleep(interval)
                await self.changed()
        finally:
            if hup:
                _stop_listening(loop, self)


# A process has one SIGHUP handler per event loop, and `chainer run` watches the rules twice in one loop
# (the web app's rules and the worker's): the handler reloads every watcher, not just the last to install it.
_HANGUP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[RulesWatcher]] = weakref.WeakKeyDictionary()
_RELOADS: set[asyncio.Task[bool]] = set()


def _on_hangup(loop: asyncio.AbstractEventLoop) -> None:
    for watcher in list(_HANGUP.get(loop, ())):
        task = loop.create_task(watcher.reload("SIGHUP"))
        _RELOADS.add(task)
        task.add_done_callback(_RELOADS.discard)


def _listen_for_hangup(loop: asyncio.AbstractEventLoop, watcher: RulesWatcher) -> bool:
    """Register ``watcher`` for SIGHUP in ``loop``; False when signals cannot be handled here (not the main thread)."""
    watchers = _HANGUP.setdefault(loop, [])
    if not watchers:
        try:
            loop.add_signal_handler(signal.SIGHUP, _on_hangup, loop)
        except (ValueError, RuntimeError):
            return False
    watchers.append(watcher)
    return True


def _stop_listening(loop: asyncio.AbstractEventLoop, watcher: RulesWatcher) -> None:
    watchers = _HANGUP.get(loop, [])
    if watcher in watchers:
        watchers.remove(watcher)
    if not watchers:
        loop.remove_signal_handler(signal.SIGHUP)
