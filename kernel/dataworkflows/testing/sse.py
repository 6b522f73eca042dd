"""Reading `GET /api/v1/events/stream` (Server-Sent Events) in tests: :func:`open_stream`
and :class:`SseReader` (frames, events, events up to a type)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

STREAM = "/api/v1/events/stream"


@dataclass
class Frame:
    """One SSE frame: an event (``id`` None for live events) or a comment."""

    event: str | None = None
    id: str | None = None
    data: Any = None
    comment: str | None = None

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.data["executionId"], self.data["sequence"], self.data["durable"])


class SseReader:
    """Reads frames from an open ``text/event-stream`` response."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def frame(self, timeout: float = 20.0) -> Frame:
        """The next frame (a comment or an event), waiting at most ``timeout`` seconds."""
        return await asyncio.wait_for(self._frame(), timeout)

    async def _frame(self) -> Frame:
        frame = Frame()
        data: list[str] = []
        seen = False
        while True:
            raw = await self.response.content.readline()
            if raw == b"":
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if seen:
                    if data:
                        frame.data = json.loads("\n".join(data))
                    return frame
                continue
            seen = True
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                frame.comment = value
            elif field == "id":
                frame.id = value
            elif field == "event":
                frame.event = value
            elif field == "data":
                data.append(value)

    async def event(self, timeout: float = 20.0) -> Frame:
        """The next event frame (comments skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.frame(max(deadline - loop.time(), 0.001))
            if frame.comment is None:
                return frame

    async def events_until(self, last_type: str, count: int = 1, timeout: float = 30.0) -> list:
        """Event frames up to and including the ``count``-th of type ``last_type``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frames: list[Frame] = []
        while True:
            frame = await self.event(max(deadline - loop.time(), 0.001))
            frames.append(frame)
            if sum(1 for f in frames if f.event == last_type) >= count:
                return frames


async def open_stream(
    client: Any, *, headers: dict[str, str] | None = None, **params: str
) -> tuple[Any, SseReader]:
    """``GET /api/v1/events/stream`` and wait for the stream to be open (its first bytes)."""
    response = await client.get(STREAM, params=params, headers=headers or {})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    reader = SseReader(response)
    first = await reader.frame()
    assert first.comment == "stream open"
    return response, reader
