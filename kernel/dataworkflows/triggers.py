"""The trigger contract: what a plugin implements to start runs from outside.

A trigger type has a ``type`` name (``"webhook"``, ``"schedule"``) and a pydantic ``Config``
model validated when a trigger is created. How it starts runs (an HTTP route, a clock) is
the plugin's business; it does so only through the kernel's plugin API, never the tables.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class TriggerType:
    """Base class of every trigger type. Subclass it and register the subclass.

    Class attributes:
        type: unique name (``"webhook"``, ``"schedule"``).
        title: one line for listings.
        Config: a pydantic model of the trigger's configuration.
    """

    type: ClassVar[str]
    title: ClassVar[str] = ""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The JSON schema of :attr:`Config`."""
        return cls.Config.model_json_schema()
