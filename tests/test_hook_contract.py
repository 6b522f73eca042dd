"""The hook contract's documentation and coverage: ``docs/hooks.md`` is what
``hookspecs.py`` says, and a run of the whole suite that never calls a hook fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dataworkflows import hookimpl, hookspecs
from dataworkflows.hookspecs import deprecated_hook, hookspec
from dataworkflows.plugins.hookdoc import hookspec_functions, render, signature
from dataworkflows.plugins.manager import load_plugins
from dataworkflows.testing import HookCallRecorder

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "hooks.md"


def test_docs_hooks_md_is_generated_from_the_hookspecs() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/hooks.md is stale: run "
        "`python3 -m uv run --all-packages python -m dataworkflows.plugins.hookdoc > docs/hooks.md`"
    )


def test_the_reference_has_every_hook_with_its_signature_and_sections() -> None:
    page = render()
    for name, fn in hookspec_functions().items():
        assert f"\n## {name}\n" in page
        assert signature(fn) in page
    assert "def resolve_secret(name: str, tenant_id: str) -> str | None" in page
    assert "> *first result*" in page  # resolve_secret's
    assert "- `tenant_id`: the tenant of the run asking" in page
    assert page.count("**Since:** ") == len(hookspec_functions())
    assert "README.md#writing-a-plugin" in page


def test_the_readme_links_the_reference() -> None:
    assert "(docs/hooks.md)" in (ROOT / "README.md").read_text()


class Specs:
    """A spec module of two hooks, one deprecated."""

    @hookspec
    def on_thing(self, thing: int) -> None:
        """Observe a thing.

        Called when: a thing happens.
        Args: thing -- the :class:`~some.where.Thing`, as ``int``.
            other -- not really an argument.
        Returns: nothing.
        Since: 1.0.
        """

    @hookspec(warn_on_impl=deprecated_hook("on_old", since="1.2", instead="use on_thing"))
    def on_old(self) -> None:
        """Going away."""


def test_the_reference_renders_roles_arguments_and_deprecations() -> None:
    page = render(sys.modules[__name__].__dict__["Specs"])  # type: ignore[arg-type]
    assert "def on_thing(self, thing: int) -> None" in page
    assert "**Args:**\n- `thing`: the `Thing`, as `int`.\n- `other`: not really an argument." in (
        page
    )
    assert "> **deprecated**: the hook 'on_old' is deprecated since plugin API 1.2" in page


# -- every hook is called: the recorder and the session check -------------------------------


class Everything:
    """Implements two hooks, to be seen by the recorder."""

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        pass

    @hookimpl
    def resolve_secret(self, name: str, tenant_id: str) -> str | None:
        return None


def test_the_recorder_sees_plugin_implementations_only() -> None:
    recorder = HookCallRecorder()
    stop = recorder.start()
    try:
        plugins = load_plugins(entrypoints=False, extra=[Everything()])
        kernel_only = load_plugins(entrypoints=False)
    finally:
        stop()
    kernel_only.hook.resolve_secret(name="x", tenant_id="t")  # only the built-in env provider
    kernel_only.hook.on_run_event(event=None)  # no implementation at all
    assert recorder.called == set()
    plugins.hook.on_run_event(event=None)
    assert recorder.called == {"on_run_event"}
    assert recorder.missing() == [n for n in hookspec_functions() if n != "on_run_event"]
    plugins.hook.resolve_secret(name="x", tenant_id="t")
    assert "resolve_secret" not in recorder.missing()
    # a manager built after stop() is not watched
    late = load_plugins(entrypoints=False, extra=[Everything()])
    late.hook.prepare_jinja2_environment(env=None)
    assert "prepare_jinja2_environment" in recorder.missing()


def test_a_fake_record_of_every_hook_misses_nothing() -> None:
    recorder = HookCallRecorder()
    recorder.called = set(hookspec_functions())
    assert recorder.missing() == []
    recorder.called.discard("register_routes")
    assert recorder.missing() == ["register_routes"]


INNER_TEST = """
from dataworkflows import hookimpl
from dataworkflows.plugins.manager import load_plugins


class Observer:
    @hookimpl
    def on_run_event(self, event):
        pass


def test_calls_one_hook():
    load_plugins(entrypoints=False, extra=[Observer()]).hook.on_run_event(event=None)


def test_other():
    pass
"""


def _inner_session(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A separate pytest session over a suite of two tests, with the check switched on."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\ntestpaths = suite\ndataworkflows_every_hook_called = true\n"
    )
    (tmp_path / "suite").mkdir(exist_ok=True)
    (tmp_path / "suite" / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_whole_suite_fails_when_a_hook_was_never_called(tmp_path: Path) -> None:
    whole = _inner_session(tmp_path)
    assert whole.returncode == 1, whole.stdout
    assert "2 passed" in whole.stdout
    missing = [n for n in hookspec_functions() if n != "on_run_event"]
    assert "no test called these hooks with a plugin's implementation " in whole.stdout
    assert ", ".join(missing) in whole.stdout


@pytest.mark.parametrize(
    "selection",
    [
        ["-k", "other"],
        ["suite/test_inner.py::test_other"],
        ["--deselect", "suite/test_inner.py::test_calls_one_hook"],
    ],
)
def test_a_selection_of_tests_is_not_checked(tmp_path: Path, selection: list[str]) -> None:
    part = _inner_session(tmp_path, *selection)
    assert part.returncode == 0, part.stdout
    assert "no test called these hooks" not in part.stdout


def test_the_kernel_suite_has_the_check_switched_on(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.getini("dataworkflows_every_hook_called") is True
    assert hookspecs.PLUGIN_API_VERSION  # the contract the recorder compares with
