"""Finding, loading and indexing plugins.

Each :class:`~dataworkflows.kernel.Kernel` owns its own :class:`PluginSet`: nothing is
loaded at import time and nothing is global, so tests can build kernels with exactly the
plugins they want.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy

from dataworkflows import hookspecs
from dataworkflows.plugins.api_version import incompatibility
from dataworkflows.plugins.builtin import DEFAULT_PLUGINS

if TYPE_CHECKING:  # imported when something registers (pydantic): not for the CLI's commands
    from dataworkflows.actions import Action
    from dataworkflows.triggers import TriggerType

log = logging.getLogger(__name__)

T = TypeVar("T")

ENTRY_POINT_GROUP = "dataworkflows"
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")


class PluginError(RuntimeError):
    """A plugin could not be loaded or registers something invalid."""


#: ``(before, after)`` pairs installed on every plugin manager built from now on
_HOOKCALL_MONITORS: list[tuple[Callable[..., None], Callable[..., None]]] = []


def monitor_hook_calls(
    before: Callable[..., None], after: Callable[..., None]
) -> Callable[[], None]:
    """Watch the hook calls of every plugin manager built from now on (pluggy's
    ``PluginManager.add_hookcall_monitoring``: ``before(hook_name, hook_impls, kwargs)``,
    ``after(outcome, hook_name, hook_impls, kwargs)``). ``dataworkflows.testing`` records
    with it which hooks a test session called. Returns a function that stops watching
    managers built afterwards."""
    pair = (before, after)
    _HOOKCALL_MONITORS.append(pair)
    return lambda: _HOOKCALL_MONITORS.remove(pair)


def new_plugin_manager(*specs: Any) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs of ``specs`` (default: :mod:`dataworkflows.hookspecs`)
    and every :func:`monitor_hook_calls` monitor; no plugin registered."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    for spec in specs or (hookspecs,):
        pm.add_hookspecs(spec)
    for before, after in _HOOKCALL_MONITORS:
        pm.add_hookcall_monitoring(before, after)
    return pm


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin and where it came from."""

    name: str
    distribution: str | None
    version: str | None
    is_default: bool = False


@dataclass(frozen=True)
class Registered(Generic[T]):
    """An action or trigger class with the plugin that registered it."""

    cls: T
    plugin: PluginInfo


@dataclass
class PluginSet:
    """A plugin manager plus the registries built from it."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    actions: dict[str, Registered[type[Action]]] = field(default_factory=dict)
    triggers: dict[str, Registered[type[TriggerType]]] = field(default_factory=dict)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def action(self, type_name: str) -> type[Action] | None:
        entry = self.actions.get(type_name)
        return entry.cls if entry else None

    def describe(
        self, *, include_defaults: bool = False, schemas: bool = True
    ) -> list[dict[str, Any]]:
        """What ``dataworkflows plugins`` and ``GET /api/v1/plugins`` show (``schemas``:
        with each type's JSON schema; the CLI's table does without)."""
        out = []
        for info in sorted(self.plugins.values(), key=lambda p: p.name):
            if info.is_default and not include_defaults:
                continue
            out.append(
                {
                    "name": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "actions": [
                        {
                            "type": t,
                            "title": r.cls.title,
                            **({"parametersSchema": r.cls.params_schema()} if schemas else {}),
                        }
                        for t, r in sorted(self.actions.items())
                        if r.plugin.name == info.name
                    ],
                    "triggers": [
                        {
                            "type": t,
                            "title": r.cls.title,
                            **({"configSchema": r.cls.config_schema()} if schemas else {}),
                        }
                        for t, r in sorted(self.triggers.items())
                        if r.plugin.name == info.name
                    ],
                }
            )
        return out


def load_plugins(
    *,
    entrypoints: bool = True,
    allow: str | None = None,
    extra: Iterable[Any] = (),
    modules: str | None = None,
    trace: bool = False,
    registries: bool = True,
) -> PluginSet:
    """Build a :class:`PluginSet`.

    Args:
        entrypoints: load installed distributions from the ``dataworkflows`` group.
        allow: ``DATAWORKFLOWS_LOAD_PLUGINS``: None loads every installed plugin; a
            comma-separated list of distribution (or entry-point) names loads only those;
            ``""`` loads none. A listed name that is not installed is an error.
        extra: plugin objects/modules registered directly (tests, embedding).
        modules: ``DATAWORKFLOWS_PLUGIN_MODULES``: comma-separated module names to import
            and register as plugins.
        trace: print every hook call (``DATAWORKFLOWS_TRACE_PLUGINS``).
        registries: call ``register_actions`` / ``register_triggers`` and check what they
            register (False: the CLI only wants ``register_commands``; no action or
            trigger class is imported or its schema built).
    """
    pm = new_plugin_manager()
    plugin_set = PluginSet(pm)

    for module in DEFAULT_PLUGINS:
        pm.register(module, name=module.__name__)
        plugin_set.plugins[module.__name__] = PluginInfo(
            module.__name__, "dataworkflows", _version("dataworkflows"), is_default=True
        )

    if entrypoints:
        _load_entrypoints(plugin_set, allow)

    for module_name in [m.strip() for m in (modules or "").split(",") if m.strip()]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin module {module_name!r}: {exc}") from exc
        if not pm.is_registered(module):
            register_plugin(plugin_set, module, PluginInfo(module_name, None, None))

    for index, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        if pm.is_registered(plugin):
            continue
        register_plugin(plugin_set, plugin, PluginInfo(name, None, None))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc

    if trace:
        pm.trace.root.setwriter(lambda text: sys.stderr.write(text))
        pm.enable_tracing()

    if registries:
        _build_registries(plugin_set)
    return plugin_set


def _load_entrypoints(plugin_set: PluginSet, allow: str | None) -> None:
    wanted: set[str] | None = None
    if allow is not None:
        wanted = {name.strip() for name in allow.split(",") if name.strip()}
    found: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else None
        if wanted is not None and not ({ep.name, dist_name} & wanted):
            continue
        found.update({ep.name, dist_name or ""})
        if ep.name in plugin_set.plugins:
            other = plugin_set.plugins[ep.name].distribution
            raise PluginError(
                f"two plugins use the entry-point name {ep.name!r}: {other} and {dist_name}"
            )
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"cannot load plugin {ep.name!r} ({dist_name}): {exc}") from exc
        version = dist.version if dist is not None else None
        register_plugin(plugin_set, plugin, PluginInfo(ep.name, dist_name, version))
    if wanted:
        missing = sorted(wanted - found)
        if missing:
            raise PluginError(
                "DATAWORKFLOWS_LOAD_PLUGINS names plugins that are not installed: "
                + ", ".join(missing)
            )


def origin(info: PluginInfo) -> str:
    """How messages name a plugin: ``'echo' (dataworkflows-echo 0.1.0)``."""
    if info.distribution is None:
        return repr(info.name)
    return f"{info.name!r} ({info.distribution} {info.version or ''})".replace(" )", ")")


def register_plugin(plugin_set: PluginSet, plugin: Any, info: PluginInfo) -> None:
    """Register ``plugin`` under ``info.name`` once its declared plugin-API requirement
    (``dataworkflows_api``) accepts this kernel's; otherwise, or if a hook implementation
    has arguments its hook does not (pluggy's validation), raise :class:`PluginError`."""
    problem = incompatibility(plugin, origin(info))
    if problem is not None:
        raise PluginError(problem)
    try:
        plugin_set.pm.register(plugin, name=info.name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {origin(info)}: {one_line(exc)}") from exc
    plugin_set.plugins[info.name] = info


def one_line(exc: BaseException) -> str:
    """pluggy's multi-line validation messages on one line."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _build_registries(plugin_set: PluginSet) -> None:
    for hook_name, register_one in REGISTRIES.items():
        _call_register_hook(plugin_set, hook_name, register_one)


def _call_register_hook(plugin_set: PluginSet, name: str, register_one: Any) -> None:
    """Call the ``name`` hook through pluggy, once per plugin that implements it (in the
    order they were registered), with a ``register`` callable that knows that plugin.

    Each call is ``pm.subset_hook_caller(name, others)``: pluggy's own hook caller without
    the other plugins' implementations. So hook wrappers (``@hookimpl(wrapper=True)``) and
    tracing (``DATAWORKFLOWS_TRACE_PLUGINS``) see every call, and every registration is
    attributed to the plugin (and distribution) it comes from.
    """
    pm = plugin_set.pm
    impls = [
        impl
        for impl in getattr(pm.hook, name).get_hookimpls()
        if not (impl.wrapper or impl.hookwrapper)
    ]
    for impl in impls:
        info = plugin_set.plugins[impl.plugin_name]
        others = [other.plugin for other in impls if other is not impl]
        pm.subset_hook_caller(name, remove_plugins=others)(
            register=lambda cls, info=info: register_one(plugin_set, cls, info)
        )


def _check_type_name(kind: str, cls: type, info: PluginInfo) -> str:
    type_name = getattr(cls, "type", None)
    if not isinstance(type_name, str) or not TYPE_NAME.match(type_name):
        raise PluginError(
            f"{kind} {cls.__qualname__} from {info.distribution or info.name} has an invalid "
            f"type name {type_name!r} (expected lowercase dotted words like 'core.echo')"
        )
    return type_name


def _register_action(plugin_set: PluginSet, cls: type[Action], info: PluginInfo) -> None:
    from dataworkflows.actions import Action

    if not (isinstance(cls, type) and issubclass(cls, Action)):
        raise PluginError(f"{info.name} registered {cls!r}, which is not an Action subclass")
    type_name = _check_type_name("action", cls, info)
    if type_name in plugin_set.actions:
        other = plugin_set.actions[type_name].plugin
        raise PluginError(
            f"action type {type_name!r} is registered twice: by "
            f"{other.distribution or other.name} and by {info.distribution or info.name}"
        )
    cls.params_schema()  # a broken Params model fails at start-up, not at first use
    plugin_set.actions[type_name] = Registered(cls, info)


def _register_trigger(plugin_set: PluginSet, cls: type[TriggerType], info: PluginInfo) -> None:
    from dataworkflows.triggers import TriggerType

    if not (isinstance(cls, type) and issubclass(cls, TriggerType)):
        raise PluginError(f"{info.name} registered {cls!r}, which is not a TriggerType subclass")
    type_name = _check_type_name("trigger", cls, info)
    if type_name in plugin_set.triggers:
        other = plugin_set.triggers[type_name].plugin
        raise PluginError(
            f"trigger type {type_name!r} is registered twice: by "
            f"{other.distribution or other.name} and by {info.distribution or info.name}"
        )
    cls.config_schema()
    plugin_set.triggers[type_name] = Registered(cls, info)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


#: the registration hooks and the function that checks and indexes what each registers
REGISTRIES: dict[str, Callable[[PluginSet, Any, PluginInfo], None]] = {
    "register_actions": _register_action,
    "register_triggers": _register_trigger,
}
