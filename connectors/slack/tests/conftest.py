"""A local Slack Web API speaking ``chat.postMessage`` as Slack does.

Wire format reproduced: ``POST /api/chat.postMessage`` with a JSON body (what slack_sdk
sends, ``application/json; charset=utf-8``) or a form body, the token as ``Authorization:
Bearer xoxb-...`` (or a ``token`` form field); HTTP 200 with ``{"ok": true, "channel",
"ts", "message"}`` on success and ``{"ok": false, "error": "..."}`` on application errors
(``not_authed``, ``invalid_auth``, ``channel_not_found``, ``no_text``...); rate limiting as
HTTP 429 with a ``Retry-After`` header and ``{"ok": false, "error": "ratelimited"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

BOT_TOKEN = "xoxb-1111-2222-canaryToken+/=Zq"


class FakeSlack:
    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self.channels = {"C0123ABCD": "general", "C0456EFGH": "random"}
        self.calls: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        #: canned answers for the next calls: (HTTP status, body, headers)
        self.queued: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self._seq = 100
        self.server: TestServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/api/"))

    def rate_limit_next(self, retry_after: int = 3) -> None:
        self.queued.append(
            (429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
        )

    def fail_next(self, error: str, status: int = 200, **extra: Any) -> None:
        self.queued.append((status, {"ok": False, "error": error, **extra}, {}))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self.post_message)
        return app

    async def post_message(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if request.content_type == "application/json":
            payload = await request.json()
        else:
            payload = dict(await request.post())
            token = token or payload.pop("token", None)
            if isinstance(payload.get("blocks"), str):
                payload["blocks"] = json.loads(payload["blocks"])
        self.calls.append({"headers": dict(request.headers), "payload": payload, "token": token})
        if self.queued:
            status, body, headers = self.queued.pop(0)
            return web.json_response(body, status=status, headers=headers)
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token != self.token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        channel = str(payload.get("channel") or "")
        by_name = {f"#{name}": cid for cid, name in self.channels.items()}
        channel_id = channel if channel in self.channels else by_name.get(channel)
        if channel_id is None:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        text, blocks = payload.get("text"), payload.get("blocks")
        if not text and not blocks:
            return web.json_response({"ok": False, "error": "no_text"})
        if text and len(text) > 40000:
            return web.json_response({"ok": False, "error": "msg_too_long"})
        self._seq += 1
        ts = f"1700000000.{self._seq:06d}"
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": text or "",
            "ts": ts,
            "bot_id": "B0BOT0001",
            "app_id": "A0APP0001",
        }
        if blocks:
            message["blocks"] = blocks
        if payload.get("thread_ts"):
            message["thread_ts"] = payload["thread_ts"]
        self.messages.append({"channel": channel_id, **message})
        body: dict[str, Any] = {"ok": True, "channel": channel_id, "ts": ts, "message": message}
        if "charset" not in request.headers.get("Content-Type", "").lower():
            body["warning"] = "missing_charset"
            body["response_metadata"] = {"warnings": ["missing_charset"]}
        return web.json_response(body)


@pytest_asyncio.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    yield fake
    await fake.server.close()
