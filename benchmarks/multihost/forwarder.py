"""A TCP forwarder in the root namespace: ``LISTEN_ADDR:PORT`` → PostgreSQL on loopback.

PostgreSQL here listens on 127.0.0.1 only; the simulated hosts reach it at the root-side
address of their veth link, where this process listens. It relays bytes both ways and
closes one side when the other closes, so a server-side session end (e.g.
``idle_in_transaction_session_timeout`` ending a partitioned host's transaction) reaches
the host, and a host's reset reaches the server.

``python -m benchmarks.multihost.forwarder 127.0.0.1:5432 10.x.0.1:5432 10.x.1.1:5432 ...``
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(target: tuple[str, int], listens: list[tuple[str, int]]) -> None:
    async def handle(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*target)
        except OSError:
            down_w.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the forwarder is stopping
            await asyncio.gather(_pipe(down_r, up_w), _pipe(up_r, down_w))

    servers = [await asyncio.start_server(handle, host, port) for host, port in listens]
    print("forwarding", flush=True)  # the harness waits for this line
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


if __name__ == "__main__":
    asyncio.run(_serve(_addr(sys.argv[1]), [_addr(a) for a in sys.argv[2:]]))
