"""Commands (``POST /api/v1/commands``): run one action, or a workflow, by name, through
the same durable queue as every run (docs/api.md, "Commands").

A command is ``{command, correlationId?, payload}``. Two commands exist:

* ``workflow.run`` — ``payload: {workflowId, trigger?, requestId?}``: exactly what
  ``POST /workflows/{id}/execute`` does (the published version of an Active workflow).
* ``action.run`` — ``payload: {actionType, parameters?, requestId?}``: one step of an
  installed action type. The ledger pins every run to a stored workflow version, so the
  kernel keeps, per tenant and action type, a **command workflow**: one node of that
  type whose parameters are read from the run's trigger as data (``"{{
  trigger.parameters['message'] }}"``, one whole expression per parameter: the value keeps
  its type and is never rendered as a template). A version exists per set of parameter
  names (versions are immutable and deduplicated by checksum), created on first use.

  Its id starts with ``~`` (``~command.core.echo.<16 hex of the tenant>``), a character no
  user workflow id may have: no tenant can take another's command workflow id, the
  workflow routes answer 404 for it, and workflow lists leave it out. Its runs are
  ordinary runs of the tenant (listed, read, cancelled like any other). The stored
  definition's own ``id`` is ``command`` (definitions must have a user-style id).

Every check happens before anything is written: a rejected command changes nothing.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dataworkflows.common.errors import Conflict, NotFound, Unprocessable
from dataworkflows.common.validation_messages import friendly_message, json_path
from dataworkflows.engine.definitions import ID_PATTERN, checksum
from dataworkflows.engine.validation import validate_definition
from dataworkflows.secrets.secret_paths import model_secret_paths, transform
from dataworkflows.service.audit import AuditContext
from dataworkflows.service.runs import RunOperations
from dataworkflows.service.workflow_reads import KERNEL_OWNED_PREFIX, workflow_not_found

if TYPE_CHECKING:
    from dataworkflows.engine.templating import TemplateEngine
    from dataworkflows.plugins.manager import PluginSet
    from dataworkflows.service.store import WorkflowStore

#: the commands ``POST /api/v1/commands`` knows, with what their payload holds
KNOWN_COMMANDS: dict[str, str] = {
    "action.run": "payload {actionType, parameters?, requestId?}: run one action",
    "workflow.run": "payload {workflowId, trigger?, requestId?}: run a workflow's "
    "published version",
}
#: the id prefix of the kernel's command workflows (``~`` is outside workflow ids)
COMMAND_WORKFLOW_PREFIX = KERNEL_OWNED_PREFIX + "command."
#: a correlation id in a body: 1-200 visible ASCII characters (as the header)
CORRELATION_ID = re.compile(r"[\x21-\x7e]{1,200}")
#: parameter names a command workflow can read from the trigger (quoted in templates)
PARAMETER_NAME = re.compile(r"[A-Za-z0-9_$@][A-Za-z0-9_$@.:-]{0,199}")
WORKFLOW_ID = re.compile(ID_PATTERN)
REQUEST_ID = re.compile(r".{1,200}", re.DOTALL)
#: the one node of a command workflow
COMMAND_NODE = "action"
_CACHE_SIZE = 1024


def command_workflow_id(tenant_id: str, action_type: str) -> str:
    """The id of the tenant's command workflow for ``action_type`` (at most 200 chars)."""
    digest = hashlib.sha256(f"{tenant_id}\n{action_type}".encode()).hexdigest()
    readable = f"{COMMAND_WORKFLOW_PREFIX}{action_type}.{digest[:16]}"
    return readable if len(readable) <= 200 else COMMAND_WORKFLOW_PREFIX + digest[:40]


def is_command_workflow(workflow_id: str) -> bool:
    """Whether ``workflow_id`` is one of the kernel's command workflows."""
    return workflow_id.startswith(COMMAND_WORKFLOW_PREFIX)


def command_definition(action_type: str, names: list[str]) -> dict[str, Any]:
    """The one-node definition that runs ``action_type`` with the trigger's parameters."""
    return {
        "id": "command",
        "displayName": f"action.run {action_type}",
        "description": "Runs the action of POST /api/v1/commands (kernel-owned).",
        "nodes": [
            {
                "id": COMMAND_NODE,
                "actionType": action_type,
                "parameters": {n: f"{{{{ trigger.parameters['{n}'] }}}}" for n in names},
            }
        ],
    }


def _fields(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unprocessable(
            f"{where} must be a JSON object", code="invalid_request", details={"path": where}
        )
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise Unprocessable(
            f"unknown fields in {where}: {', '.join(unknown)} (allowed: "
            f"{', '.join(sorted(allowed))})",
            code="invalid_request",
            details={"path": where, "fields": unknown},
        )
    return value


def _string(value: Any, where: str, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Unprocessable(
            f"{where} must be {rule}", code="invalid_request", details={"path": where}
        )
    return value


def _parameter_problems(action: Any, parameters: dict[str, Any]) -> list[dict[str, str]]:
    base = "$.payload.parameters"
    problems = [
        {
            "path": f"{base}.{name}",
            "code": "parameter_name",
            "message": "a command's parameter names are 1-200 letters, digits and _ $ @ . : -",
        }
        for name in parameters
        if not PARAMETER_NAME.fullmatch(name)
    ]
    try:
        action.Params.model_validate(parameters)
    except ValidationError as exc:
        problems.extend(
            {
                "path": json_path(err["loc"], base),
                "code": "parameters",
                "message": friendly_message(err, action.Params),
            }
            for err in exc.errors()
        )

    def secret(value: Any, where: str) -> Any:
        problems.append(
            {
                "path": base + where.removeprefix("$"),
                "code": "secret_parameter",
                "message": "a command cannot carry a secret parameter (it would be stored "
                "unencrypted with the run): keep it in a credential, or in a workflow run "
                "with workflow.run",
            }
        )
        return value

    # a secret (writeOnly) parameter would be stored in the run's trigger in plaintext
    transform(parameters, model_secret_paths(action.Params), secret)
    return problems


class CommandOperations(RunOperations):
    """The commands use case; :class:`~dataworkflows.service.workflows.WorkflowService`
    inherits it (with its store, plugins and templates)."""

    store: WorkflowStore
    plugins: PluginSet
    templates: TemplateEngine
    #: (tenant, action type, parameter names) → version of the command workflow
    _command_versions: OrderedDict[tuple[str, str, tuple[str, ...]], int]

    async def run_command(
        self,
        body: Any,
        *,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Check a command and queue its run; returns the 202 body
        ``{command, correlationId, executionId, workflowId, status, statusUrl, eventsUrl}``.

        ``correlation_id``: the request's (header or generated); the body's
        ``correlationId`` wins over it. ``request_id``: the run's request id when the
        payload has none (the route derives one from the ``Idempotency-Key``). When a
        ``requestId`` returns an earlier run, the answer carries *that* run's correlation
        id: it is the one its events have.
        """
        body = _fields(body, "$", {"command", "correlationId", "payload"})
        command = body.get("command")
        if not isinstance(command, str) or command not in KNOWN_COMMANDS:
            known = "; ".join(f"{name} ({KNOWN_COMMANDS[name]})" for name in sorted(KNOWN_COMMANDS))
            shown = command[:200] if isinstance(command, str) else None
            raise Unprocessable(
                f"unknown command {shown!r}; known commands: {known}",
                code="unknown_command",
                details={"command": shown, "knownCommands": sorted(KNOWN_COMMANDS)},
            )
        if body.get("correlationId") is not None:
            correlation_id = _string(
                body["correlationId"],
                "$.correlationId",
                CORRELATION_ID,
                "1-200 visible ASCII characters",
            )
        correlation_id = correlation_id or uuid.uuid4().hex
        if command == "workflow.run":
            payload = _fields(
                body.get("payload"), "$.payload", {"workflowId", "trigger", "requestId"}
            )
            workflow_id = payload.get("workflowId")
            if not isinstance(workflow_id, str):
                raise Unprocessable(
                    "$.payload.workflowId must be a workflow id",
                    code="invalid_request",
                    details={"path": "$.payload.workflowId"},
                )
            if not WORKFLOW_ID.fullmatch(workflow_id):
                raise workflow_not_found(workflow_id[:200])
            trigger = payload.get("trigger")
            if trigger is not None and not isinstance(trigger, dict):
                raise Unprocessable(
                    "$.payload.trigger must be a JSON object",
                    code="invalid_request",
                    details={"path": "$.payload.trigger"},
                )
            version = None
        else:
            payload = _fields(
                body.get("payload"), "$.payload", {"actionType", "parameters", "requestId"}
            )
        if "requestId" in payload:
            request_id = _string(
                payload["requestId"],
                "$.payload.requestId",
                REQUEST_ID,
                "a non-empty string of at most 200 characters",
            )
        if command == "action.run":  # last: it may store the command workflow's version
            workflow_id, version, trigger = await self._action_run(payload, tenant_id)
        summary, created = await self.execute(
            workflow_id,
            trigger=trigger,
            request_id=request_id,
            tenant_id=tenant_id,
            principal=principal,
            correlation_id=correlation_id,
            version=version,
        )
        if not created:  # an earlier run of the same requestId: its own correlation id
            row = await self.ledger.get_execution(uuid.UUID(summary["executionId"]))
            correlation_id = row["correlation_id"] if row else correlation_id
        return {
            "command": command,
            "correlationId": correlation_id,
            "workflowId": workflow_id,
            **summary,
            "eventsUrl": f"{summary['statusUrl']}/events",
        }

    async def _action_run(
        self, payload: dict[str, Any], tenant_id: str
    ) -> tuple[str, int, dict[str, Any]]:
        """Check an ``action.run`` payload; (command workflow id, version, trigger)."""
        action_type = payload.get("actionType")
        action = self.plugins.action(action_type) if isinstance(action_type, str) else None
        if action is None:
            installed = sorted(self.plugins.actions)
            shown = action_type if isinstance(action_type, str) else None
            raise Unprocessable(
                f"unknown action type {shown!r} (installed: "
                f"{', '.join(installed) or 'none are installed'})",
                code="unknown_action_type",
                details={
                    "path": "$.payload.actionType",
                    "actionType": shown,
                    "installed": installed,
                },
            )
        parameters = payload.get("parameters", {})
        if not isinstance(parameters, dict):
            raise Unprocessable(
                "$.payload.parameters must be a JSON object",
                code="invalid_request",
                details={"path": "$.payload.parameters"},
            )
        problems = _parameter_problems(action, parameters)
        if problems:
            raise Unprocessable(
                f"the parameters of {action_type!r} have {len(problems)} problem(s)",
                code="invalid_parameters",
                details={"problems": problems},
            )
        names = sorted(parameters)
        version = await self._command_version(tenant_id, action_type, names)
        trigger = {"command": "action.run", "actionType": action_type, "parameters": parameters}
        return command_workflow_id(tenant_id, action_type), version, trigger

    async def _command_version(self, tenant_id: str, action_type: str, names: list[str]) -> int:
        """The version of the tenant's command workflow for these parameter names,
        created (workflow and/or version) on first use; concurrent first uses agree."""
        key = (tenant_id, action_type, tuple(names))
        cached = self._command_versions.get(key)
        if cached is not None:
            return cached
        workflow_id = command_workflow_id(tenant_id, action_type)
        definition = command_definition(action_type, names)
        _, problems = validate_definition(definition, self.plugins, self.templates)
        if problems:  # pragma: no cover - the kernel's own definition
            raise RuntimeError(f"command workflow of {action_type}: {problems}")
        digest = checksum(definition)
        stored: dict[str, Any] = {
            "workflow_id": workflow_id,
            "tenant_id": tenant_id,
            "display_name": f"Commands: {action_type}",
            "definition": definition,
            "checksum": digest,
            "actor": "dataworkflows",
            "audit": AuditContext(actor="dataworkflows", note="command workflow"),
        }
        version: int | None = None
        try:
            await self.store.get(workflow_id, tenant_id)
        except NotFound:
            try:
                await self.store.create(
                    **stored,
                    description="Runs action.run commands (kernel-owned, not listed).",
                    publish=True,
                )
                version = 1
            except Conflict:  # created at the same time by another request
                pass
        if version is None:
            version = await self.store.version_with_checksum(workflow_id, digest)
        if version is None:
            try:
                version = await self.store.add_version(**stored, description=None, rename=False)
            except Conflict as exc:
                if exc.code != "duplicate_version":
                    raise
                version = int(exc.details["version"])
        self._command_versions[key] = version
        while len(self._command_versions) > _CACHE_SIZE:
            self._command_versions.popitem(last=False)
        return version
