"""``dataworkflows plugin new``: the scaffolded plugin's own tests pass at once (pytest in
a subprocess, in the new folder), it is lint-clean, and its action runs in a workflow
through ``dataworkflows run``; bad input is one line, exit 1, and nothing written."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dataworkflows.cli.main import build_cli


def new_plugin(*args: str) -> Any:
    return CliRunner().invoke(build_cli(), ["plugin", "new", *args], catch_exceptions=False)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def passed(result: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"(\d+) passed", result.stdout)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize(
    ("flag", "name", "files"),
    [
        (
            "--action",
            "kit-hello",
            {"src/dataworkflows_kit_hello/action.py", "tests/test_dataworkflows_kit_hello.py"},
        ),
        (
            "--trigger",
            "kit_tick",
            {"src/dataworkflows_kit_tick/trigger.py", "tests/test_dataworkflows_kit_tick.py"},
        ),
    ],
)
def test_the_scaffold_passes_its_own_tests_and_lint(
    tmp_path: Path, run_pytest_in: Any, flag: str, name: str, files: set[str]
) -> None:
    result = new_plugin(name, flag, "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    project = tmp_path / f"dataworkflows-{name.replace('_', '-')}"
    package = "dataworkflows_" + name.replace("-", "_")
    written = set(files_under(project))
    assert written == {"pyproject.toml", "README.md", f"src/{package}/__init__.py", *files}
    pyproject = (project / "pyproject.toml").read_text()
    assert f'[project.entry-points.dataworkflows]\n{name} = "{package}"' in pyproject
    text = "".join((project / f).read_text() for f in written)
    assert "${" not in text and "PACKAGE" not in text  # every placeholder substituted

    tests = run_pytest_in(project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert passed(tests) >= 3 and " failed" not in tests.stdout

    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed here")
    ruff = [sys.executable, "-m", "ruff"]
    for check in (["check", "."], ["format", "--check", "."]):
        linted = subprocess.run([*ruff, *check], cwd=project, capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.fixture
def scaffolded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scaffolded action plugin importable in this process (its ``src`` on sys.path)."""
    assert new_plugin("kit-demo", "--dir", str(tmp_path)).exit_code == 0
    project = tmp_path / "dataworkflows-kit-demo"
    monkeypatch.syspath_prepend(str(project / "src"))
    yield project
    for module in [m for m in sys.modules if m.startswith("dataworkflows_kit_demo")]:
        del sys.modules[module]


def test_the_scaffolded_action_runs_in_a_workflow(
    scaffolded: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATAWORKFLOWS_PLUGIN_MODULES", "dataworkflows_kit_demo")
    definition = {
        "id": "kit-demo",
        "displayName": "Kit demo",
        "nodes": [
            {
                "id": "greet",
                "actionType": "kit-demo.greet",
                "parameters": {"name": "{{ trigger.name }}", "greeting": "hi"},
            }
        ],
    }
    path = tmp_path / "kit-demo.json"
    path.write_text(json.dumps(definition))
    result = cli("run", str(path), "--trigger", '{"name": "Ada"}')
    assert result.exit_code == 0, result.output
    assert "Succeeded" in result.output and '"greeting": "hi Ada"' in result.output

    listed = cli("plugins", "--json")
    [plugin] = [p for p in json.loads(listed.output) if p["name"] == "dataworkflows_kit_demo"]
    assert [a["type"] for a in plugin["actions"]] == ["kit-demo.greet"]

    # it declares the plugin-API versions it works with: the check finds nothing to say
    checked = cli("plugins", "--check")
    assert checked.exit_code == 0, checked.output
    assert "dataworkflows_kit_demo" in checked.output
    assert "declares no plugin-API requirement" not in checked.output
    assert "dataworkflows_actions" not in checked.output  # its declaration matches
    from dataworkflows_kit_demo import dataworkflows_actions

    assert dataworkflows_actions == {"kit-demo.greet": "Greet someone"}

    definition["nodes"][0]["parameters"] = {"greeting": "hi"}
    path.write_text(json.dumps(definition))
    refused = cli("validate", str(path))
    assert refused.exit_code == 1
    assert "$.nodes[0].parameters.name: this field is required" in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Hello"], "invalid plugin name 'Hello'"),
        (["1st"], "invalid plugin name '1st'"),
        (["a--b"], "invalid plugin name 'a--b'"),
        (["crm-"], "invalid plugin name 'crm-'"),
        (["acme crm"], "invalid plugin name 'acme crm'"),
        (["acme", "--action", "--trigger"], "--action and --trigger exclude each other"),
        (["taken"], "already exists"),
        (["acme", "--dir", "a-file"], "is not a folder"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataworkflows-taken").mkdir()
    (tmp_path / "dataworkflows-taken" / "keep.txt").write_text("mine")
    (tmp_path / "a-file").write_text("not a folder")
    before = files_under(tmp_path)
    result = new_plugin(*args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert result.output.count("\n") == 1  # one line
    assert files_under(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dataworkflows-taken"]
