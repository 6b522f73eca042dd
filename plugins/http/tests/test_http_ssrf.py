"""The SSRF guard: refusals happen before any connection.

Safety net: every request here goes through :class:`Tripwire`, a socket factory behind the
guard that fails the test on any attempt to connect to a non-loopback address, and a
static resolver (no real DNS beyond ``localhost``). So even a broken guard never sends
traffic off this machine.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

import dataworkflows_http
from dataworkflows import StepOutcome, hookimpl
from dataworkflows_http import HttpRequest
from dataworkflows_http.guard import AddressPolicy, literal_address, parse_networks

NAMES = {
    "intranet.test": ["10.1.2.3"],
    "mixed.test": ["93.184.215.14", "192.168.1.20"],
    "metadata.test": ["169.254.169.254"],
}


class StaticResolver(AbstractResolver):
    """A hosts file: the names above, ``localhost`` from the system; nothing else."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host == "localhost":
            return await DefaultResolver().resolve(host, port, family)
        if host not in NAMES:
            raise OSError(f"{host} is not in the test's hosts file")
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for ip in NAMES[host]
        ]

    async def close(self) -> None:
        return None


class Tripwire:
    """Socket factory: records connect attempts and refuses any non-loopback one."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def __call__(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        self.attempts.append(sockaddr[0])
        if not ipaddress.ip_address(sockaddr[0].split("%")[0]).is_loopback:
            pytest.fail(f"the test tried to connect to {sockaddr[0]}")
        return socket.socket(family=family, type=type_, proto=proto)


@pytest.fixture
def guarded() -> tuple[type[HttpRequest], Tripwire, StaticResolver]:
    tripwire, resolver = Tripwire(), StaticResolver()

    class Guarded(HttpRequest):
        resolver_factory = staticmethod(lambda: resolver)
        socket_factory = staticmethod(tripwire)

    return Guarded, tripwire, resolver


async def _run(action_cls: type[HttpRequest], ctx: Any, url: str) -> Any:
    return await action_cls().run(ctx, HttpRequest.Params.model_validate({"url": url}))


DEFAULT_REFUSED = [
    "http://127.0.0.1:9/",
    "http://[::1]:9/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://167772161/",  # 10.0.0.1 as one decimal number
    "http://0x7f.1/",  # 127.0.0.1, hex and short form
    "http://0177.0.0.1/",  # 127.0.0.1, octal
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped IPv6
    "http://192.168.0.10/",
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0:9/",
    "http://localhost:9/",  # a name that resolves to loopback
    "http://intranet.test/",  # a name that resolves to a private address
    "http://mixed.test/",  # one public and one private address: refused
]


@pytest.mark.parametrize("url", DEFAULT_REFUSED)
async def test_refused_by_default_before_connecting(guarded, context, url):
    action_cls, tripwire, _ = guarded
    result = await _run(action_cls, context(settings={}), url)
    assert result.outcome is StepOutcome.FAILED, result
    assert result.error["code"] == "destination_refused"
    assert tripwire.attempts == []


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/", "http://metadata.test/", "http://[fe80::1]/"]
)
async def test_link_local_and_metadata_are_refused_even_when_allow_listed(guarded, context, url):
    action_cls, tripwire, _ = guarded
    ctx = context(settings={"http_allow_networks": "0.0.0.0/0,::/0,169.254.0.0/16"})
    result = await _run(action_cls, ctx, url)
    assert result.error["code"] == "destination_refused"
    assert "never allowed" in result.error["details"]["reason"]
    assert tripwire.attempts == []


async def test_redirect_to_a_private_address_is_refused(guarded, context, recorder_factory):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/to-ip")
        async def to_ip(request: web.Request) -> web.Response:
            raise web.HTTPFound("http://10.0.0.1/admin")

        @r.get("/to-name")
        async def to_name(request: web.Request) -> web.Response:
            raise web.HTTPFound("http://intranet.test/admin")

        @r.get("/to-metadata")
        async def to_metadata(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect("http://169.254.169.254/latest/meta-data/")

        @r.get("/to-decimal")
        async def to_decimal(request: web.Request) -> web.Response:
            raise web.HTTPFound("http://167772161/")

    server = await recorder_factory(routes)
    action_cls, tripwire, resolver = guarded
    # only the test server's address is allowed
    ctx = context(settings={"http_allow_networks": "127.0.0.1/32"})
    for path in ("/to-ip", "/to-name", "/to-metadata", "/to-decimal"):
        result = await _run(action_cls, ctx, server.url(path))
        assert result.outcome is StepOutcome.FAILED, (path, result)
        assert result.error["code"] == "destination_refused", path
    assert set(tripwire.attempts) == {"127.0.0.1"}  # the test server, nothing else
    assert resolver.asked == ["intranet.test"]
    assert [r["path"] for r in server.requests] == [
        "/to-ip",
        "/to-name",
        "/to-metadata",
        "/to-decimal",
    ]


async def test_allow_listed_loopback_is_reachable(guarded, context, recorder_factory):
    def routes(r: web.RouteTableDef) -> None:
        @r.get("/")
        async def ok(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

    server = await recorder_factory(routes)
    action_cls, tripwire, _ = guarded
    result = await _run(
        action_cls, context(settings={"http_allow_networks": "127.0.0.0/8"}), server.url("/")
    )
    assert result.outputs["json"] == {"ok": True}
    assert tripwire.attempts == ["127.0.0.1"]
    refused = await _run(action_cls, context(settings={}), server.url("/"))
    assert refused.error["code"] == "destination_refused"
    assert tripwire.attempts == ["127.0.0.1"]


async def test_invalid_allow_list_setting_is_a_clear_failure(guarded, context):
    action_cls, tripwire, _ = guarded
    result = await _run(
        action_cls, context(settings={"http_allow_networks": "10.0.0.0/8,nope"}), "http://x.test/"
    )
    assert result.error["code"] == "invalid_setting"
    assert "'nope'" in result.error["message"]
    assert tripwire.attempts == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("fd12:3456::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 embedding 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 embedding 10.0.0.1
        ("224.0.0.1", False),
    ],
)
def test_default_policy(address, allowed):
    assert (AddressPolicy().refusal(address) is None) is allowed


def test_allow_list_and_literal_forms():
    policy = AddressPolicy(parse_networks("127.0.0.0/8, 10.20.0.0/16"))
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("10.20.3.4") is None
    assert policy.refusal("10.21.0.1") is not None
    assert policy.refusal("169.254.169.254") is not None
    assert str(literal_address("2130706433")) == "127.0.0.1"
    assert str(literal_address("0x7f.0.0.1")) == "127.0.0.1"
    assert str(literal_address("[::1]")) == "::1"
    assert literal_address("example.com") is None
    assert literal_address("cafe.be") is None
    with pytest.raises(ValueError, match="'x'"):
        parse_networks("x")


async def test_default_refusal_through_the_kernel(kernel_factory, run_workflow, recorder_factory):
    """127.0.0.1 without an allow-list: the step fails, the server sees nothing."""
    tripwire = Tripwire()

    class Guarded(HttpRequest):
        socket_factory = staticmethod(tripwire)

    class GuardedPlugin:
        @hookimpl
        def register_actions(self, register: Any) -> None:
            register(Guarded)

    server = await recorder_factory(lambda r: None)
    kernel = await kernel_factory(plugins=[GuardedPlugin()], entrypoints=False)
    definition = {
        "id": "ssrf",
        "displayName": "SSRF",
        "nodes": [
            {"id": "call", "actionType": "http.request", "parameters": {"url": server.url("/")}}
        ],
    }
    run = await run_workflow(kernel, definition)
    assert run["status"] == "Failed"
    assert run["actions"][0]["error"]["code"] == "destination_refused"
    assert server.requests == [] and tripwire.attempts == []
    assert dataworkflows_http.HttpRequest.socket_factory is None
