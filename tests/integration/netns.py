"""Another host, inside this machine: two network namespaces joined by a veth pair.

The server runs in one ("server", 192.0.2.1), the remote peer in the other ("peer",
192.0.2.2): TEST-NET-1 addresses (RFC 5737) that reach nothing outside the pair. Both are
created for the test and deleted afterwards, with every process started in them. Traffic
between the root namespace and a new one does not pass on these machines, so nothing here
runs in the root namespace. Needs root and iproute2; otherwise the test is skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from .processes import alive, children

SERVER_IP, PEER_IP = "192.0.2.1", "192.0.2.2"


@dataclass
class Hosts:
    server_ns: str
    peer_ns: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start_in_server(self, *command: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.server_ns, *command], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.processes.append(proc)
        return proc

    def run_in_peer(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.peer_ns, *command], capture_output=True, text=True,
                              timeout=timeout)

    def python_in_peer(self, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run_in_peer(sys.executable, "-c", script, *args, timeout=timeout)


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@contextmanager
def two_hosts():
    """`Hosts`, or a skip with the reason when namespaces cannot be made here."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need iproute2's `ip`")
    tag = f"{os.getpid() % 100_000}"
    hosts = Hosts(server_ns=f"bs-server-{tag}", peer_ns=f"bs-peer-{tag}")
    veth = (f"bsv{tag}s", f"bsv{tag}p")
    created: list[str] = []
    try:
        for ns in (hosts.server_ns, hosts.peer_ns):
            done = _ip("netns", "add", ns)
            if done.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {done.stderr.strip()}")
            created.append(ns)
        steps = [
            ("link", "add", veth[0], "type", "veth", "peer", "name", veth[1]),
            ("link", "set", veth[0], "netns", hosts.server_ns),
            ("link", "set", veth[1], "netns", hosts.peer_ns),
            ("-n", hosts.server_ns, "addr", "add", f"{SERVER_IP}/24", "dev", veth[0]),
            ("-n", hosts.peer_ns, "addr", "add", f"{PEER_IP}/24", "dev", veth[1]),
            ("-n", hosts.server_ns, "link", "set", veth[0], "up"),
            ("-n", hosts.peer_ns, "link", "set", veth[1], "up"),
            ("-n", hosts.server_ns, "link", "set", "lo", "up"),
            ("-n", hosts.peer_ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot join the namespaces with a veth pair: ip {' '.join(step)}: {done.stderr.strip()}")
        yield hosts
    finally:
        for proc in hosts.processes:
            if proc.poll() is None:
                left = children(proc.pid)  # its workers, in the namespace too
                proc.kill()
                proc.wait(30)
                for pid in left:
                    if alive(pid):
                        os.kill(pid, 9)
        for ns in created:  # its processes are gone: deleting it deletes its end of the veth pair too
            _ip("netns", "del", ns)
        _ip("link", "del", veth[0])  # in case it never moved into a namespace
