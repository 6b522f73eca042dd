"""``dataworkflows plugins --check``: every installed plugin loaded on its own and checked.

Each plugin gets a plugin manager of its own, so one that fails to import, implements a
hook with a wrong signature or registers a broken type does not hide the others. Checked:
the declared plugin-API requirement (``dataworkflows_api``), the hook implementations
(pluggy's validation of names and arguments), the action and trigger types (type names,
classes, uniqueness across plugins) and their published schemas (they build, and document
themselves: a title, a description, a description on every property).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from dataworkflows.plugins.api_version import DECLARATION, declared_requirement, incompatibility
from dataworkflows.plugins.listing import declaration_problems
from dataworkflows.plugins.manager import (
    ENTRY_POINT_GROUP,
    REGISTRIES,
    PluginError,
    PluginInfo,
    PluginSet,
    new_plugin_manager,
    one_line,
    origin,
)

#: sub-schemas that hold further schemas (pydantic puts nested models in $defs)
_NESTED = ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "prefixItems", "not")


@dataclass
class PluginReport:
    """What the check found about one plugin."""

    info: PluginInfo
    api: str | None = None
    actions: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        """The plugin as messages name it: entry point, distribution and version."""
        return origin(self.info)


def undocumented(schema: dict[str, Any], model: type) -> list[str]:
    """What a workflow author would miss in ``schema`` (the published schema of ``model``):
    a real title, a description, and a description on every property, nested ones too."""
    problems: list[str] = []
    title = schema.get("title")
    if not title or title in ("Params", "Config", model.__name__):
        problems.append(f"title {title!r} is a class name, not a title")
    if not schema.get("description"):
        problems.append("the schema has no description")
    _check_properties(schema, "", problems)
    for name, definition in schema.get("$defs", {}).items():
        if not definition.get("description"):
            problems.append(f"$defs/{name} has no description")
        _check_properties(definition, f"$defs/{name}/", problems)
    return problems


def _check_properties(schema: Any, path: str, problems: list[str]) -> None:
    if not isinstance(schema, dict):
        return
    for name, prop in schema.get("properties", {}).items():
        if not (isinstance(prop, dict) and prop.get("description")):
            problems.append(f"property {path}{name} has no description")
        _check_properties(prop, f"{path}{name}/", problems)
    for key in _NESTED:
        children = schema.get(key)
        for child in children if isinstance(children, list) else [children]:
            _check_properties(child, path, problems)


def check_plugin(plugin: Any, info: PluginInfo, *, specs: Iterable[Any] = ()) -> PluginReport:
    """Check one loaded plugin object in a plugin manager of its own (``specs``: hookspec
    modules instead of the kernel's, for tests of the check itself)."""
    report = PluginReport(info, api=_as_text(declared_requirement(plugin)))
    if report.api is None:
        report.warnings.append(
            f'declares no plugin-API requirement ({DECLARATION} = ">=1,<2" in its entry-point '
            "module): it is loaded by every kernel, also one it does not work with"
        )
    problem = incompatibility(plugin, report.origin)
    if problem is not None:
        report.problems.append(problem)
        return report
    pm = new_plugin_manager(*specs)
    for name in dir(plugin):  # what pm.check_pending would refuse, every name of it
        opts = pm.parse_hookimpl_opts(plugin, name)
        if opts is not None and not opts.get("optionalhook") and not hasattr(pm.hook, name):
            report.problems.append(f"implements {name!r}, which is no hook (a misspelt name?)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            report.problems.append(f"invalid hook implementation: {one_line(exc)}")
            return report
        except Exception as exc:  # any failure of a plugin is a finding
            report.problems.append(f"cannot be registered: {type(exc).__name__}: {exc}")
            return report
    report.warnings += [
        str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
    ]
    plugin_set = PluginSet(pm, plugins={info.name: info})
    for hook_name, register_one in REGISTRIES.items():
        hook = getattr(pm.hook, hook_name, None)
        if hook is None:  # a spec module without it (tests of the check)
            continue
        try:
            hook(register=_collecting(plugin_set, register_one, info, report))
        except Exception as exc:
            report.problems.append(f"{hook_name} failed: {type(exc).__name__}: {exc}")
    report.problems += declaration_problems(
        plugin,
        {t: r.cls.title for t, r in plugin_set.actions.items()},
        {t: r.cls.title for t, r in plugin_set.triggers.items()},
    )
    for type_name, registered in plugin_set.actions.items():
        report.actions.append(type_name)
        _check_schema(
            report, f"action {type_name}", registered.cls.params_schema, registered.cls.Params
        )
    for type_name, registered in plugin_set.triggers.items():
        report.triggers.append(type_name)
        _check_schema(
            report, f"trigger {type_name}", registered.cls.config_schema, registered.cls.Config
        )
    return report


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _collecting(
    plugin_set: PluginSet,
    register_one: Callable[[PluginSet, Any, PluginInfo], None],
    info: PluginInfo,
    report: PluginReport,
) -> Callable[[Any], None]:
    """A ``register`` callable that checks each class and records a problem instead of
    stopping at the first one."""

    def register(cls: Any) -> None:
        try:
            register_one(plugin_set, cls, info)
        except Exception as exc:  # a broken type or schema is a finding
            problem = str(exc) if isinstance(exc, PluginError) else f"{cls!r}: {exc}"
            report.problems.append(problem)

    return register


def _check_schema(report: PluginReport, what: str, build: Callable[[], Any], model: type) -> None:
    try:
        schema = build()
    except Exception as exc:
        report.problems.append(f"{what}: its {model.__name__} model has no JSON schema: {exc}")
        return
    report.problems += [f"{what}: {problem}" for problem in undocumented(schema, model)]


def check_installed(*, modules: str | None = None, extra: Iterable[Any] = ()) -> list[PluginReport]:
    """Check every plugin of the ``dataworkflows`` entry-point group (whatever
    ``DATAWORKFLOWS_LOAD_PLUGINS`` says), every module of ``modules``
    (``DATAWORKFLOWS_PLUGIN_MODULES``) and every object of ``extra``, each on its own; then
    that no two of them register the same action or trigger type."""
    reports: list[PluginReport] = []
    for ep in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
    ):
        dist = ep.dist
        info = PluginInfo(
            ep.name,
            dist.metadata["Name"] if dist is not None else None,
            dist.version if dist is not None else None,
        )
        reports.append(_load_and_check(ep.load, info))
    for name in [m.strip() for m in (modules or "").split(",") if m.strip()]:
        reports.append(
            _load_and_check(
                lambda name=name: importlib.import_module(name), PluginInfo(name, None, None)
            )
        )
    for index, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        reports.append(check_plugin(plugin, PluginInfo(name, None, None)))
    _check_unique(reports)
    return reports


def _load_and_check(load: Callable[[], Any], info: PluginInfo) -> PluginReport:
    try:
        plugin = load()
    except Exception as exc:  # a plugin that cannot be imported is a finding
        report = PluginReport(info)
        report.problems.append(f"cannot be imported: {type(exc).__name__}: {exc}")
        return report
    return check_plugin(plugin, info)


def _check_unique(reports: list[PluginReport]) -> None:
    for kind in ("actions", "triggers"):
        owners: dict[str, list[PluginReport]] = {}
        for report in reports:
            for type_name in getattr(report, kind):
                owners.setdefault(type_name, []).append(report)
        for type_name, owning in owners.items():
            for report in owning if len(owning) > 1 else ():
                others = ", ".join(o.origin for o in owning if o is not report)
                report.problems.append(
                    f"{kind[:-1]} type {type_name!r} is registered by {others} too: "
                    "the kernel refuses to start with both installed"
                )
