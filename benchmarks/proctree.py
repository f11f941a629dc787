"""CPU time of a server's process tree, process by process and thread by thread, from /proc (Linux).

The serving path is every process of the tree that is not a model replica (the coordinator, the
router, the intake and HTTP processes); a process's title names its role (``bert-serving:
replica 0 cpu``), else its command line's module (``...replicas.worker_main...``: before processes
had titles, or where setproctitle is missing). A CPython process
runs about one second of Python a second whatever its threads (one interpreter lock), so a
serving process that spends C seconds of CPU per request caps the server near 1 / C requests a
second: `Usage.cap`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Usage", "is_replica", "role", "sample", "tree", "usage"]

_TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and every process it started, and theirs (children are listed per thread)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def role(pid: int) -> str:
    """What a process of the server is: its title without ``bert-serving: ``, else its command."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    if cmdline.startswith("bert-serving: "):
        return cmdline.removeprefix("bert-serving: ")
    for module, name in (("replicas.worker_main", "replica"), ("zmq.router_main", "router"),
                         ("zmq.intake_main", "intake"), ("http.worker_main", "http")):  # without setproctitle
        if module in cmdline:
            return f"{name} {pid}"
    return "server" if "bert_serving" in cmdline or "bert-serving" in cmdline else cmdline[:40]


def is_replica(name: str) -> bool:
    return name.startswith("replica")


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, by ``name/tid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[f"{name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def sample(pid: int) -> dict[tuple[int, str], dict[str, float]]:
    """Every thread's CPU seconds so far, for each process of ``pid``'s tree."""
    return {(p, role(p)): _threads(p) for p in tree(pid)}


@dataclass
class Usage:
    """What one process of the tree spent between two samples."""

    role: str
    cpu_s: float
    threads: dict[str, float] = field(default_factory=dict)

    @property
    def busiest_thread(self) -> tuple[str, float]:
        return max(self.threads.items(), key=lambda kv: kv[1], default=("-", 0.0))

    def per(self, units: float) -> float:
        """Microseconds of CPU per unit (request, sentence)."""
        return self.cpu_s / max(units, 1) * 1e6

    def cap(self, units: float) -> float:
        """Units a second this process allows at most, at one second of Python a second."""
        per = self.cpu_s / max(units, 1)
        return 1 / per if per else float("inf")


def usage(before: dict, after: dict) -> list[Usage]:
    """Per process (present in ``after``), what it spent since ``before``; busiest first."""
    out = []
    for key, threads in after.items():
        was = before.get(key, {})
        spent = {name: cpu - was.get(name, 0.0) for name, cpu in threads.items()}
        out.append(Usage(key[1], sum(spent.values()), {n: s for n, s in spent.items() if s > 0}))
    return sorted(out, key=lambda u: -u.cpu_s)
