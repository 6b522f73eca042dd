"""PostgreSQL ``LISTEN`` on a dedicated connection that comes back after it drops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from dataworkflows.db.database import libpq_url

log = logging.getLogger(__name__)


async def listen_forever(
    url: str,
    channels: Sequence[str],
    on_notify: Callable[[str, str], None],
    *,
    on_listening: Callable[[], None] | None = None,
    retry_delay: float = 1.0,
) -> None:
    """Call ``on_notify(channel, payload)`` for every notification on ``channels``.

    Runs until cancelled. ``on_listening`` is called each time the ``LISTEN``\\ s are in
    place (first connect and every reconnect): notifications sent while no connection
    listened are lost, so the caller should look at the database again then. A dropped
    connection is retried every ``retry_delay`` seconds.
    """
    import psycopg

    target = libpq_url(url)
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(target, autocommit=True)
            async with conn:
                for channel in channels:
                    await conn.execute(f"LISTEN {channel}")
                if on_listening is not None:
                    on_listening()
                async for note in conn.notifies():
                    on_notify(note.channel, note.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("LISTEN %s: connection lost; retrying", ",".join(channels), exc_info=True)
            await asyncio.sleep(retry_delay)
