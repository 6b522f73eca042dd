"""Hook coverage across a test session: which hooks of the plugin contract a plugin's
implementation answered (pluggy's hook-call monitoring), and a whole-suite run that fails
when one never was. Part of the ``dataworkflows.testing`` pytest plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

EVERY_HOOK_INI = "dataworkflows_every_hook_called"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        EVERY_HOOK_INI,
        type="bool",
        default=False,
        help="fail a run of the whole suite that never called some hook of the plugin contract",
    )


def start_recording(config: pytest.Config) -> None:
    """Record hook calls for the session when the configuration asks for it."""
    if config.getini(EVERY_HOOK_INI):
        recorder = HookCallRecorder()
        config.stash[_RECORDER] = recorder
        config.add_cleanup(recorder.start())


class HookCallRecorder:
    """Records the names of the hooks called with at least one plugin implementation (not
    only the kernel's built-in ones, nor only wrappers), in every plugin manager built
    while it is started."""

    def __init__(self) -> None:
        self.called: set[str] = set()

    def start(self) -> Callable[[], None]:
        """Watch the plugin managers built from now on; returns the function that stops."""
        from dataworkflows.plugins.manager import monitor_hook_calls

        return monitor_hook_calls(self.before, self.after)

    def before(self, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        """pluggy's ``before`` monitor: note ``hook_name`` if a plugin implements it."""
        from dataworkflows.plugins.builtin import DEFAULT_PLUGINS

        if any(
            not (impl.wrapper or impl.hookwrapper) and impl.plugin not in DEFAULT_PLUGINS
            for impl in hook_impls
        ):
            self.called.add(hook_name)

    def after(self, *args: Any) -> None:
        """pluggy's ``after`` monitor: nothing to do."""

    def missing(self) -> list[str]:
        """The hookspecs no recorded call reached, in the contract's order."""
        from dataworkflows.plugins.hookdoc import hookspec_functions

        return [name for name in hookspec_functions() if name not in self.called]


_RECORDER = pytest.StashKey[HookCallRecorder]()
_DESELECTED = pytest.StashKey[bool]()


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[_DESELECTED] = True


def ran_whole_suite(session: pytest.Session) -> bool:
    """Whether ``session`` ran every test of the configured ``testpaths`` (or of the root
    directory): nothing deselected, no narrower path or node id, not stopped early."""
    config = session.config
    if config.stash.get(_DESELECTED, False) or session.shouldstop or session.shouldfail:
        return False
    if any("::" in arg for arg in config.args):
        return False
    given = [(config.invocation_params.dir / arg).resolve() for arg in config.args]
    wanted = [config.rootpath / p for p in config.getini("testpaths")] or [config.rootpath]
    return all(any(w == g or g in w.parents for g in given) for w in wanted)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    recorder = session.config.stash.get(_RECORDER, None)
    if recorder is None or exitstatus not in (0, 1) or not ran_whole_suite(session):
        return
    missing = recorder.missing()
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (
            "no test called these hooks with a plugin's implementation "
            f"({EVERY_HOOK_INI}): {', '.join(missing)}"
        )
        if reporter is not None:
            reporter.write_sep("=", message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
