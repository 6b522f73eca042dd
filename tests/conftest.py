"""Shared helpers for the kernel's tests. The fixtures come from ``dataworkflows.testing``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def _load(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text())


@pytest.fixture
def load_fixture() -> Any:
    """``load_fixture("workflows/x.json")``: a fixture file from ``fixtures/``, parsed."""
    return _load


@pytest.fixture
def simple_echo() -> dict[str, Any]:
    return _load("workflows/simple-echo-workflow.json")


@pytest.fixture
def execute_request() -> dict[str, Any]:
    return _load("requests/execute-request.json")


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cli("runs", "list")``: the ``dataworkflows`` CLI, in process, on this test's
    database; returns click's result (``exit_code``, ``output``)."""
    from click.testing import CliRunner

    from dataworkflows.cli import build_cli

    monkeypatch.setenv("DATAWORKFLOWS_DATABASE_URL", database_url)
    monkeypatch.delenv("DATAWORKFLOWS_LOAD_PLUGINS", raising=False)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(build_cli(), list(args), catch_exceptions=False)

    return invoke
