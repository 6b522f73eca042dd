"""The kernel wheel on its own, in a fresh virtual environment (slow: builds and installs)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs
    )  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def kernel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    uv = shutil.which("uv")
    if uv:
        built = _run(uv, "build", "--wheel", "--out-dir", tmp / "dist", ROOT, cwd=ROOT)
    else:
        built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("dataworkflows-*.whl")
    venv = tmp / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    installed = _run(venv / "bin/python", "-m", "pip", "install", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kernel_wheel_alone_migrates_serves_and_knows_no_actions(
    kernel_venv: Path, tmp_path: Path
) -> None:
    bin_ = kernel_venv / "bin"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATAWORKFLOWS_", "VIRTUAL_ENV"))
    }
    env["DATAWORKFLOWS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dw.db'}"
    # migrations are found inside the installed package, not the checkout
    result = _run(bin_ / "dataworkflows", "db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    located = _run(
        bin_ / "python",
        "-c",
        "from dataworkflows.db.migrate import migrations_dir; print(migrations_dir())",
        env=env,
        cwd=tmp_path,
    )
    assert str(kernel_venv) in located.stdout

    result = _run(bin_ / "dataworkflows", "plugins", env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert "No plugins installed" in result.stdout

    port = _free_port()
    proc = subprocess.Popen(
        [bin_ / "dataworkflows", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)  # waiting for the port to open
        definition = (ROOT / "fixtures/workflows/simple-echo-workflow.json").read_bytes()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/workflows?autoActivate=true",
            data=definition,
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 422
        body = json.loads(err.value.read())
        assert body["code"] == "invalid_definition"
        assert "unknown action type 'core.echo'" in body["details"]["problems"][0]["message"]
        # the web console's templates and static files are package data of the wheel
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/plugins", timeout=10) as resp:
            assert "No action type is installed" in resp.read().decode()
        static = f"http://127.0.0.1:{port}/console-static/vendor/swagger-ui/LICENSE"
        with urllib.request.urlopen(static, timeout=10) as resp:
            assert b"Apache License" in resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_wheel_ships_the_plugin_templates(kernel_venv: Path, tmp_path: Path) -> None:
    """``plugin new`` works from the installed wheel: its templates are package data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    result = _run(
        kernel_venv / "bin/dataworkflows", "plugin", "new", "wheel-kit", "--dir", tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dataworkflows-wheel-kit/src/dataworkflows_wheel_kit/action.py").is_file()
