"""Simulated hosts: one Linux network namespace each, joined to the root namespace by a
veth pair, with faults injected on the namespace's side of the link.

Every address is assigned here, on links this module creates, and everything is removed
by :meth:`Hosts.remove` (namespaces, and with them the veth pairs and their qdiscs),
which the harness calls in a ``finally`` — also after a failure or a signal. Needs root
and iproute2 (``ip``, ``tc``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces here (not root, no iproute2)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def require_netns() -> None:
    """Raise :class:`NetnsUnavailable` with the reason when namespaces cannot be made."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("the multi-host test makes network namespaces: run it as root")
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"`{tool}` is missing (apt-get install iproute2 util-linux)")


@dataclass
class Host:
    """One simulated host: its namespace, link and addresses."""

    name: str  # also its hostname (worker owner names start with it)
    netns: str
    root_if: str  # the veth end in the root namespace
    ns_if: str  # the veth end inside the namespace
    root_addr: str  # where the host reaches the database (through the forwarder)
    ns_addr: str
    clock_offset: float
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host: its namespace and its own hostname."""
        return [
            "ip", "netns", "exec", self.netns,
            "unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh", *argv,
        ]  # fmt: skip

    def tc(self, *args: str) -> None:
        """``tc`` on the host's side of its link."""
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "tc", *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip

    def degrade(self, delay_ms: int, jitter_ms: int, loss_pct: int) -> str:
        """Delay and lose packets the host sends; returns how it was done.

        ``tc netem`` where the kernel has it. Where it does not (this project's CI kernel
        has no sch_netem), the link is shaped with ``tbf`` (a slow link: packets queue, and
        are dropped when the queue is over its latency bound) and packets are dropped at
        random by an nftables rule (``numgen random``) in the host's namespace.
        """
        spec = f"delay {delay_ms}ms {jitter_ms}ms loss {loss_pct}%"
        try:
            self.tc("qdisc", "replace", "dev", self.ns_if, "root", "netem", *spec.split())
            return f"tc netem {spec}"
        except subprocess.CalledProcessError:
            pass
        if shutil.which("nft") is None:
            raise NetnsUnavailable(
                "no sch_netem in this kernel and no `nft`: apt-get install nftables"
            )
        shaping = "rate 256kbit burst 3000 latency 400ms"
        self.tc("qdisc", "replace", "dev", self.ns_if, "root", "tbf", *shaping.split())
        rules = (
            "add table inet mhloss\n"
            "add chain inet mhloss out { type filter hook output priority 0; }\n"
            "add chain inet mhloss in { type filter hook input priority 0; }\n"
            f"add rule inet mhloss out numgen random mod 100 < {loss_pct} drop\n"
            f"add rule inet mhloss in numgen random mod 100 < {loss_pct} drop\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "-f", "-"],
            input=rules, text=True, capture_output=True, check=True,
        )  # fmt: skip
        return f"tc tbf {shaping} + nft random drop {loss_pct}% each way (no sch_netem here)"

    def restore(self) -> None:
        """Undo :meth:`degrade`."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.tc("qdisc", "del", "dev", self.ns_if, "root")
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", "mhloss"],
            capture_output=True, check=False,
        )  # fmt: skip

    def link(self, up: bool) -> None:
        """Partition (down) or heal (up) the host's only link."""
        _ip("-n", self.netns, "link", "set", self.ns_if, "up" if up else "down")

    def kill_all(self) -> None:
        """Kill every process of the host at once (SIGKILL), as a power cut would."""
        out = _ip("netns", "pids", self.netns, check=False).stdout.split()
        for pid in out:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


class Hosts:
    """Creates ``count`` hosts; :meth:`remove` takes everything down again."""

    def __init__(self, count: int, offsets: list[float]) -> None:
        tag = os.getpid() % 100000
        octet = 100 + os.getpid() % 150
        self.hosts = [
            Host(
                name=f"h{i}",
                netns=f"dwmh{tag}h{i}",
                root_if=f"mh{tag}h{i}r",
                ns_if=f"mh{tag}h{i}n",
                root_addr=f"10.{octet}.{i}.1",
                ns_addr=f"10.{octet}.{i}.2",
                clock_offset=offsets[i % len(offsets)],
            )
            for i in range(count)
        ]

    def create(self) -> None:
        for h in self.hosts:
            _ip("netns", "add", h.netns)
            _ip("link", "add", h.root_if, "type", "veth", "peer", "name", h.ns_if)
            _ip("link", "set", h.ns_if, "netns", h.netns)
            _ip("addr", "add", f"{h.root_addr}/24", "dev", h.root_if)
            _ip("link", "set", h.root_if, "up")
            _ip("-n", h.netns, "addr", "add", f"{h.ns_addr}/24", "dev", h.ns_if)
            _ip("-n", h.netns, "link", "set", h.ns_if, "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Kill what runs in the namespaces and delete them (and so the veth pairs)."""
        for h in self.hosts:
            h.kill_all()
            _ip("netns", "del", h.netns, check=False)
            _ip("link", "del", h.root_if, check=False)  # gone with the namespace already
