"""The plugin-API version: plugins declare what they need, the kernel refuses the others,
and deprecated hooks warn."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dataworkflows
from dataworkflows import hookimpl, hookspecs
from dataworkflows.hookspecs import PLUGIN_API_VERSION, deprecated_hook, hookspec
from dataworkflows.plugins.api_version import accepts
from dataworkflows.plugins.manager import PluginError, load_plugins, new_plugin_manager

NEEDS_V2 = """
from dataworkflows import hookimpl

dataworkflows_api = ">=2,<3"


@hookimpl
def register_actions(register):
    raise AssertionError("a refused plugin is never called")
"""


def test_the_version_is_part_of_the_contract() -> None:
    assert dataworkflows.PLUGIN_API_VERSION == PLUGIN_API_VERSION == "1.2"


@pytest.mark.parametrize(
    ("requirement", "version", "expected"),
    [
        (">=1,<2", "1.0", True),
        (">=1,<2", "1.7", True),
        (">=1,<2", "2.0", False),
        (">=1.1", "1.0", False),
        (">1", "1.1", True),
        ("<=1.0", "1.0", True),
        ("==1.*", "1.3", True),
        ("==1.*", "2.0", False),
        ("!=1.0", "1.0", False),
        ("~=1.2", "1.9", True),
        ("~=1.2", "2.0", False),
        ("==1", "1.0", True),
        (" >= 1 , < 2 ", "1.0", True),
    ],
)
def test_requirements_are_pep440_specifiers_on_major_minor(
    requirement: str, version: str, expected: bool
) -> None:
    assert accepts(requirement, version) is expected


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("1.0", "is not a clause"),
        (">=1,,<2", "is not a clause"),
        (">=one", "is not a clause"),
        (">=1.0.0", "is not a clause"),
        ("", "non-empty string"),
        (2, "non-empty string"),
        (">=1.*", "goes with == or != only"),
        ("~=1", "needs MAJOR.MINOR"),
    ],
)
def test_an_invalid_requirement_says_why(requirement: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        accepts(requirement)


def test_every_bundled_plugin_declares_a_requirement_this_kernel_meets() -> None:
    plugins = load_plugins()
    for name in ("echo", "http", "webhook", "schedule", "metrics", "slack", "monday", "tracing"):
        module = plugins.pm.get_plugin(name)
        assert accepts(module.dataworkflows_api), name


def test_an_incompatible_distribution_is_refused_naming_it_and_both_versions(
    install_distribution: Any,
) -> None:
    install_distribution("dataworkflows-future", {"dw_future": NEEDS_V2}, "3.2", future="dw_future")
    with pytest.raises(PluginError) as refused:
        load_plugins()
    message = str(refused.value)
    assert "'future' (dataworkflows-future 3.2)" in message
    assert "needs plugin API >=2,<3" in message
    assert f"provides plugin API {PLUGIN_API_VERSION}" in message
    # the allow-list leaves it out, and then the rest loads
    assert load_plugins(allow="dataworkflows-echo").action("core.echo") is not None


def test_an_invalid_declaration_is_refused(install_distribution: Any) -> None:
    source = "dataworkflows_api = 'version one'\n"
    install_distribution("dataworkflows-vague", {"dw_vague": source}, vague="dw_vague")
    with pytest.raises(
        PluginError, match=r"'vague' \(dataworkflows-vague 1.0\) declares an invalid"
    ):
        load_plugins()


def test_a_directly_registered_plugin_is_checked_too() -> None:
    class Future:
        __name__ = "future-object"
        dataworkflows_api = ">=2"

    with pytest.raises(PluginError, match="'future-object' needs plugin API >=2"):
        load_plugins(entrypoints=False, extra=[Future()])


def test_the_cli_refuses_to_start_with_an_incompatible_plugin(
    install_distribution: Any, cli: Any, tmp_path: Any, simple_echo: dict[str, Any]
) -> None:
    install_distribution("dataworkflows-future", {"dw_future": NEEDS_V2}, future="dw_future")
    listed = cli("plugins")
    assert listed.exit_code == 1
    assert (
        "dataworkflows-future 1.0" in listed.output and "needs plugin API >=2,<3" in listed.output
    )
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(simple_echo))
    validated = cli("validate", str(workflow))  # builds a kernel
    assert validated.exit_code == 1
    assert "dataworkflows-future" in validated.output
    assert f"provides plugin API {PLUGIN_API_VERSION}" in validated.output


async def test_the_kernel_refuses_to_start_with_an_incompatible_plugin(
    install_distribution: Any, kernel_factory: Any
) -> None:
    install_distribution("dataworkflows-future", {"dw_future": NEEDS_V2}, future="dw_future")
    with pytest.raises(PluginError, match="dataworkflows-future"):
        await kernel_factory()


class RetiringSpecs:
    """A contract with a deprecated hook, as hookspecs.py would declare one."""

    @hookspec(
        warn_on_impl=deprecated_hook("on_old_thing", since="1.1", instead="implement on_run_event")
    )
    def on_old_thing(self, thing: Any) -> None:
        """A hook on its way out."""


class OldPlugin:
    @hookimpl
    def on_old_thing(self, thing: Any) -> None:
        self.seen = thing


def test_a_deprecated_hook_warns_its_implementers_and_still_works() -> None:
    pm = new_plugin_manager(hookspecs, RetiringSpecs)
    plugin = OldPlugin()
    with pytest.warns(DeprecationWarning) as warned:
        pm.register(plugin)
    (warning,) = warned
    assert str(warning.message) == (
        "the hook 'on_old_thing' is deprecated since plugin API 1.1 and will be removed in "
        "plugin API 2.0: implement on_run_event"
    )
    assert warning.filename == __file__  # pointing at the implementation
    pm.hook.on_old_thing(thing="x")
    assert plugin.seen == "x"


def test_a_plugin_not_implementing_a_deprecated_hook_gets_no_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    pm = new_plugin_manager(hookspecs, RetiringSpecs)

    class Modern:
        @hookimpl
        def on_run_event(self, event: Any) -> None:
            pass

    pm.register(Modern())
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_a_hook_with_arguments_its_spec_lacks_is_refused_naming_the_distribution(
    install_distribution: Any,
) -> None:
    source = """
    from dataworkflows import hookimpl

    @hookimpl
    def on_run_event(event, colour):
        pass
    """
    install_distribution("dataworkflows-odd", {"dw_odd": source}, odd="dw_odd")
    with pytest.raises(PluginError, match=r"plugin 'odd' \(dataworkflows-odd 1.0\): .*colour"):
        load_plugins()
