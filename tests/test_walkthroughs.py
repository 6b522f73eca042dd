"""The README's and docs' walk-throughs, run as written against a real ``serve``.

Each walk-through's shell block is extracted from the Markdown and run with bash from the
repository's root, as a reader would paste it; only the port changes (a free one instead
of 8080) and the database is a fresh SQLite file. What the text promises is then checked
through the API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shell_blocks(document: str, heading: str) -> list[str]:
    """The ```bash blocks of the section of ``document`` under ``heading`` (up to the next
    heading outside a code block)."""
    lines = (ROOT / document).read_text().splitlines()
    start = lines.index(heading)
    blocks: list[str] = []
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if current is None:
            if line.startswith("#"):
                break  # the next section
            if line.startswith(("```bash", "```sh")):
                current = []
        elif line.startswith("```"):
            blocks.append("\n".join(current) + "\n")
            current = None
        else:
            current.append(line)
    return blocks


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    """``dataworkflows serve`` from the repository's root on a fresh SQLite database."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATAWORKFLOWS_")}
    env["DATAWORKFLOWS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'walkthrough.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataworkflows.cli.main", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(port, "/health")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"serve did not come up:\n{output}") from None
            time.sleep(0.1)  # waiting for the port to open, not for a result
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_blocks(blocks: list[str], port: int) -> str:
    """The blocks in one bash session (later ones use earlier variables); their stdout."""
    script = "\n".join(blocks).replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def json_objects(out: str) -> list[Any]:
    """Every JSON object printed (curl -s prints answers back to back, without newlines)."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while (index := out.find("{", index)) != -1:
        try:
            value, end = decoder.raw_decode(out, index)
        except ValueError:
            index += 1
            continue
        found.append(value)
        index = end
    return found


def final_run(port: int, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        run = _get(port, f"/api/v1/executions/{execution_id}")
        if run["status"] in ("Succeeded", "Failed", "Cancelled") or time.monotonic() > deadline:
            return dict(run)
        time.sleep(0.1)  # the run goes on in the server: look again


needs_tools = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")), reason="curl and openssl"
)


@needs_tools
def test_readme_curl_walkthrough(server: int) -> None:
    blocks = shell_blocks("README.md", "### Walk-through with curl")
    assert len(blocks) == 1
    out = run_blocks(blocks, server)
    assert '"id": "simple-echo"' in out and '"status": "Active"' in out
    execution_id = re.search(r'"executionId": "([0-9a-f-]{36})"', out)
    assert execution_id, out
    run = final_run(server, execution_id.group(1))
    assert run["status"] == "Succeeded"
    assert [a["outputs"] for a in run["actions"]] == [
        {"echo": "Hello from node 1"},
        {"echo": "Hello from node 2"},
    ]
    assert '"type": "RunQueued"' in out  # the event history
    assert '"name": "demo-token"' in out and "not-a-real-token-123" not in out


@needs_tools
def test_commands_walkthrough(server: int) -> None:
    blocks = shell_blocks("docs/api.md", "### Walk-through: commands")
    assert len(blocks) == 1
    first, again, unknown = json_objects(run_blocks(blocks, server))
    assert again == first and first["correlationId"] == "order-1042"
    assert unknown["code"] == "unknown_command"
    assert unknown["details"]["knownCommands"] == ["action.run", "workflow.run"]
    run = final_run(server, first["executionId"])
    assert run["status"] == "Succeeded" and run["actions"][0]["outputs"] == {"echo": "hello"}
    events = _get(server, first["eventsUrl"])["items"]
    assert events[-1]["type"] == "RunSucceeded"
    assert events[-1]["payload"] == {"status": "Succeeded", "correlationId": "order-1042"}
    runs = _get(server, "/api/v1/executions")["items"]
    assert [r["id"] for r in runs] == [first["executionId"]]  # one run


@needs_tools
def test_templates_walkthrough(server: int) -> None:
    blocks = shell_blocks("docs/templates.md", "## Walk-through: templates over the API")
    assert len(blocks) == 1
    preview, refused, accepted, bad_config, draft, published = json_objects(
        run_blocks(blocks, server)
    )
    assert preview["document"] == "New project Docs (owner Ada, due May): 0 milestones, team of 1."
    assert refused["code"] == "invalid_template_set"
    assert [p["code"] for p in refused["details"]["problems"]] == ["unsafe_template"]
    assert _get(server, "/api/v1/templates")["items"][0]["id"] == "project-brief"  # only it
    assert len(_get(server, "/api/v1/templates")["items"]) == 1
    run = final_run(server, accepted["executionId"])
    assert run["status"] == "Succeeded", run
    assert run["actions"][0]["outputs"] == preview  # the same bytes
    assert bad_config["code"] == "invalid_config"
    assert {p["code"] for p in bad_config["details"]["problems"]} == {
        "schema_required",
        "schema_type",
    }
    assert (draft["id"], draft["status"], draft["latestVersion"]) == ("example-health", "Draft", 1)
    assert published["status"] == "Active"


@needs_tools
def test_signed_webhook_walkthrough(server: int) -> None:
    blocks = shell_blocks("docs/triggers.md", "## Walk-through: a signed webhook")
    assert len(blocks) == 2
    out = run_blocks(blocks, server)
    answers = json_objects(out)
    delivery = next(a for a in answers if "activated" in a)
    assert delivery["activated"] is True and delivery["duplicate"] is False
    run = final_run(server, delivery["executionId"])
    assert run["status"] == "Succeeded", run
    assert run["trigger"]["deliveryId"] == "evt-001"
    inline = answers[-1]  # the trigger with an inline secret
    assert inline["config"]["signature"]["secret"] == "**********"


def test_key_rotation_walkthrough_on_sqlite(tmp_path: Path) -> None:
    """docs/connectors.md: rotating the key of the key file, as written, in a folder with
    the default ./dataworkflows.db; the stored credential still opens with the new key."""
    blocks = [
        b for b in shell_blocks("docs/connectors.md", "### The encrypted store") if "NEW=" in b
    ]
    assert len(blocks) == 1
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    def run(*command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(command),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            **kwargs,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    run(
        str(bin_dir / "dataworkflows"),
        "credentials",
        "set",
        "api-token",
        input="tok-3f9a-rotate-me\n",
    )
    old_key = (tmp_path / "dataworkflows.db.key").read_text().strip()
    done = run("bash", "-euo", "pipefail", "-c", blocks[0])
    assert "credentials: 1 re-encrypted, 0 already current, 0 failed" in done.stdout, done.stdout
    new_key = (tmp_path / "dataworkflows.db.key").read_text().strip()
    assert new_key != old_key

    check = (
        "import asyncio\n"
        "from dataworkflows.kernel import Kernel\n"
        "async def main():\n"
        "    kernel = Kernel()\n"
        "    await kernel.start()\n"
        "    try:\n"
        "        print((await kernel.credentials.resolve('default', 'api-token')).secret)\n"
        "    finally:\n"
        "        await kernel.close()\n"
        "asyncio.run(main())\n"
    )
    opened = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.strip() == "tok-3f9a-rotate-me"  # with the new key, from the file


@needs_tools
def test_metrics_walkthrough(server: int) -> None:
    """docs/observability.md, "Metrics": after the README's run, /metrics shows it."""
    out = run_blocks(shell_blocks("README.md", "### Walk-through with curl"), server)
    execution_id = re.search(r'"executionId": "([0-9a-f-]{36})"', out)
    assert execution_id, out
    assert final_run(server, execution_id.group(1))["status"] == "Succeeded"
    blocks = shell_blocks("docs/observability.md", "## Metrics")
    assert len(blocks) == 1
    out = run_blocks(blocks, server)
    finished = 'dataworkflows_runs_finished_total{status="Succeeded",workflow_id="simple-echo"}'
    assert f"{finished} 1.0" in out, out
    assert 'dataworkflows_queue_depth{state="pending"} 0.0' in out
    assert "# EOF" in out  # OpenMetrics
    assert any(a.get("code") == "unknown_parameter" for a in json_objects(out))


def _run_standalone(block: str, tmp_path: Path) -> str:
    """A walk-through that starts its own ``serve`` (on a free port instead of 8080), run
    with bash in ``tmp_path`` with the engine's scripts first on PATH; its stdout."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    script = block.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(
        "--port 8080", f"--port {port}"
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_tools
def test_strict_mode_token_walkthrough(tmp_path: Path) -> None:
    [block] = shell_blocks("docs/auth.md", "### Walk-through: strict mode with a token")
    out = _run_standalone(block, tmp_path)
    refused, created, accepted = json_objects(out)
    assert refused["code"] == "unauthenticated" and "} 401" in out, out
    assert created["id"] == "hello-strict" and created["status"] == "Active", created
    assert accepted["status"] in ("Pending", "Running") and accepted["executionId"], accepted


@needs_tools
def test_strict_mode_jwks_walkthrough(tmp_path: Path) -> None:
    [block] = shell_blocks("docs/auth.md", "### Walk-through: strict mode with a JWKS")
    out = _run_standalone(block, tmp_path)
    listed, refused = json_objects(out)
    assert listed["items"] == [], out
    assert refused["code"] == "forbidden" and out.rstrip().endswith(" 403"), out


@needs_tools
def test_subworkflows_walkthrough(server: int) -> None:
    blocks = shell_blocks("docs/semantics.md", "### Walk-through: a parent and two children")
    assert len(blocks) == 1
    out = run_blocks(blocks, server)
    execution_id = re.search(r"run ([0-9a-f-]{36})", out)
    assert execution_id, out
    run_id = execution_id.group(1)
    run = final_run(server, run_id)
    assert run["status"] == "Succeeded"
    assert run["actions"][-1]["outputs"] == {"echo": "#team-data is ready"}
    children, refused = json_objects(out)[-2:]
    by_node = {c["parentNodeId"]: c for c in children["items"]}
    assert {n: c["workflowId"] for n, c in by_node.items()} == {
        "channel": "create-channel",
        "welcome": "send-welcome",
    }
    for child in children["items"]:
        assert (child["depth"], child["parentExecutionId"], child["rootExecutionId"]) == (
            1,
            run_id,
            run_id,
        )
    welcome = final_run(server, by_node["welcome"]["id"])
    assert welcome["actions"][0]["outputs"] == {"echo": "Welcome to #team-data"}
    (problem,) = refused["details"]["problems"]
    assert (problem["code"], problem["chain"]) == ("subworkflow_recursion", ["loop", "loop"])


@needs_tools
def test_console_walkthrough(server: int) -> None:
    blocks = shell_blocks("docs/console.md", "## Walk-through: a run in the console")
    assert len(blocks) == 1
    out = run_blocks(blocks, server)
    address = re.search(r"open http://127\.0\.0\.1:\d+/runs/([0-9a-f-]{36})", out)
    assert address, out
    assert 'data-node="echo1"' in out and 'data-node="echo2"' in out
    assert final_run(server, address.group(1))["status"] == "Succeeded"
    with urllib.request.urlopen(f"http://127.0.0.1:{server}/runs/{address.group(1)}") as resp:
        page = resp.read().decode()
    assert "Hello from node 2" in page and 'class="gantt"' in page
