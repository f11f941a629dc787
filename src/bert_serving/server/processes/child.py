"""Starting a child process of the server, and what every child does first.

The parent side, `spawn`: a fresh interpreter (``python -c``: the user's ``__main__`` is never
re-imported, nothing is forked with the parent's threads), in a session of its own (the
terminal's Ctrl-C and the service manager's SIGTERM are the coordinator's to handle: it drains,
then stops its children), inheriting one end of a socket pair and nothing else, with its orders
as JSON on standard input.

The child side, `begin`: read the orders, take the role's name in ``ps`` (``bert-serving:
intake 2``) and ignore the signals the coordinator handles. A child goes when its channel
reaches its end: the coordinator stopped it, or died (its end closes with it).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Callable, Mapping

from .channel import Channel

__all__ = ["Child", "begin", "set_title", "set_thread_title", "spawn"]

TITLE_PREFIX = "bert-serving: "
# The title is written over the command line only (its ``python -c ...`` has room for it), not over
# the environment: /proc/<pid>/environ stays readable for whoever debugs the process.
_TITLE_ENV = {"SPT_NOENV": "1"}


class Child:
    """A spawned process and the coordinator's end of its channel."""

    def __init__(self, process: subprocess.Popen, channel: Channel) -> None:
        self.process, self.channel = process, channel

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None


def spawn(entry: str, orders: Mapping[str, object], *, env: Mapping[str, str] | None = None,
          pass_fds: tuple[int, ...] = (), send_timeout_s: float | None = None) -> Child:
    """Start ``entry`` (``module:function``) in a new interpreter with ``orders`` (JSON) and one
    end of a fresh socket pair, whose descriptor the child finds in its orders as ``fd``."""
    module, _, function = entry.partition(":")
    ours, theirs = socket.socketpair()  # a fresh pair: nothing of a previous process can reach the new one
    fd = theirs.fileno()
    try:
        process = subprocess.Popen([sys.executable, "-c", f"from {module} import {function}; {function}()"],
                                   stdin=subprocess.PIPE, pass_fds=(fd, *pass_fds),
                                   env={**os.environ, **(env or {}), **_TITLE_ENV}, start_new_session=True)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child's alone now: its exit closes the pair
    process.stdin.write(json.dumps({**orders, "fd": fd}).encode())
    process.stdin.close()
    return Child(process, Channel(ours, send_timeout_s=send_timeout_s))


def begin(role: str | Callable[[dict], str]) -> tuple[dict, Channel]:
    """What a child does first: its orders and its channel to the coordinator; its title says
    ``role`` (or what ``role`` makes of the orders); the signals the coordinator handles are
    ignored; logging as the coordinator's."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    orders = json.loads(sys.stdin.read())
    role = role if isinstance(role, str) else role(orders)
    set_title(role)
    if orders.get("log_level"):
        logging.basicConfig(level=orders["log_level"],
                            format=f"%(asctime)s %(levelname).1s {role} %(name)s: %(message)s", datefmt="%H:%M:%S")
    return orders, Channel(socket.socket(fileno=orders["fd"]))


def log_level() -> int:
    """The level children log at: the coordinator's, when its program configured logging (the CLI
    does; a program embedding a server may not), else none."""
    return logging.getLogger("bert_serving").getEffectiveLevel() if logging.getLogger().handlers else 0


def set_title(role: str) -> None:
    """Name this process ``bert-serving: <role>`` in ``ps`` and ``top`` (when setproctitle is installed)."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(TITLE_PREFIX + role)


def set_thread_title(name: str) -> None:
    """Name the calling thread (``top -H``, ``/proc/<pid>/task/<tid>/comm``: 15 characters)."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setthreadtitle(name[:15])
