"""Use cases shared by the HTTP API, the CLI and trigger plugins.

Every method validates first and writes after, so a rejected request changes nothing.
Results are plain dicts in the API's camelCase shape.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from dataworkflows.common.errors import Conflict, NotFound, Unprocessable
from dataworkflows.common.logcontext import current_correlation_id
from dataworkflows.common.pagination import DEFAULT_LIMIT, MAX_INT, PageRequest
from dataworkflows.common.pagination import page as paged
from dataworkflows.engine.definitions import WorkflowDefinition, checksum
from dataworkflows.engine.templating import TemplateEngine
from dataworkflows.engine.validation import validate_definition
from dataworkflows.ledger.queries import RunQueries
from dataworkflows.ledger.run_ledger import (
    RunLedger,
)
from dataworkflows.plugins.manager import PluginSet
from dataworkflows.secrets.fields import DefinitionSecrets, plaintexts
from dataworkflows.secrets.reseal import definition_rows, plan_reseal
from dataworkflows.service.audit import AuditContext, audit_view
from dataworkflows.service.commands import CommandOperations
from dataworkflows.service.nesting import check_nesting
from dataworkflows.service.runs import RunIntake
from dataworkflows.service.store import WorkflowStore
from dataworkflows.service.views import version_view, workflow_view
from dataworkflows.service.workflow_reads import version_not_found

if TYPE_CHECKING:
    from dataworkflows.secrets.credentials import CredentialStore


class WorkflowService(CommandOperations):
    """Workflows (create, version, publish, roll back, archive, read) and, inherited from
    :class:`~dataworkflows.service.runs.RunOperations`, their runs, and from
    :class:`~dataworkflows.service.commands.CommandOperations`, commands."""

    def __init__(
        self,
        *,
        store: WorkflowStore,
        ledger: RunLedger,
        plugins: PluginSet,
        templates: TemplateEngine,
        intake: RunIntake,
        secrets: DefinitionSecrets | None = None,
        credentials: CredentialStore | None = None,
        max_nesting_depth: int = 5,
    ) -> None:
        """``intake`` (this process's worker) queues runs and may take them at once (see
        :meth:`execute`). ``secrets`` finds the secret parameters of definitions, sealed
        with the key of ``credentials``."""
        self.store = store
        #: DATAWORKFLOWS_DEFAULT_MAX_NESTING_DEPTH, for the publish-time subworkflow check
        self.max_nesting_depth = max_nesting_depth
        self.secrets = secrets
        self.credentials = credentials
        self.ledger = ledger
        self.plugins = plugins
        self.templates = templates
        self.runs = RunQueries(store.db)
        self._intake = intake
        self._command_versions = OrderedDict()

    # -- definitions ----------------------------------------------------------------------

    async def _sealed(self, raw: Any, previous: tuple[str, str] | None = None) -> Any:
        """The definition to store: its secret parameters encrypted (503
        ``secret_key_missing`` if there are some and no key: nothing is written).

        A secret parameter sent back as ``"**********"`` keeps the value of the same node
        in the latest version of ``previous`` (workflow id, tenant id); without one it is
        a 422 and nothing is written."""
        values = self.secrets.values(raw) if self.secrets else {}
        if self.secrets is not None and self.secrets.masked_without_value(raw):
            if previous is not None:
                latest = (await self.store.get(*previous))["latest_version"]
                raw = self.secrets.keep_masked(
                    raw, await self.store.definition(previous[0], latest)
                )
            masked = self.secrets.masked_without_value(raw)
            if masked:
                raise Unprocessable(
                    f"the workflow definition has {len(masked)} problem(s)",
                    code="invalid_definition",
                    details={
                        "problems": [
                            {
                                "path": where,
                                "code": "masked_secret",
                                "message": '"**********" keeps a stored secret of the same '
                                "node, and none is stored: send the secret itself",
                            }
                            for where in masked
                        ]
                    },
                )
            values = self.secrets.values(raw)
        if not values:
            return raw
        assert self.secrets is not None and self.credentials is not None
        keyring = self.credentials.keyring_for_api()
        self.credentials.redactor.add_all(plaintexts(values))
        return self.secrets.seal(raw, keyring)

    async def re_encrypt(self) -> dict[str, Any]:
        """Seal every secret parameter of stored definitions under the first key
        (``dataworkflows credentials re-encrypt``). Checksums are kept: a version's checksum
        is the one it got when it was saved. Returns ``{"total", "reencrypted", "current",
        "failed", "unknownType"}`` (counting versions)."""
        assert self.secrets is not None and self.credentials is not None
        keyring = self.credentials.keyring()
        rows = await self.store.stored_definitions()
        plan = plan_reseal(definition_rows(rows, self.secrets), keyring)
        for (workflow_id, version), definition in plan.updates:
            await self.store.reseal_definition(workflow_id, version, definition)
        return plan.summary(len(plan.updates))

    def _shown(self, definition: Any) -> Any:
        """A definition as the API shows it: secret parameters masked."""
        return self.secrets.mask(definition) if self.secrets else definition

    def validate(self, raw: Any) -> WorkflowDefinition:
        """Parse and check a definition; raises a 422 listing every problem."""
        definition, problems = validate_definition(raw, self.plugins, self.templates)
        if problems or definition is None:
            raise Unprocessable(
                f"the workflow definition has {len(problems)} problem(s)",
                code="invalid_definition",
                details={"problems": [p.as_dict() for p in problems]},
            )
        return definition

    async def create_workflow(
        self,
        raw: Any,
        *,
        auto_activate: bool = False,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Create a workflow at version 1 (Draft, or Active with ``auto_activate``)."""
        definition = self.validate(raw)
        if auto_activate:
            await self._check_nesting(raw, tenant_id)
        stored = await self._sealed(raw)
        row = await self.store.create(
            workflow_id=definition.id,
            display_name=definition.display_name,
            description=definition.description,
            definition=stored,
            checksum=checksum(stored),
            tenant_id=tenant_id,
            actor=actor,
            publish=auto_activate,
            audit=_audit(actor, note),
        )
        return workflow_view(row, self._shown(raw))

    async def add_version(
        self,
        workflow_id: str,
        raw: Any,
        *,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Append version n+1 (Draft and Active workflows); 409 if identical to one."""
        definition = self.validate(raw)
        if definition.id != workflow_id:
            raise Unprocessable(
                f"the definition's id {definition.id!r} does not match workflow {workflow_id!r}",
                code="invalid_definition",
                details={
                    "problems": [
                        {
                            "path": "$.id",
                            "code": "id_mismatch",
                            "message": f"expected {workflow_id!r}",
                        }
                    ]
                },
            )
        stored = await self._sealed(raw, (workflow_id, tenant_id))
        version = await self.store.add_version(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            display_name=definition.display_name,
            description=definition.description,
            definition=stored,
            checksum=checksum(stored),
            actor=actor,
            audit=_audit(actor, note),
        )
        return {"workflowId": workflow_id, "version": version}

    async def publish(
        self,
        workflow_id: str,
        *,
        version: int | None = None,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Make a version (default: the latest) current; Draft/Active → Active."""
        row = await self.store.get(workflow_id, tenant_id)
        target = version or row["latest_version"]
        await self._check_publishable(workflow_id, target, tenant_id)
        await self.store.publish(workflow_id, tenant_id, target, audit=_audit(actor, note))
        return await self.get_workflow(workflow_id, tenant_id=tenant_id)

    async def _check_publishable(self, workflow_id: str, version: int, tenant_id: str) -> None:
        """404 for a version that cannot exist; 422 if the version no longer validates
        (plugins may have been removed since it was saved) or its subworkflows recurse or
        nest too deep."""
        if version > MAX_INT:
            raise version_not_found(workflow_id, version)
        definition = await self.store.definition(workflow_id, version)
        self.validate(definition)
        await self._check_nesting(definition, tenant_id)

    async def _check_nesting(self, definition: Any, tenant_id: str) -> None:
        """422 when the subworkflows it starts recurse or nest deeper than its
        ``maxNestingDepth`` (:mod:`dataworkflows.service.nesting`)."""

        async def load(workflow_id: str, version: int | None) -> dict[str, Any] | None:
            try:
                row = await self.store.get(workflow_id, tenant_id)
                version = version or row["current_version"]
                if version is None:
                    return None
                return await self.store.definition(workflow_id, version, opened=False)
            except NotFound:
                return None

        await check_nesting(definition, self.plugins, load, self.max_nesting_depth)

    async def rollback(
        self,
        workflow_id: str,
        *,
        version: int | None = None,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Publish an earlier version of an Active workflow (default: the one published
        before the current one)."""
        if version is None:
            version = await self.store.rollback_target(workflow_id, tenant_id)
        else:
            await self.store.get(workflow_id, tenant_id)  # 404 before anything else
        await self._check_publishable(workflow_id, version, tenant_id)
        await self.store.rollback(workflow_id, tenant_id, version, audit=_audit(actor, note))
        return await self.get_workflow(workflow_id, tenant_id=tenant_id)

    async def archive(
        self,
        workflow_id: str,
        *,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Archive a Draft or Active workflow: no new runs; runs in flight go on."""
        await self.store.archive(workflow_id, tenant_id, audit=_audit(actor, note))
        return await self.get_workflow(workflow_id, tenant_id=tenant_id)

    async def update_workflow(
        self,
        workflow_id: str,
        patch: dict[str, Any],
        *,
        tenant_id: str = "default",
        actor: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Change metadata (``displayName``, ``description``) without a new version."""
        unknown = sorted(set(patch) - {"displayName", "description", "note"})
        if unknown:
            raise Unprocessable(
                f"unknown fields: {', '.join(unknown)} (only displayName and description "
                "change here; publish, archive and rollback change the status, a new "
                "version changes the definition)",
                code="invalid_request",
                details={"fields": unknown},
            )
        changes: dict[str, Any] = {}
        if "displayName" in patch:
            name = patch["displayName"]
            if not isinstance(name, str) or not name.strip() or len(name) > 1000:
                raise Unprocessable(
                    "displayName must be a non-empty string of at most 1000 characters",
                    code="invalid_request",
                    details={"path": "$.displayName"},
                )
            changes["display_name"] = name
        if "description" in patch:
            text = patch["description"]
            if text is not None and (not isinstance(text, str) or len(text) > 10000):
                raise Unprocessable(
                    "description must be a string of at most 10000 characters, or null",
                    code="invalid_request",
                    details={"path": "$.description"},
                )
            changes["description"] = text
        if changes:
            await self.store.update_metadata(
                workflow_id, tenant_id, changes, audit=_audit(actor, note)
            )
        return await self.get_workflow(workflow_id, tenant_id=tenant_id)

    async def apply(
        self, raw: Any, *, tenant_id: str = "default", actor: str | None = None
    ) -> dict[str, Any]:
        """Create the workflow, or add a version if it changed, and publish it."""
        definition = self.validate(raw)
        try:
            existing = await self.store.get(definition.id, tenant_id)
        except NotFound:
            return await self.create_workflow(
                raw, auto_activate=True, tenant_id=tenant_id, actor=actor
            )
        try:
            version = (
                await self.add_version(definition.id, raw, tenant_id=tenant_id, actor=actor)
            )["version"]
        except Conflict as exc:
            if exc.code != "duplicate_version":
                raise
            version = exc.details["version"]
        if existing["status"] != "Active" or existing["current_version"] != version:
            await self._check_nesting(raw, tenant_id)
            await self.store.publish(definition.id, tenant_id, version, audit=_audit(actor))
        return await self.get_workflow(definition.id, tenant_id=tenant_id)

    async def test_run(
        self,
        raw: Any,
        *,
        trigger: dict[str, Any] | None = None,
        request_id: str | None = None,
        tenant_id: str = "default",
        actor: str | None = None,
    ) -> tuple[dict[str, Any], bool, int]:
        """Run a definition *without* publishing it: returns (run summary, created, version).

        The definition is validated like a publish; it is stored as a version of its
        workflow (the identical version is reused; a new workflow is created as a Draft) so
        that the ledger can pin the run to it, but it does not become the current version,
        the workflow's status and name do not change, and triggers go on running the
        published version. The run is marked ``testRun``.
        """
        definition = self.validate(raw)
        digest = checksum(raw)
        try:
            await self.store.get(definition.id, tenant_id)
        except NotFound:
            await self.create_workflow(raw, tenant_id=tenant_id, actor=actor, note="test run")
            version = 1
        else:
            found = await self.store.version_with_checksum(definition.id, digest)
            if found is None:
                found = await self.store.add_version(
                    workflow_id=definition.id,
                    tenant_id=tenant_id,
                    display_name=definition.display_name,
                    description=definition.description,
                    definition=raw,
                    checksum=digest,
                    actor=actor,
                    audit=_audit(actor, "test run"),
                    rename=False,
                )
            version = found
        summary, created = await self.execute(
            definition.id,
            trigger=trigger,
            request_id=request_id,
            tenant_id=tenant_id,
            principal=actor,
            test_version=version,
        )
        return summary, created, version

    async def get_workflow(self, workflow_id: str, *, tenant_id: str = "default") -> dict[str, Any]:
        row = await self.store.get(workflow_id, tenant_id)
        version = row["current_version"] or row["latest_version"]
        stored = await self.store.definition(workflow_id, version, opened=False)
        return workflow_view(row, self._shown(stored))

    async def list_workflows(
        self,
        *,
        tenant_id: str = "default",
        page: PageRequest | None = None,
        status: str | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        """A page of the tenant's workflows, ordered by id: ``{items, nextCursor}``."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        rows = await self.store.list(
            tenant_id,
            page.limit + 1,
            after=page.after[0] if page.after else None,
            status=status,
            text=text,
        )
        return paged("workflows", rows, page, lambda r: [r["id"]], workflow_view)

    async def list_versions(
        self, workflow_id: str, *, tenant_id: str = "default", page: PageRequest | None = None
    ) -> dict[str, Any]:
        """A page of the workflow's versions, oldest first (no definitions)."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        row, versions = await self.store.versions(
            workflow_id,
            tenant_id,
            after=page.after[0] if page.after else None,
            limit=page.limit + 1,
        )
        return paged(
            "versions", versions, page, lambda v: [v["version"]], lambda v: version_view(row, v)
        )

    async def get_version(
        self, workflow_id: str, version: int, *, tenant_id: str = "default"
    ) -> dict[str, Any]:
        """One version with its definition."""
        if not 1 <= version <= MAX_INT:
            await self.store.get(workflow_id, tenant_id)
            raise version_not_found(workflow_id, version)
        row, found = await self.store.version(workflow_id, tenant_id, version)
        return version_view(row, found) | {"definition": self._shown(found["definition"])}

    async def get_audit(
        self, workflow_id: str, *, tenant_id: str = "default", page: PageRequest | None = None
    ) -> dict[str, Any]:
        """A page of the workflow's audit trail, newest first."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        rows = await self.store.audit_log(
            workflow_id,
            tenant_id,
            before=page.after[0] if page.after else None,
            limit=page.limit + 1,
        )
        return paged("audit", rows, page, lambda r: [r["id"]], audit_view)


def _audit(actor: str | None, note: str | None = None) -> AuditContext:
    return AuditContext(actor=actor, note=note, correlation_id=current_correlation_id())
