"""The harness's side of a peer process: start it, talk ``@@`` lines, stop it.

The protocol is in :mod:`benchmarks.peer_process`. stdout lines that are not protocol
lines and stderr go to ``<work dir>/logs/<name>.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from benchmarks.common import BenchmarkError
from benchmarks.engine import REPO_ROOT
from benchmarks.workloads import Context


class PeerProcess:
    """One peer process (``python -m <module> --db-url ... --n ...``)."""

    def __init__(
        self,
        ctx: Context,
        module: str,
        url: str,
        n: int,
        tag: str,
        name: str,
        extra_args: list[str],
        label: str,
    ) -> None:
        self.ctx = ctx
        self.args = [
            sys.executable,
            "-m",
            module,
            "--db-url",
            url,
            "--n",
            str(n),
            "--inflight",
            str(ctx.inflight),
            "--tag",
            tag,
            "--timeout",
            str(ctx.timeout),
            *extra_args,
        ]
        self.name = name
        self.label = label
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process (stdin/stdout piped, stderr to its log file)."""
        log_dir = self.ctx.work_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(log_dir / f"{self.name}.log", "ab")  # noqa: ASYNC230 - closed in finish
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
        )

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for ``@@<kind>`` and return its payload; ``@@ERROR`` raises."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise BenchmarkError(
                            f"the {self.label} process exited ({await self.proc.wait()}) "
                            f"before {kind}; see {self.ctx.work_dir}/logs/{self.name}.log"
                        )
                    text = line.decode(errors="replace").rstrip()
                    if not text.startswith("@@"):
                        self._log.write(line)
                        continue
                    got, _, payload = text[2:].partition(" ")
                    data = json.loads(payload or "{}")
                    if got == "ERROR":
                        raise BenchmarkError(f"{self.label}: {data.get('message')}")
                    if got == kind:
                        return dict(data)
        except TimeoutError:
            raise BenchmarkError(
                f"the {self.label} process did not report {kind} in time"
            ) from None

    async def say(self) -> None:
        """Write the line the process waits for."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 60.0) -> None:
        """Let the process shut down (killed after ``timeout``) and close its log."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.say()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._log.close()


async def peer_cycle(peer: PeerProcess) -> dict[str, Any]:
    """One unmeasured process: launch, run its workflows, shut down; ``@@DONE``'s payload."""
    await peer.start()
    try:
        await peer.expect("LAUNCHED", 120)
        await peer.say()
        return await peer.expect("DONE", peer.ctx.timeout + 60)
    finally:
        await peer.finish()
