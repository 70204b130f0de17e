"""Processes the bench starts, and what /proc says about them and about the machine.

Every process is started through ``Processes.start`` in its own session (a Ctrl-C in the terminal reaches
the bench only) and stopped by its pid through ``Processes.stop_all``: SIGINT, then SIGTERM, then SIGKILL.
``suite.py`` calls ``stop_all`` in a ``finally``, and turns SIGTERM and SIGHUP into the same path as a Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(RuntimeError):
    """Something the bench needs did not happen (a server did not start, a check failed)."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGINT
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """The processes of one bench run; ``stop_all`` stops every one still running, newest first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.items: list[Proc] = []

    def start(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGINT,
    ) -> Proc:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        proc = Proc(name, popen, log, stop_signal, handle)
        self.items.append(proc)
        return proc

    def live(self) -> list[Proc]:
        return [p for p in self.items if p.alive()]

    def stop(self, proc: Proc, timeout: float = 15.0) -> None:
        """Stop one process by its pid: its stop signal, SIGTERM after ``timeout``, SIGKILL 5 s later."""
        for sig, wait in ((proc.stop_signal, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=wait)
        if proc._log_file is not None:
            proc._log_file.close()
            proc._log_file = None

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            self.stop(proc)

    def stop_these(self, procs: Iterable[Proc]) -> None:
        for proc in reversed(list(procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> None:
    """Poll ``check`` every 50 ms until it is true; ``BenchError`` naming ``what`` after ``timeout`` seconds
    or as soon as ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            tail = f":\n{proc.tail()}" if proc is not None else ""
            raise BenchError(f"{what}: not within {timeout:.0f} s{tail}")
        time.sleep(0.05)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback URLs the bench built)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_json(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10) -> Any:
    import json

    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- /proc ----------------------------------------------------------------------------------------
def parse_proc_stat(text: str) -> dict[str, int]:
    """utime, stime, cutime, cstime (clock ticks) and rss (pages) from a /proc/<pid>/stat line."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3].
    return {
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "cutime": int(rest[13]),
        "cstime": int(rest[14]),
        "rss_pages": int(rest[21]),
    }


def cpu_seconds(pid: int | str, *, children: bool = False) -> float:
    """CPU time (user + system) of a process, with its reaped children's when ``children``."""
    fields = parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    ticks = fields["utime"] + fields["stime"]
    if children:
        ticks += fields["cutime"] + fields["cstime"]
    return ticks / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def parse_cpu_line(text: str) -> tuple[float, float]:
    """(busy, total) seconds of all CPUs from the first line of /proc/stat.

    Busy is user + nice + system + irq + softirq + steal (guest time is already inside user and nice).
    """
    line = next(x for x in text.splitlines() if x.startswith("cpu "))
    values = [int(v) for v in line.split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = values[:7]
    steal = values[7] if len(values) > 7 else 0
    busy = user + nice + system + irq + softirq + steal
    return busy / CLK_TCK, (busy + idle + iowait) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    return parse_cpu_line(Path("/proc/stat").read_text())


class CpuAccount:
    """CPU the whole machine spent during a span, and how much of it was not the bench's.

    The bench's own share is this process (threads and reaped children included) plus every process of
    ``procs`` still running (with the children it reaped: adnanh/webhook's ``/bin/true``); what is left of the
    machine's busy time is other processes' (other users of a shared machine, system daemons).
    """

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.started = time.monotonic()
        self.busy0, _ = machine_cpu()
        self.ours0 = self._ours()

    def _ours(self) -> float:
        total = cpu_seconds("self", children=True)
        for proc in self.procs.live():
            with contextlib.suppress(OSError, ValueError):
                total += cpu_seconds(proc.pid, children=True)
        return total

    def finish(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        busy, _ = machine_cpu()
        ours = self._ours() - self.ours0
        machine = busy - self.busy0
        others = max(0.0, machine - ours)
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 2),
            "machine_busy_cpu_s": round(machine, 2),
            "bench_cpu_s": round(ours, 2),
            "others_cpu_s": round(others, 2),
            "others_pct_of_machine": round(100 * others / (wall * cores), 1) if wall > 0 else 0.0,
        }
