"""The plugin contract: every hook a DataWorkflows plugin can implement.

Plugins are modules (or objects) with functions decorated by :data:`hookimpl` whose names
match the specs below; they are found through the ``dataworkflows`` entry-point group::

    [project.entry-points.dataworkflows]
    hello = "dataworkflows_hello"

Hooks are synchronous and registration-shaped: the kernel calls them while it starts, the
plugin hands back classes or callables, and the runtime work happens later in async methods
of what it registered. An implementation may accept any subset of a spec's arguments.
Every hook is called through pluggy, so hook wrappers (``@hookimpl(wrapper=True)``) and
``DATAWORKFLOWS_TRACE_PLUGINS`` see every call; ``register_actions`` and
``register_triggers`` are called once per plugin that implements them (a wrapper sees one
call per such plugin), so that each type is attributed to the distribution that registered
it.

Every spec below documents *Called when*, *Args*, *Returns* and *Since*; a test checks that,
and ``docs/hooks.md`` is generated from this module (``python -m
dataworkflows.plugins.hookdoc > docs/hooks.md``; a test fails when it is stale).

Versions: :data:`PLUGIN_API_VERSION` is the version of this contract (``MAJOR.MINOR``). A
minor version adds hooks, arguments or context attributes; a major version removes or
changes them. A plugin declares the versions it works with (``dataworkflows_api = ">=1,<2"``
in its entry-point module) and a kernel outside them refuses to load it. A hook to be
removed is first deprecated: its spec gets ``warn_on_impl=deprecated_hook(...)``, so that
registering an implementation raises a :class:`DeprecationWarning` throughout at least one
minor version, and it goes in the next major version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click
    import jinja2
    from aiohttp import web

    from dataworkflows.actions import Action
    from dataworkflows.events import RunEvent
    from dataworkflows.measurements import EngineMeasurement
    from dataworkflows.plugin_api import PluginAPI
    from dataworkflows.triggers import TriggerType

PROJECT_NAME = "dataworkflows"

#: The version of the plugin contract this kernel provides (``MAJOR.MINOR``).
PLUGIN_API_VERSION = "1.2"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


def deprecated_hook(name: str, *, since: str, instead: str) -> DeprecationWarning:
    """The warning a deprecated hook's implementations get: ``@hookspec(warn_on_impl=
    deprecated_hook("old_hook", since="1.1", instead="implement new_hook"))``.

    Args:
        name: the hook's name.
        since: the plugin-API version that deprecates it.
        instead: what plugins should do instead.

    Returns: a :class:`DeprecationWarning` naming the hook, the version that deprecated it
    and the major version that removes it; pluggy raises it, at the implementation's source
    line, whenever a plugin implementing the hook is registered.
    """
    removed_in = int(since.split(".")[0]) + 1
    return DeprecationWarning(
        f"the hook {name!r} is deprecated since plugin API {since} and will be removed in "
        f"plugin API {removed_in}.0: {instead}"
    )


@hookspec
def register_actions(register: Callable[[type[Action]], None]) -> None:
    """Contribute action types.

    Called when: once, while the kernel builds its action registry at start-up.
    Args: register -- call it with each :class:`~dataworkflows.Action` subclass the plugin
        provides. A type name already registered by another plugin is a start-up error that
        names both distributions.
    Returns: nothing.
    Since: 0.1.
    """


@hookspec
def register_triggers(register: Callable[[type[TriggerType]], None]) -> None:
    """Contribute trigger types (webhook, schedule, ...).

    Called when: once, while the kernel builds its trigger registry at start-up.
    Args: register -- call it with each :class:`~dataworkflows.TriggerType` subclass.
        Duplicate type names are a start-up error, as for actions. An event-driven type
        starts runs through :meth:`PluginAPI.fire_trigger
        <dataworkflows.plugin_api.PluginAPI.fire_trigger>` (from a route it mounts with
        ``register_routes``); a time-based type sets ``time_based = True`` and implements
        ``next_fire_time`` so that the kernel's scheduler fires it.
    Returns: nothing.
    Since: 0.1.
    """


@hookspec
def register_routes(app: web.Application, kernel: PluginAPI) -> None:
    """Serve HTTP endpoints from the engine's aiohttp application (e.g. ``/hooks/{id}``).

    Called when: once, while ``create_app`` builds the web application, before it starts.
    Args: app -- the :class:`aiohttp.web.Application`; add routes with ``app.router``.
        Paths under ``/api/`` are reserved for the kernel.
        kernel -- the :class:`~dataworkflows.plugin_api.PluginAPI` the handlers use to
        look triggers up and start runs (``get_trigger``, ``fire_trigger``); plugins
        never reach the database directly.
    Returns: nothing.
    Since: 0.1.
    """


@hookspec(firstresult=True)
def resolve_secret(name: str, tenant_id: str) -> str | None:
    """Look up a credential by name for a tenant.

    Called when: an action asks its context for a credential, or a plugin calls
        ``await PluginAPI.resolve_secret(...)`` (a webhook's ``secretName``), and the
        kernel's encrypted credential store does not hold it for that tenant (the store is
        asked first: one resolver serves actions, triggers and plugins). Called in a worker
        thread, so a provider may block (a Vault request). Stops at first non-None result;
        the kernel's environment-variable provider is consulted last.
    Args: name -- the credential's name as written in the workflow.
        tenant_id -- the tenant of the run asking; providers must not return another
        tenant's secret.
    Returns: the secret value, or None if this provider does not know the name.
    Since: 0.1.
    """


@hookspec
def prepare_jinja2_environment(env: jinja2.Environment) -> None:
    """Add filters, tests or globals to the sandboxed template environment.

    Called when: once, after the kernel creates its ``SandboxedEnvironment``.
    Args: env -- the environment; mutate it in place (``env.filters["slug"] = ...``).
    Returns: nothing.
    Afterwards the kernel hardens the environment: every filter is wrapped so that it
    spends the evaluation's work budget (one operation, one per item of its input, and
    the size of what it returns) and size arguments are checked; templates that use a
    plugin's filters or globals are evaluated in worker processes forked from the
    engine (docs/semantics.md, "The work budget"). A filter that itself loops or blocks
    is stopped by the wall-clock limit.
    Since: 0.1.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``dataworkflows`` command line.

    Called when: at most once per CLI group built by the factory (never at import), when
        the CLI first needs the plugins' commands: to list them (``--help``) or to run a
        command the kernel does not have. A command named like one of the kernel's is
        ignored, with a warning.
    Args: cli -- the top-level :class:`click.Group`; decorate new commands with
        ``@cli.command()``.
    Returns: nothing.
    Since: 0.1.
    """


@hookspec
def on_run_event(event: RunEvent) -> None:
    """Observe the life of runs: metrics, tracing, notifications.

    Called when: after each ledger event (a run or step changing state) has been committed;
        and, with ``event.durable`` False, at once when an attempt begins (a *live*
        ``StepStarted``, not written: a step that outlasts
        ``DATAWORKFLOWS_STEP_STARTED_AFTER_SECONDS`` gets a durable ``StepStarted`` too).
        Runs in the worker's event loop: return quickly, hand slow work to a task.
    Args: event -- the :class:`~dataworkflows.events.RunEvent` just recorded (or live);
        step events also carry the attempt's ``action_type`` and, when final, its
        ``duration_seconds`` (plugin API 1.1; not stored, so None on events read back).
    Returns: nothing; exceptions are logged and do not affect the run.
    Since: 0.1.
    """


@hookspec
def on_engine_measurement(measurement: EngineMeasurement) -> None:
    """Observe the kernel's machinery: claim latency, group-commit batch sizes, fencing
    rejections, dead letters, trigger intake time (metrics).

    Called when: in the process where it happened, after the transaction it measures
        committed (or, for a rejection, was refused) — once per batch, not per row: a claim
        transaction gives one measurement with the queue wait of each run it took. Runs in
        the event loop: return quickly. Nothing is written for it. When no plugin
        implements this hook the kernel builds no measurement at all.
    Args: measurement -- the :class:`~dataworkflows.measurements.EngineMeasurement`
        (:class:`~dataworkflows.measurements.Measure` lists the names, their values and
        labels). Run and step changes come through ``on_run_event`` instead; the queue's
        depth is read on demand with :meth:`PluginAPI.queue_depth
        <dataworkflows.plugin_api.PluginAPI.queue_depth>`.
    Returns: nothing; exceptions are logged and change nothing.
    Since: 1.1 (plugin API).
    """


@hookspec
def propagation_headers(execution_id: str, node_id: str, attempt: int) -> Mapping[str, str] | None:
    """Headers that carry an attempt's trace context to the services its action calls.

    Called when: an action calls :meth:`ActionContext.propagation_headers
        <dataworkflows.actions.ActionContext.propagation_headers>` while it runs, before it
        sends an HTTP request (actions that call remote services should, for every
        request). Runs in the worker's event loop: answer from memory, at once.
    Args: execution_id -- the run's id.
        node_id -- the node being executed.
        attempt -- its attempt number (1 for the first).
    Returns: header names and values to send (a tracing plugin: W3C ``traceparent`` and
        ``tracestate`` naming the attempt's span as the parent), or None. The answers of
        all plugins are merged, the first to name a header winning; exceptions are logged
        and the action gets no header from that call.
    Since: 1.1 (plugin API).
    """
