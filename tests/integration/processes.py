"""Helpers for tests that run the server as a real command: start it, find its children."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def start_cli(*flags: str, env: dict | None = None, own_group: bool = False) -> subprocess.Popen:
    """``bert-serving-start``; with ``own_group`` in a process group of its own (as a shell or
    systemd starts it), so that the test can signal the whole group without signalling itself."""
    return subprocess.Popen([str(BIN / "bert-serving-start"), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
                            start_new_session=own_group)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(lines)}")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def title(pid: int) -> str:
    """A process's command line as ``ps`` shows it (the server's processes: ``bert-serving: <role>``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def replicas(pid: int) -> list[int]:
    """The model replicas (worker processes) among the children of server ``pid``."""
    return [child for child in children(pid) if "replica" in title(child)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def tree_rss_mb(pid: int) -> float:
    """What server ``pid`` and every process it started hold in memory together."""
    total = 0.0
    for each in (pid, *children(pid)):
        try:
            total += rss_mb(each)
        except OSError:  # gone meanwhile
            pass
    return total


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def terminate_and_wait(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    """``bert-serving-terminate -port PORT``, then the server's clean exit."""
    done = subprocess.run([str(BIN / "bert-serving-terminate"), "-port", str(port)], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    assert proc.wait(timeout) == 0
