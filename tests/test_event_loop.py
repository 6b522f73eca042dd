"""DATAWORKFLOWS_EVENT_LOOP: uvloop by default where installed, asyncio on request."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from dataworkflows.cli.event_loop import loop_factory, loop_name
from dataworkflows.cli.main import build_cli
from dataworkflows.settings import Settings, SettingsError


def _name_of(settings: Settings) -> str:
    loop = loop_factory(settings)()
    try:
        return loop_name(loop)
    finally:
        loop.close()


def test_auto_takes_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")  # a dependency on Linux and macOS, absent on Windows
    assert _name_of(Settings()) == "uvloop"
    assert _name_of(Settings(event_loop="uvloop")) == "uvloop"


def test_asyncio_is_the_standard_loop() -> None:
    loop = loop_factory(Settings(event_loop="asyncio"))()
    try:
        assert isinstance(loop, asyncio.BaseEventLoop)  # uvloop's Loop is not one
        assert loop_name(loop) == "asyncio"
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert _name_of(Settings()) == "asyncio"
    with pytest.raises(SettingsError, match="uvloop is not installed"):
        loop_factory(Settings(event_loop="uvloop"))


def test_unknown_event_loop_is_refused() -> None:
    with pytest.raises(SettingsError, match="DATAWORKFLOWS_EVENT_LOOP='trio'"):
        Settings(event_loop="trio")


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_cli_refuses_an_unknown_event_loop(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("DATAWORKFLOWS_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    monkeypatch.setenv("DATAWORKFLOWS_EVENT_LOOP", "trio")
    result = CliRunner().invoke(build_cli(), [command])
    assert result.exit_code != 0
    assert "DATAWORKFLOWS_EVENT_LOOP='trio': expected one of auto, uvloop, asyncio" in (
        result.output
    )
    assert not (tmp_path / "x.db").exists()  # nothing was started or created
