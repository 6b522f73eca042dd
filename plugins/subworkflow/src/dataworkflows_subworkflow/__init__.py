"""``core.subworkflow``: start another workflow as a child run of this one.

Entry point only: the hook imports :mod:`dataworkflows_subworkflow.action` (pydantic
models) when the kernel asks for the types. Everything it does goes through the plugin
API: ``ctx.start_child_run`` (plugin API 1.2) starts the child, and
``Action.workflow_references`` names the workflows it starts for the publish-time check of
recursion and nesting depth.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_subworkflow.action")

#: the plugin-API versions this plugin works with: ctx.start_child_run is 1.2
dataworkflows_api = ">=1.2,<2"
#: what it registers (type: title), so `dataworkflows plugins` need not import it
dataworkflows_actions = {"core.subworkflow": "Run another workflow as a child run"}
dataworkflows_triggers = {}


@hookimpl
def register_actions(register: Any) -> None:
    from dataworkflows_subworkflow.action import Subworkflow

    register(Subworkflow)
