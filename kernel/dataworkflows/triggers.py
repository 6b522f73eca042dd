"""The trigger contract: what a plugin implements to start runs from outside.

A trigger type has a ``type`` name (``"webhook"``, ``"schedule"``) and a pydantic ``Config``
model validated when a trigger is created. How it starts runs (an HTTP route, a clock) is
the plugin's business; it does so only through the kernel's plugin API, never the tables.

Two kinds of trigger types exist:

* **Event-driven** (``webhook``): the plugin receives something (a request in a route it
  mounted with ``register_routes``) and calls
  :meth:`PluginAPI.fire_trigger <dataworkflows.plugin_api.PluginAPI.fire_trigger>`.
* **Time-based** (``schedule``): the type sets ``time_based = True`` and implements
  :meth:`TriggerType.next_fire_time`. The kernel's scheduler asks it when the trigger fires
  next (the kernel never parses cron), applies the :class:`FirePolicy` the type returns for
  the trigger's config, and starts exactly one run per fire time, even with several
  scheduler processes on one database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from dataworkflows.common.schemas import model_schema

#: request ids of runs started by a trigger: ``trg:<triggerId>:<key>``
REQUEST_PREFIX = "trg:"
#: event keys longer than this are hashed so the request id stays within 200 characters
MAX_KEY_LENGTH = 120


def request_id_for(trigger_id: str, key: str) -> str:
    """The request id of the run an event with ``key`` starts (stable across processes)."""
    if len(key) > MAX_KEY_LENGTH:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return f"{REQUEST_PREFIX}{trigger_id}:{key}"


MisfirePolicy = Literal["skip", "catchUpOne", "catchUpAll"]
OverlapPolicy = Literal["allow", "skip"]


@dataclass(frozen=True)
class FirePolicy:
    """How the kernel's scheduler treats the fire times of one time-based trigger.

    A fire time is *on time* while the scheduler reaches it within ``misfire_grace``;
    later than that it has *misfired* (the scheduler was down, or the database slow).
    On-time fire times always start a run. Misfired ones depend on ``misfire``:

    * ``"skip"``: start nothing for them (they are counted as skipped).
    * ``"catchUpOne"``: start one run, for the most recent misfired fire time.
    * ``"catchUpAll"``: start one run per misfired fire time, the most recent
      ``max_catch_up`` of them.

    Fire times older than ``catch_up_window`` are never caught up (only counted as one
    skip), so a scheduler that was down for a month does not start a month of runs.

    ``overlap``: ``"allow"`` starts runs regardless of earlier ones; ``"skip"`` skips a
    fire time while a run this trigger started earlier is still Pending or Running.

    Since: 0.1.
    """

    misfire: MisfirePolicy = "skip"
    misfire_grace: timedelta = timedelta(seconds=60)
    catch_up_window: timedelta = timedelta(hours=1)
    max_catch_up: int = 100
    overlap: OverlapPolicy = "allow"


class TriggerType:
    """Base class of every trigger type. Subclass it and register the subclass.

    Class attributes:
        type: unique name (``"webhook"``, ``"schedule"``).
        title: one line for listings.
        Config: a pydantic model of the trigger's configuration. Fields declared secret
            (typed ``pydantic.SecretStr``, or ``"writeOnly": true`` in their JSON schema)
            are encrypted at rest by the kernel, shown as ``"**********"`` by the API and
            given to the plugin decrypted (:mod:`dataworkflows.secrets.fields`).
        time_based: True if the kernel's scheduler drives this type (then implement
            :meth:`next_fire_time`; :meth:`fire_policy` and :meth:`event` are optional).
    """

    type: ClassVar[str]
    title: ClassVar[str] = ""
    time_based: ClassVar[bool] = False

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The JSON schema of :attr:`Config`, as ``GET /api/v1/plugins`` publishes it.

        Its ``title`` is the model's own (``model_config["title"]``), else
        ``"<type> trigger configuration"`` (not pydantic's class name, ``"Config"``).
        Its ``description`` is the model's docstring, and each property's the field's
        docstring (with ``use_attribute_docstrings=True``) or ``Field(description=...)``:
        write them for workflow authors (see :mod:`dataworkflows.common.schemas`).
        """
        return model_schema(cls.Config, f"{cls.type} trigger configuration")

    @classmethod
    async def check(cls, config: Any, api: Any, tenant_id: str) -> list[dict[str, str]]:
        """Problems of a saved trigger that only show when it fires: e.g. a credential its
        config names that does not exist (yet).

        Called when: the kernel shows the trigger (``GET``, list, after create, update,
        enable); a problem makes its ``status`` visible (``secretMissing`` for the code
        ``secret_missing``, else ``setupIncomplete``) and is listed in ``problems``.
        Args: ``config``: the validated :attr:`Config` (secrets decrypted); ``api``: the
        :class:`~dataworkflows.plugin_api.PluginAPI`; ``tenant_id``: the trigger's tenant.
        Returns: ``[{"code", "message"}]``, ``[]`` when the trigger is ready (the default).
        Never put a secret in a message.
        """
        return []

    @classmethod
    def next_fire_time(cls, config: Any, after: datetime) -> datetime | None:
        """Time-based types: the first fire time strictly after ``after``.

        Args:
            config: the trigger's validated :attr:`Config`.
            after: a timezone-aware UTC datetime.
        Returns: a timezone-aware datetime (any zone; the kernel converts to UTC), or None
            if the trigger never fires again. Must be deterministic: every scheduler
            process computes the same fire times from the same config.
        """
        raise NotImplementedError(f"trigger type {cls.type!r} is not time-based")

    @classmethod
    def fire_policy(cls, config: Any) -> FirePolicy:
        """Time-based types: the misfire and overlap policy of a trigger (default: skip/allow)."""
        return FirePolicy()

    @classmethod
    def event(cls, config: Any, scheduled_time: datetime) -> dict[str, Any]:
        """Time-based types: extra keys of the trigger payload for one fire time.

        The kernel adds ``scheduledTime``, ``firedAt``, ``catchUp``, ``triggerId`` and
        ``triggerType`` itself (see docs/triggers.md); return JSON data only.
        """
        return {}

    @classmethod
    def describe(cls, trigger_id: str, config: Any) -> dict[str, Any]:
        """Extra, non-secret facts the API shows for a trigger under ``info``
        (the webhook type returns its URL path). Default: nothing."""
        return {}


@dataclass(frozen=True)
class TriggerHandle:
    """A trigger as a plugin sees it (from :meth:`PluginAPI.get_trigger`).

    ``config`` is the validated :attr:`TriggerType.Config` instance. ``workflow_active`` says
    whether the trigger's workflow is Active (only Active workflows start runs).
    """

    id: str
    workflow_id: str
    tenant_id: str
    type: str
    config: Any
    enabled: bool
    workflow_active: bool
    activation_condition: str | None = None


@dataclass(frozen=True)
class FireResult:
    """What happened to one event given to the kernel.

    ``outcome``:
        ``"started"`` -- a new run was queued (``execution_id``);
        ``"duplicate"`` -- the same event (request id) had already started ``execution_id``;
        ``"notActivated"`` -- the activation condition was false: no run;
        ``"conditionError"`` -- the condition could not be evaluated: no run (``error``);
        ``"skipped"`` -- a time-based fire time that started no run (``reason``).
    """

    outcome: Literal["started", "duplicate", "notActivated", "conditionError", "skipped"]
    execution_id: str | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def activated(self) -> bool:
        """True if a run exists for the event (new or duplicate)."""
        return self.outcome in ("started", "duplicate")

    @property
    def created(self) -> bool:
        """True if this call queued a new run."""
        return self.outcome == "started"
