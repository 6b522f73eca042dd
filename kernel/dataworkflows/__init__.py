"""DataWorkflows: a plugin-based workflow-automation engine.

What a plugin author imports lives here and nowhere else::

    from dataworkflows import Action, ActionContext, ActionResult, hookimpl

Importing this package is cheap: it loads no database driver and no web framework, and
each name is imported on first use (:func:`lazy_attributes`), so that ``from dataworkflows
import hookimpl`` does not load pydantic and ``dataworkflows --help`` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataworkflows.common.lazy import lazy_attributes

if TYPE_CHECKING:
    from dataworkflows.actions import (
        Action,
        ActionContext,
        ActionError,
        ActionResult,
        ChildRun,
        Credential,
        CredentialError,
        Credentials,
        Documents,
        RenderedDocument,
        ResourceLink,
        Resources,
        StepOutcome,
        WorkflowReference,
    )
    from dataworkflows.common.access import Identity, requires
    from dataworkflows.common.jsonlimits import JSONLimitError, loads_limited
    from dataworkflows.hookspecs import PLUGIN_API_VERSION, hookimpl
    from dataworkflows.triggers import TriggerType

__version__ = "0.1.0"

__all__ = [
    "PLUGIN_API_VERSION",
    "Action",
    "ActionContext",
    "ActionError",
    "ActionResult",
    "ChildRun",
    "Credential",
    "CredentialError",
    "Credentials",
    "Documents",
    "Identity",
    "JSONLimitError",
    "RenderedDocument",
    "ResourceLink",
    "Resources",
    "StepOutcome",
    "TriggerType",
    "WorkflowReference",
    "__version__",
    "hookimpl",
    "lazy_attributes",
    "loads_limited",
    "requires",
]

__getattr__ = lazy_attributes(
    __name__,
    "dataworkflows.actions",
    where={
        "Identity": "dataworkflows.common.access",
        "requires": "dataworkflows.common.access",
        "JSONLimitError": "dataworkflows.common.jsonlimits",
        "loads_limited": "dataworkflows.common.jsonlimits",
        "hookimpl": "dataworkflows.hookspecs",
        "PLUGIN_API_VERSION": "dataworkflows.hookspecs",
        "TriggerType": "dataworkflows.triggers",
    },
    names=__all__,
)
