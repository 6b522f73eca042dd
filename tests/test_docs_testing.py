"""docs/testing.md is true: every Python example in it is a test module, run with pytest
(in a subprocess, ``-W error``) under the page's own pytest configuration, beside the
``hello`` and ``tick`` plugins that ``dataworkflows plugin new`` generates."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dataworkflows.cli.main import build_cli

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "testing.md"
SCAFFOLD_PYPROJECT = ROOT / "kernel/dataworkflows/cli/scaffold/common/pyproject.toml.tmpl"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), re.S | re.M)


def test_the_configuration_shown_is_the_one_plugin_new_writes() -> None:
    [toml] = blocks("toml")
    scaffold = SCAFFOLD_PYPROJECT.read_text()
    for line in toml.splitlines()[1:]:
        assert re.search(rf"^{re.escape(line)}(  #.*)?$", scaffold, re.M), line


def test_every_python_example_passes(tmp_path: Path, run_pytest_in: Any) -> None:
    examples = blocks("python")
    assert len(examples) == 4
    for name, flag in (("hello", "--action"), ("tick", "--trigger")):
        result = CliRunner().invoke(
            build_cli(), ["plugin", "new", name, flag, "--dir", str(tmp_path)]
        )
        assert result.exit_code == 0, result.output
    project = tmp_path / "docs-examples"
    (project / "tests").mkdir(parents=True)
    [toml] = blocks("toml")
    (project / "pyproject.toml").write_text(toml)
    tests = 0
    for index, code in enumerate(examples):
        (project / "tests" / f"test_example_{index}.py").write_text(code)
        tests += len(re.findall(r"^(?:async )?def test_", code, re.M))

    sources = [tmp_path / f"dataworkflows-{name}" / "src" for name in ("hello", "tick")]
    run = run_pytest_in(project, pythonpath=sources)
    assert run.returncode == 0, run.stdout + run.stderr
    backends = 2 if os.environ.get("DATAWORKFLOWS_TEST_POSTGRES_URL") else 1
    assert f"{tests * backends} passed" in run.stdout, run.stdout
