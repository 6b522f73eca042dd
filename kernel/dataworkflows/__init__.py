"""DataWorkflows: a plugin-based workflow-automation engine.

What a plugin author imports lives here and nowhere else::

    from dataworkflows import Action, ActionContext, ActionResult, hookimpl

Importing this package is cheap: it loads no database driver and no web framework.
"""

from dataworkflows.actions import (
    Action,
    ActionContext,
    ActionError,
    ActionResult,
    Credential,
    CredentialError,
    Credentials,
    ResourceLink,
    Resources,
    StepOutcome,
)
from dataworkflows.common.jsonlimits import JSONLimitError, loads_limited
from dataworkflows.hookspecs import hookimpl
from dataworkflows.triggers import TriggerType

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ActionContext",
    "ActionError",
    "ActionResult",
    "Credential",
    "CredentialError",
    "Credentials",
    "JSONLimitError",
    "ResourceLink",
    "Resources",
    "StepOutcome",
    "TriggerType",
    "__version__",
    "hookimpl",
    "loads_limited",
]
