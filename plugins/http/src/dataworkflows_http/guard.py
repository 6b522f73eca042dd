"""The SSRF guard of ``http.request``: which IP addresses a workflow may reach.

The destination is checked as an IP address, after DNS resolution, at three points:

1. before anything else, when the URL's host is an IP literal, including the legacy forms
   ``inet_aton`` accepts (``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``);
2. in the DNS resolver the client uses: a name is refused if *any* of its addresses is
   refused, and the connection only ever goes to the addresses that were checked (no
   second lookup an attacker could answer differently);
3. in the socket factory, the last step before ``connect()``, for every address.

Redirects are followed by the action itself, one request at a time, so every hop goes
through the same checks.

Policy: link-local addresses (``169.254.0.0/16`` with the cloud metadata service
``169.254.169.254``, ``fe80::/10``), other metadata addresses, ``0.0.0.0/8``, multicast
and broadcast are always refused. Every other non-public address (loopback, private
ranges, shared address space, documentation and reserved ranges, IPv4-mapped, 6to4,
Teredo and NAT64 forms of those) is refused unless it falls in the allow-list, the plugin
setting ``DATAWORKFLOWS_HTTP_ALLOW_NETWORKS`` (comma-separated CIDRs, e.g.
``127.0.0.0/8,::1/128`` for tests or ``10.20.0.0/16`` for an internal API).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SocketFactory = Callable[[Any], socket.socket]

#: Refused even when an allow-list covers them.
ALWAYS_DENIED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("169.254.0.0/16", "link-local (cloud metadata service)"),
        ("fe80::/10", "IPv6 link-local"),
        ("fd00:ec2::254/128", "cloud metadata service (IPv6)"),
        ("100.100.100.200/32", "cloud metadata service"),
        ("0.0.0.0/8", "'this host' (0.0.0.0/8)"),
        ("::/128", "unspecified"),
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "IPv6 multicast"),
        ("255.255.255.255/32", "broadcast"),
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_IPV4 = re.compile(r"^[0-9a-fA-FxX.]+$")


class DestinationRefused(Exception):
    """The request would reach an address the policy refuses (raised before connecting)."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"refused to connect to {host} ({address}): {reason}")
        self.host = host
        self.address = address
        self.reason = reason


def parse_networks(spec: str | None) -> tuple[IPNetwork, ...]:
    """``"127.0.0.0/8, ::1"`` → networks; raises ``ValueError`` naming a bad entry."""
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP network (use CIDR, e.g. 10.0.0.0/8)") from None
    return tuple(out)


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL host denotes when it is an IP literal (any legacy form)."""
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    if ip in _NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _kind(ip: IPAddress) -> str:
    for attr in ("loopback", "private", "reserved", "link_local", "multicast", "unspecified"):
        if getattr(ip, f"is_{attr}", False):
            return attr.replace("_", "-")
    return "non-public"


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses may be reached: public ones, plus the allow-list's networks."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, spec: str | None) -> AddressPolicy:
        return _policy_of(spec)

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` is refused, or None when it may be reached (a pure function of
        the policy and the address: remembered, as every request asks it up to 3 times)."""
        return _refusal(self, address)

    def _refusal(self, address: str | IPAddress) -> str | None:
        if isinstance(address, str):
            try:
                ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                return f"{address!r} is not an IP address"
        else:
            ip = address
        candidates: list[IPAddress] = [ip, *_embedded_ipv4(ip)]
        for candidate in candidates:
            for network, why in ALWAYS_DENIED:
                if candidate.version == network.version and candidate in network:
                    return f"{candidate} is {why}, which is never allowed"
        effective = candidates[1] if len(candidates) > 1 else ip
        if self._allowed(effective) or self._allowed(ip):
            return None
        for candidate in candidates:
            if not candidate.is_global:
                return (
                    f"{candidate} is a {_kind(candidate)} address; allow its network with "
                    "DATAWORKFLOWS_HTTP_ALLOW_NETWORKS if this is intended"
                )
        return None

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow)

    def check(self, host: str, address: str | IPAddress) -> None:
        reason = self.refusal(address)
        if reason is not None:
            raise DestinationRefused(host, str(address), reason)


@functools.lru_cache(maxsize=64)
def _policy_of(spec: str | None) -> AddressPolicy:
    """The policy of a ``DATAWORKFLOWS_HTTP_ALLOW_NETWORKS`` value (parsed once)."""
    return AddressPolicy(parse_networks(spec))


@functools.lru_cache(maxsize=4096)
def _refusal(policy: AddressPolicy, address: str | IPAddress) -> str | None:
    return policy._refusal(address)


class GuardedResolver:
    """A resolver that refuses a name when any of its addresses is refused.

    It implements aiohttp's ``AbstractResolver`` (``resolve``, ``close``) without
    subclassing it, so that loading the plugin does not import aiohttp.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        if inner is None:
            from aiohttp.resolver import DefaultResolver

            inner = DefaultResolver()
        self.policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self.policy.check(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(
    policy: AddressPolicy, inner: SocketFactory | None = None
) -> SocketFactory:
    """A socket factory for ``aiohttp.TCPConnector`` that checks the address first."""

    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        policy.check(str(sockaddr[0]), str(sockaddr[0]))
        if inner is not None:
            return inner(addr_info)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def check_hosts(policy: AddressPolicy, hosts: Iterable[str]) -> None:
    """Refuse IP-literal hosts before any connection (names are checked when resolved)."""
    for host in hosts:
        ip = literal_address(host)
        if ip is not None:
            policy.check(host, ip)
