"""What one message between two processes costs on this machine: a socket pair, two processes
taking turns (each waits for the other's message, as the server's processes do under light load),
the CPU each side spends per message, system time included.

    python benchmarks/message_cost.py            # ~2 seconds

The serving path on many processes pays this per message it passes on: a request crosses the
router, an intake and the coordinator (and back), where one process used to do it all. Messages
are batched (a turn's requests in one), so the cost per request falls as the load rises; at a
light load each request pays it whole.
"""

from __future__ import annotations

import os
import resource
import socket
import time

ROUNDS = 20_000


def main() -> None:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        for _ in range(ROUNDS):
            theirs.send(theirs.recv(64))
        os._exit(0)
    theirs.close()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        ours.send(b"x" * 32)
        ours.recv(64)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    mine = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"{os.cpu_count()} cores: round trip {elapsed / ROUNDS * 1e6:.1f} µs; CPU per message received and "
          f"answered: {mine / ROUNDS * 1e6:.1f} µs on one side, {(child.ru_utime + child.ru_stime) / ROUNDS * 1e6:.1f} "
          "µs on the other")


if __name__ == "__main__":
    main()
