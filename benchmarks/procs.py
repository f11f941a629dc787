"""What the benchmarks share about the processes they start: free loopback ports, and a
process's live children (a server's workers)."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["children", "free_ports"]


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
