"""The action contract: what a plugin implements to add a step type.

An action is a class with a ``type`` (``"<plugin>.<verb-noun>"``), a pydantic ``Params``
model (its parameter schema, checked when a workflow is created or published and again on
the rendered values before every attempt) and an async ``run(ctx, params)``::

    class Echo(Action):
        type = "core.echo"
        title = "Echo a message"

        class Params(BaseModel):
            message: str

        async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
            return ActionResult.succeeded({"echo": params.message})

Actions never touch the database: everything they need comes through the
:class:`ActionContext`, everything they produce goes back in the :class:`ActionResult`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from dataworkflows.common.run_variables import RunVariables, VariableError
from dataworkflows.common.schemas import model_schema

if TYPE_CHECKING:
    import asyncio

    import aiohttp

    from dataworkflows.common.redaction import Redactor


class StepOutcome(enum.StrEnum):
    """How one attempt of an action ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # permanent: retrying would not help
    RETRIABLE = "RetriableFailure"  # transient: the conductor may try again
    #: the node waits on a child run (:meth:`ActionContext.start_child_run` with ``wait``);
    #: the kernel parks it and the child's end decides the node's outcome
    WAITING = "Waiting"


@dataclass(frozen=True)
class ChildRun:
    """A run of another workflow that a node starts (a subworkflow). Since plugin API 1.2.

    ``workflow``: the workflow's id (same tenant); ``input``: the child's trigger payload
    (``trigger`` in its templates); ``version``: a pinned version of that workflow (which
    must be ``Active``), or None for its current published version.
    """

    workflow: str
    input: Mapping[str, Any]
    version: int | None = None


@dataclass(frozen=True)
class WorkflowReference:
    """A workflow a node names in its (unrendered) parameters, for the kernel's publish-time
    check of subworkflow recursion and depth (:meth:`Action.workflow_references`). Since
    plugin API 1.2."""

    workflow: str
    version: int | None = None
    #: where in the parameters it is named (e.g. ``"workflow"``), for error messages
    path: str = ""


@dataclass(frozen=True)
class ResourceLink:
    """An external object an action created or touched (a chat message, a board item).

    Return links in :meth:`ActionResult.succeeded`; the kernel stores them in the same
    transaction as the step (one row per workflow + system + type + external id) and lists
    them at ``GET /api/v1/executions/{id}/resources``. ``key`` is an optional lookup key
    (e.g. a hash of the input that created the object): a later run of the same workflow
    finds the link again with ``await ctx.resources.find(system, type, key=...)``.
    """

    system: str
    type: str
    external_id: str
    url: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class ActionResult:
    """What one attempt of an action produced.

    Build it with :meth:`succeeded`, :meth:`failed` or :meth:`retriable` rather than by hand.
    ``outputs`` must be JSON-serialisable; it is stored in the ledger and reaches later steps'
    templates as ``nodes.<id>.outputs``.
    """

    outcome: StepOutcome
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error: Mapping[str, Any] | None = None
    retry_after: float | None = None
    links: tuple[ResourceLink, ...] = ()
    #: with :attr:`StepOutcome.WAITING`: the child run to start and wait on
    child: ChildRun | None = None

    @classmethod
    def succeeded(
        cls, outputs: Mapping[str, Any] | None = None, *, links: tuple[ResourceLink, ...] = ()
    ) -> ActionResult:
        """The attempt did its job; ``outputs`` are recorded and passed on."""
        return cls(StepOutcome.SUCCEEDED, dict(outputs or {}), links=tuple(links))

    @classmethod
    def failed(
        cls, message: str, *, code: str = "action_failed", details: Any = None
    ) -> ActionResult:
        """The attempt failed and retrying cannot help (bad input, 4xx, auth)."""
        return cls(StepOutcome.FAILED, error=_error(code, message, details))

    @classmethod
    def retriable(
        cls,
        message: str,
        *,
        code: str = "transient_failure",
        details: Any = None,
        retry_after: float | None = None,
    ) -> ActionResult:
        """The attempt failed for a transient reason (5xx, 429, timeout).

        ``retry_after`` (seconds) is a hint from the remote side, e.g. ``Retry-After``; the
        conductor waits at least that long before the next attempt.
        """
        return cls(
            StepOutcome.RETRIABLE,
            error=_error(code, message, details),
            retry_after=retry_after,
        )


def _error(code: str, message: str, details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return error


class ActionError(Exception):
    """Raise from ``run`` as an alternative to returning a failed result.

    ``retriable=True`` makes it a :attr:`StepOutcome.RETRIABLE` failure. Any *other*
    exception escaping ``run`` is recorded as a permanent failure of type
    ``unhandled_exception``: a bug in an action should not be retried blindly.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "action_failed",
        retriable: bool = False,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retriable = retriable
        self.details = details
        self.retry_after = retry_after

    def to_result(self) -> ActionResult:
        if self.retriable:
            return ActionResult.retriable(
                self.message, code=self.code, details=self.details, retry_after=self.retry_after
            )
        return ActionResult.failed(self.message, code=self.code, details=self.details)


@dataclass(frozen=True)
class Credential:
    """A credential as an action receives it. ``secret`` never appears in its repr.

    ``allowed_hosts``: host names the secret may be sent to (empty: any host). Actions that
    send a credential to a URL chosen by the workflow (``http.request``) must honour it.
    """

    name: str
    secret: str = field(repr=False)
    allowed_hosts: tuple[str, ...] = ()
    source: str = "unknown"

    def allows_host(self, host: str | None) -> bool:
        """Whether the secret may be sent to ``host`` (``*.example.com`` covers subdomains)."""
        if not self.allowed_hosts:
            return True
        host = (host or "").lower().rstrip(".")
        return any(
            host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern
            for pattern in self.allowed_hosts
        )


class CredentialError(ActionError):
    """A credential cannot be provided: unknown name (or another tenant's), store locked.

    A permanent failure: the step fails before it sends anything.
    """

    def __init__(self, message: str, *, code: str = "credential_not_found") -> None:
        super().__init__(message, code=code)


class Credentials:
    """The credentials an action may use, by name, scoped to its run's tenant.

    ``await ctx.credentials.get("chat-bot")`` returns the secret string; ``fetch`` returns
    a :class:`Credential` with its metadata. Both raise :class:`CredentialError` (a
    permanent failure) when the tenant has no credential of that name. Every secret handed
    out is redacted from the ledger, events, API responses and logs. This base class (used
    when an action runs outside a kernel) knows no credential.
    """

    tenant_id: str = "default"
    #: where :meth:`mark_secret` registers values: the kernel's redactor (None outside a
    #: kernel: the process-wide one of :mod:`dataworkflows.common.redaction`)
    redactor: Redactor | None = None

    async def fetch(self, name: str) -> Credential:
        """The credential ``name`` of the run's tenant; raises :class:`CredentialError`."""
        raise CredentialError(f"no credential named {name!r} is available here")

    async def get(self, name: str) -> str:
        """The secret value of credential ``name``; raises :class:`CredentialError`."""
        return (await self.fetch(name)).secret

    def mark_secret(self, value: str) -> None:
        """Register a value derived from a secret (a signed token...) for redaction too."""
        from dataworkflows.common.redaction import redactor as process_redactor

        (self.redactor if self.redactor is not None else process_redactor).add(
            value, self.tenant_id
        )


class Resources:
    """Resource links that earlier runs of the same workflow recorded (read-only).

    Use it to avoid creating an object twice when a workflow is re-run with the same input.
    This base class (used when an action runs outside a kernel) finds nothing.
    """

    async def find(
        self,
        system: str,
        type: str,
        *,
        key: str | None = None,
        external_id: str | None = None,
    ) -> ResourceLink | None:
        """The newest link of this workflow matching ``system``, ``type`` and ``key`` or
        ``external_id`` (at least one of them), or None."""
        return None


@dataclass(frozen=True)
class RenderedDocument:
    """A document rendered from a stored template (``ctx.render_document``). Since plugin
    API 1.2.

    ``content`` is the document's text; ``format`` is the template's (``text``,
    ``markdown`` or ``html``) and ``content_type`` its media type; ``bytes`` and
    ``sha256`` describe ``content`` encoded as UTF-8. ``template_set``, ``template`` and
    ``version`` name exactly what was rendered.
    """

    content: str
    format: str
    content_type: str
    template_set: str
    template: str
    version: int
    bytes: int
    sha256: str

    def as_outputs(self) -> dict[str, Any]:
        """The JSON shape the preview route answers and the render action outputs."""
        return {
            "document": self.content,
            "format": self.format,
            "contentType": self.content_type,
            "templateSet": self.template_set,
            "template": self.template,
            "version": self.version,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


class Documents:
    """The document templates of the run's tenant (``ctx.documents``). Since plugin API 1.2.

    :meth:`render` renders a stored template (``POST /api/v1/templates``) in the kernel's
    sandbox, exactly as the preview route ``POST /api/v1/templates/{id}/render`` does: the
    same data gives the same bytes. Errors are :class:`ActionError` (permanent):
    ``template_not_found``, ``template_undefined`` (a variable the data lacks),
    ``template_refused`` (the sandbox refused an unsafe operation),
    ``template_budget_exceeded`` (over the operations/size/time budget) and
    ``document_too_large`` (over ``DATAWORKFLOWS_DOCUMENT_MAX_BYTES``). This base class
    (used when an action runs outside a kernel) knows no template.
    """

    async def render(
        self,
        template_set: str,
        template: str,
        data: Mapping[str, Any] | None,
        *,
        version: int | None = None,
    ) -> RenderedDocument:
        """Render ``template`` of template set ``template_set`` (its latest version, or
        ``version``) with ``data`` as the template's variables (None: the version's sample
        data)."""
        raise ActionError(
            f"no document template {template_set!r} is available here",
            code="template_not_found",
        )


@dataclass
class ActionContext:
    """Everything the kernel hands an action for one attempt.

    Attributes:
        execution_id: id of the run (a UUID string).
        workflow_id / workflow_version: the definition the run is pinned to.
        node_id: the node being executed.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        idempotency_key: stable across retries and resumes of this node in this run
            (``"<execution_id>:<node_id>"``); send it to remote APIs that deduplicate.
        trigger: the run's trigger payload (read-only by convention).
        http: a shared ``aiohttp.ClientSession`` owned by the kernel; do not close it.
        log: a logger bound to this run and node; its lines at INFO and above are also
            kept with the attempt (capped, secrets redacted) and readable at
            ``GET /api/v1/executions/{id}/logs``.
        cancelled: set when the run is being cancelled; long actions should watch it.
        tenant_id / principal: who the run belongs to and who started it.
        credentials: :class:`Credentials` of the run's tenant (``await ctx.credentials
            .get(name)``); another tenant's credentials are never reachable.
        resources: :class:`Resources`, the links earlier runs of this workflow recorded.
        settings: plugin settings: every ``DATAWORKFLOWS_<NAME>`` environment variable the
            kernel does not use itself, as ``{"<name>": value}`` (lower-case, e.g.
            ``acme_base_url``); credentials are never included.
        variables: the run's variables (read-only mapping: those committed before this
            attempt started, plus its own); set them with :meth:`set_variable`.
        propagation: where :meth:`propagation_headers` comes from (set by the kernel;
            None outside a kernel).
        documents: :class:`Documents`, the run's tenant's document templates (use
            :meth:`render_document`). Since plugin API 1.2.
    """

    execution_id: str
    workflow_id: str
    workflow_version: int
    node_id: str
    attempt: int
    idempotency_key: str
    trigger: Mapping[str, Any]
    http: aiohttp.ClientSession
    log: logging.LoggerAdapter[logging.Logger]
    cancelled: asyncio.Event
    tenant_id: str = "default"
    principal: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    resources: Resources = field(default_factory=Resources)
    settings: Mapping[str, str] = field(default_factory=dict)
    variables: RunVariables = field(default_factory=RunVariables)
    documents: Documents = field(default_factory=Documents)

    async def render_document(
        self,
        template_set: str,
        template: str,
        data: Mapping[str, Any] | None,
        *,
        version: int | None = None,
    ) -> RenderedDocument:
        """Render a stored document template of the run's tenant with ``data``: the same
        bytes as the preview ``POST /api/v1/templates/{id}/render`` gives for that data.
        Raises :class:`ActionError` (see :class:`Documents`). Since plugin API 1.2."""
        return await self.documents.render(template_set, template, data, version=version)

    def set_variable(self, key: str, value: Any) -> None:
        """Set run variable ``key`` (upsert) for later nodes: ``{{ vars.<key> }}``.

        ``value``: a string, number, boolean, or JSON object/array/null; it reads back with
        its type. ``key``: 1-64 letters, digits or ``_``, not starting with a digit. The
        value is written with this attempt's row if the attempt succeeds (dropped if it
        fails, is retried or cancelled), and listed at
        ``GET /api/v1/executions/{id}/variables``. A bad key or value, or one over
        ``DATAWORKFLOWS_RUN_VARIABLE_MAX_BYTES``, raises :class:`ActionError`
        (``invalid_variable``, permanent) unless the action catches it.
        """
        try:
            self.variables.set(key, value)
        except VariableError as exc:
            raise ActionError(str(exc), code=exc.code) from None

    propagation: Callable[[], Mapping[str, str]] | None = field(default=None, repr=False)
    #: how :meth:`start_child_run` queues a child without waiting (set by the kernel; None
    #: outside a kernel)
    children: Callable[[ChildRun], Awaitable[str]] | None = field(default=None, repr=False)

    async def start_child_run(
        self,
        workflow: str,
        input: Mapping[str, Any],
        *,
        version: int | None = None,
        wait: bool = True,
    ) -> Any:
        """Start a run of another workflow as a child of this run (a subworkflow).

        ``wait=True`` returns an :class:`ActionResult` (outcome
        :attr:`StepOutcome.WAITING`) that the action must return as it is: the kernel then
        queues the child and records this node ``Waiting`` in one transaction, releases the
        run (no worker holds it while the child runs) and resumes it when the child ends.
        The child's success makes the node succeed with outputs ``{"executionId": ...,
        "nodes": {<child node>: <its outputs>}}``; its failure (or cancellation) fails the
        node with code ``subworkflow_failed`` and the node's retry policy applies (each
        attempt starts a new child). The child is queued once per attempt, whatever
        crashes: its request id is ``<run id>:<node id>:<attempt>``.

        ``wait=False`` queues the child now and returns its execution id (a string); it is
        queued once per node (request id ``<run id>:<node id>``).

        The child runs with this run's tenant and principal; its depth is this run's + 1,
        and a depth over the workflow's ``maxNestingDepth`` fails the node
        (``max_nesting_depth_exceeded``). An unknown or not ``Active`` workflow, or a
        pinned version that does not exist, raises :class:`ActionError`
        (``subworkflow_not_runnable``, permanent). Since plugin API 1.2.
        """
        child = ChildRun(workflow, dict(input), version)
        if wait:
            return ActionResult(StepOutcome.WAITING, child=child)
        if self.children is None:
            raise ActionError(
                "child runs can only be started inside a kernel", code="subworkflows_unavailable"
            )
        return await self.children(child)

    def propagation_headers(self) -> dict[str, str]:
        """Headers to add to every HTTP request this attempt sends, so that the service
        called continues the run's trace: W3C ``traceparent`` (and ``tracestate``) naming
        this attempt's span, from the ``propagation_headers`` hook of the tracing plugin.
        ``{}`` when no plugin provides any (tracing off, or outside a kernel). Headers the
        workflow sets explicitly should win over these. Since plugin API 1.1.
        """
        if self.propagation is None:
            return {}
        return dict(self.propagation())


class Action:
    """Base class of every action type. Subclass it and register the subclass.

    Class attributes:
        type: unique name, ``"<plugin>.<verb-noun>"`` (e.g. ``"core.echo"``).
        title: one line for listings.
        Params: a pydantic model of the parameters, or a plain JSON Schema dict
            (``{"type": "object", "properties": ...}``) for authors who do not use
            pydantic: the class turns it into a model checked with ``jsonschema``
            (:mod:`dataworkflows.common.schema_params`) and ``run`` receives a read-only
            dict-like object (``params["name"]``). Parameters declared secret
            (``pydantic.SecretStr`` or ``"writeOnly": true``) are encrypted in stored
            definitions and masked by the API (:mod:`dataworkflows.secrets.fields`).
            Its JSON schema is published by
            ``GET /api/v1/plugins``; definitions are checked against it when created or
            published (template strings such as ``"{{ trigger.n }}"`` are checked after
            rendering), and ``run`` receives an instance of it.
    """

    type: ClassVar[str]
    title: ClassVar[str] = ""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A ``Params`` given as a JSON Schema dict becomes a model class here, so that
        every part of the kernel sees a model; an invalid schema is a ``TypeError`` when
        the plugin's module is imported."""
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("Params")
        if isinstance(declared, Mapping):
            from dataworkflows.common.schema_params import schema_params

            owner = f"action {cls.__dict__.get('type', cls.__qualname__)}"
            cls.Params = schema_params(  # type: ignore[misc,assignment]
                declared, owner, module=cls.__module__, qualname=f"{cls.__qualname__}.Params"
            )

    async def run(self, ctx: ActionContext, params: Any) -> ActionResult:
        """Do the work of one attempt. Must be overridden."""
        raise NotImplementedError

    @classmethod
    def workflow_references(cls, parameters: Mapping[str, Any]) -> Sequence[WorkflowReference]:
        """The workflows a node of this type will start as child runs, named in its
        *unrendered* ``parameters`` (a templated name, known only at run time, is left
        out). The kernel calls it when a workflow is published to refuse subworkflow
        recursion and nesting deeper than ``maxNestingDepth`` (422). Default: none.
        Since plugin API 1.2.
        """
        return ()

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """The JSON schema of :attr:`Params`, as ``GET /api/v1/plugins`` publishes it.

        Its ``title`` is the model's own (``model_config["title"]``), else
        ``"<type> parameters"`` (``"core.echo parameters"``, not pydantic's ``"Params"``).
        Its ``description`` is the model's docstring, and each property's the field's
        docstring (with ``use_attribute_docstrings=True``) or ``Field(description=...)``:
        write them for workflow authors (see :mod:`dataworkflows.common.schemas`).
        """
        return model_schema(cls.Params, f"{cls.type} parameters")
