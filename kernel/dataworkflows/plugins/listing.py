"""``dataworkflows plugins`` without importing the plugins' implementations.

A plugin may declare, in its (cheap) entry-point module, the types it registers and their
titles::

    dataworkflows_actions = {"hello.say": "Greet someone"}
    dataworkflows_triggers = {}

When every plugin declares them, the plugin table is built from these declarations: no
action or trigger class is imported, no pydantic model is built. A plugin that declares
nothing (or something malformed) makes the listing load everything, as before.
``dataworkflows plugins --check`` compares the declaration with what the plugin really
registers (:func:`declaration_problems`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

ACTIONS = "dataworkflows_actions"
TRIGGERS = "dataworkflows_triggers"


def _declared(plugin: Any, name: str) -> dict[str, str] | None:
    value = inspect.getattr_static(plugin, name, None)
    if not isinstance(value, Mapping):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return dict(value)


def declared_types(plugin: Any) -> tuple[dict[str, str], dict[str, str]] | None:
    """(action type → title, trigger type → title) as ``plugin`` declares them, or None
    when it declares neither (or a malformed one)."""
    actions, triggers = _declared(plugin, ACTIONS), _declared(plugin, TRIGGERS)
    if actions is None and triggers is None:
        return None
    if any(
        inspect.getattr_static(plugin, name, None) is not None and value is None
        for name, value in ((ACTIONS, actions), (TRIGGERS, triggers))
    ):
        return None  # one of them malformed
    return actions or {}, triggers or {}


def describe_declared(
    plugin_set: Any, include_defaults: bool = False
) -> list[dict[str, Any]] | None:
    """The plugin table (as :meth:`PluginSet.describe` without schemas) from declarations
    alone, or None when some listed plugin declares nothing."""
    out = []
    for info in sorted(plugin_set.plugins.values(), key=lambda p: p.name):
        if info.is_default:
            if not include_defaults:
                continue
            return None  # the kernel's own plugins declare nothing: list them the long way
        declared = declared_types(plugin_set.pm.get_plugin(info.name))
        if declared is None:
            return None
        actions, triggers = declared
        out.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "actions": [{"type": t, "title": actions[t]} for t in sorted(actions)],
                "triggers": [{"type": t, "title": triggers[t]} for t in sorted(triggers)],
            }
        )
    return out


def declaration_problems(
    plugin: Any, actions: Mapping[str, str], triggers: Mapping[str, str]
) -> list[str]:
    """How ``plugin``'s declaration differs from what it registered (type → title)."""
    declared = declared_types(plugin)
    if declared is None:
        for name in (ACTIONS, TRIGGERS):
            if inspect.getattr_static(plugin, name, None) is not None:
                return [f"{name} must be a dict of type name to title (strings)"]
        return []
    problems = []
    for name, said, registered in (
        (ACTIONS, declared[0], actions),
        (TRIGGERS, declared[1], triggers),
    ):
        for type_name in sorted(set(said) | set(registered)):
            if type_name not in registered:
                problems.append(f"{name} lists {type_name!r}, which it does not register")
            elif type_name not in said:
                problems.append(f"{name} leaves out {type_name!r}, which it registers")
            elif said[type_name] != registered[type_name]:
                problems.append(
                    f"{name} gives {type_name!r} the title {said[type_name]!r}; its class "
                    f"says {registered[type_name]!r}"
                )
    return problems
