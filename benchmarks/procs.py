"""What the benchmarks share about the processes they start: free loopback ports, a started
process whose output is kept for its whole life (`Child`), and a process's live children (a
server's workers)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["Child", "ChildError", "children", "free_ports", "http_ready", "log_file"]

READY_TIMEOUT_S = 300.0
POLL_S = 0.1

try:  # resolved here, not in the forked child (a dlopen after fork can deadlock)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 just now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def children(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def log_file(folder: Path, name: str) -> Path:
    """``folder/name.log``, or ``name-2.log``, ``name-3.log``... when that is taken (one log per
    process started, even when a run starts the same server twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"{name}.log", 1
    while path.exists():
        n += 1
        path = folder / f"{name}-{n}.log"
    return path


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness probe: true once ``GET url`` answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False

    return probe


class ChildError(RuntimeError):
    """A child that exited, or was not ready in time; the message names its log and ends with the log's tail."""


class Child:
    """A process a benchmark starts, ours or a peer's.

    Its stdout and stderr go to ``log`` for its whole life: never to a pipe read until a ready
    line and then abandoned, where a child that writes a line per request (uvicorn's access log)
    blocks in its next write once 64 KiB wait unread. It is ready when ``ready`` says so: a
    string that appears in the log, or a probe that returns true (`http_ready`); the
    constructor returns then. If the child exits first, or ``timeout_s`` pass, it is stopped and
    `ChildError` raised. Python children run unbuffered, so the log is live. On Linux the child
    gets SIGTERM when the thread that started it ends: a benchmark that dies leaves no server
    behind.
    """

    def __init__(self, argv: Sequence[str | Path], log: Path, ready: str | Callable[[], bool], *,
                 timeout_s: float = READY_TIMEOUT_S, env: Mapping[str, str] | None = None,
                 new_session: bool = False) -> None:
        self.argv = [str(a) for a in argv]
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:  # the child keeps its own descriptor of the file
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
                                         start_new_session=new_session, preexec_fn=_die_with_parent)
        try:
            self._wait_until_ready(ready, timeout_s)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_until_ready(self, ready: str | Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen = ""
        with self.log.open(encoding="utf-8", errors="replace") as output:
            while True:
                if isinstance(ready, str):
                    seen = seen[-len(ready):] + output.read()  # a line may arrive in pieces
                    if ready in seen:
                        return
                elif ready():
                    return
                if self.proc.poll() is not None:
                    raise ChildError(f"{self.argv[0]} exited with {self.proc.returncode} before it was ready; "
                                     f"{self.log} ends:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise ChildError(f"{self.argv[0]} was not ready after {timeout_s:.0f} s; "
                                     f"{self.log} ends:\n{self.tail()}")
                time.sleep(POLL_S)

    def tail(self, chars: int = 3000) -> str:
        """The end of the child's output."""
        with self.log.open("rb") as output:
            output.seek(max(0, output.seek(0, os.SEEK_END) - chars))
            return output.read().decode("utf-8", errors="replace")

    def close(self, timeout_s: float = 60) -> int:
        """Stop the child (SIGTERM, SIGKILL after ``timeout_s``); its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        return self.proc.returncode

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with_parent() -> None:
    """In the child before exec, Linux: SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)
