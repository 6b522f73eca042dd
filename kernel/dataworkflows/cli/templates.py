"""``dataworkflows templates ...``: document template sets and workflow templates from the
command line (docs/templates.md).

Templates live in the database; nothing is loaded at start-up. ``templates load`` reads
template files (``fixtures/templates/*.json``, ``fixtures/workflow-templates/*.json``: the
bodies of ``POST /api/v1/templates`` and ``POST /api/v1/workflow-templates``, told apart by
their ``kind``) and creates or updates them, so loading the same files twice changes
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dataworkflows.cli.common import read_json, with_kernel

KINDS = ("documentTemplateSet", "workflowTemplate")
tenant_option = click.option("--tenant", default="default", show_default=True)


def template_files(paths: tuple[Path, ...]) -> list[Path]:
    """The files named, and the ``*.json`` files of the folders named (sorted)."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    return files


async def load_one(kernel: Any, body: dict[str, Any], tenant: str) -> str:
    """Create or update one template from a file's body; what was done, in words."""
    from dataworkflows.common.errors import Conflict, NotFound

    if body.get("kind") == "workflowTemplate":
        service = kernel.workflow_templates
        try:
            await service.get(str(body.get("id")), tenant_id=tenant)
        except NotFound:
            await service.create(body, tenant_id=tenant, actor="cli")
            return f"created workflow template {body['id']}"
        await service.replace(str(body["id"]), body, tenant_id=tenant)
        return f"updated workflow template {body['id']}"
    documents = kernel.documents
    try:
        view = await documents.create(body, tenant_id=tenant, actor="cli")
        return f"created template set {view['id']} (version 1)"
    except Conflict as exc:
        if exc.code != "template_set_exists":
            raise
    version = {k: v for k, v in body.items() if k not in ("id", "kind")}
    try:
        view = await documents.add_version(body["id"], version, tenant_id=tenant, actor="cli")
    except Conflict as exc:
        if exc.code != "duplicate_version":
            raise
        return f"template set {body['id']} unchanged (version {exc.details['version']})"
    return f"template set {view['id']}: added version {view['version']}"


def register_template_commands(cli: click.Group) -> None:
    """Add ``dataworkflows templates ...`` to the CLI (called by ``build_cli``)."""

    @cli.group("templates")
    def templates_group() -> None:
        """Document templates and workflow templates (docs/templates.md)."""

    @templates_group.command("load")
    @click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @tenant_option
    def load_cmd(paths: tuple[Path, ...], tenant: str) -> None:
        """Create or update templates from JSON files or folders of them (e.g. fixtures/templates
        fixtures/workflow-templates). A file's "kind" says what it is: "documentTemplateSet"
        (a new version is added when it changed) or "workflowTemplate" (replaced)."""
        bodies = []
        for file in template_files(paths):
            body = read_json(f"@{file}", str(file))
            if not isinstance(body, dict) or body.get("kind") not in KINDS:
                raise click.ClickException(
                    f'{file}: not a template file: its "kind" must be one of {", ".join(KINDS)}'
                )
            bodies.append((file, body))

        async def work(kernel: Any) -> list[str]:
            return [f"{file}: {await load_one(kernel, body, tenant)}" for file, body in bodies]

        for line in with_kernel(work):
            click.echo(line)

    @templates_group.command("list")
    @tenant_option
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def list_cmd(tenant: str, as_json: bool) -> None:
        """List the tenant's template sets and workflow templates (first 200 of each)."""
        from dataworkflows.common.pagination import MAX_LIMIT, PageRequest

        async def work(kernel: Any) -> tuple[list[Any], list[Any]]:
            request = PageRequest(MAX_LIMIT, None)
            sets = await kernel.documents.list(tenant_id=tenant, page_request=request)
            flows = await kernel.workflow_templates.list(tenant_id=tenant, page_request=request)
            return sets["items"], flows["items"]

        sets, flows = with_kernel(work)
        if as_json:
            click.echo(json.dumps({"templateSets": sets, "workflowTemplates": flows}, indent=2))
            return
        click.echo("template sets:" if sets else "template sets: none")
        for item in sets:
            click.echo(f"  {item['id']}  v{item['latestVersion']}  {item['displayName']}")
        click.echo("workflow templates:" if flows else "workflow templates: none")
        for item in flows:
            click.echo(f"  {item['id']}  {item['displayName']}")

    @templates_group.command("render")
    @click.argument("template_set")
    @click.argument("template")
    @click.option("--data", default=None, help="JSON, or @file (default: the sample data).")
    @click.option("--version", type=click.IntRange(min=1), default=None)
    @tenant_option
    def render_cmd(
        template_set: str, template: str, data: str | None, version: int | None, tenant: str
    ) -> None:
        """Print TEMPLATE of TEMPLATE_SET rendered with --data: the bytes the preview and the
        core.template.render action give."""
        values = None if data is None else read_json(data, "--data")
        if values is not None and not isinstance(values, dict):
            raise click.ClickException("--data must be a JSON object")

        async def work(kernel: Any) -> Any:
            return await kernel.documents.render_document(
                template_set, template, values, tenant_id=tenant, version=version
            )

        click.echo(with_kernel(work).content, nl=False)

    @templates_group.command("instantiate")
    @click.argument("template_id")
    @click.option("--config", "config", default="{}", help="JSON, or @file.")
    @click.option("--workflow-id", default=None, help="Default: <template id>-<8 hex digits>.")
    @click.option("--publish", is_flag=True, help="Publish the new workflow at once.")
    @tenant_option
    def instantiate_cmd(
        template_id: str, config: str, workflow_id: str | None, publish: bool, tenant: str
    ) -> None:
        """Create a Draft workflow from workflow template TEMPLATE_ID and --config."""
        body: dict[str, Any] = {"config": read_json(config, "--config")}
        if workflow_id is not None:
            body["workflowId"] = workflow_id

        async def work(kernel: Any) -> dict[str, Any]:
            view = await kernel.workflow_templates.instantiate(
                template_id, body, tenant_id=tenant, actor="cli"
            )
            if publish:
                view = await kernel.service.publish(view["id"], tenant_id=tenant, actor="cli")
            return dict(view)

        view = with_kernel(work)
        click.echo(f"created workflow {view['id']} ({view['status']}, version 1)")
