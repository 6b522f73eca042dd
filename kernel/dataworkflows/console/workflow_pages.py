"""Console pages of workflows: the list (search, status) and one workflow (versions with a
diff between two, audit trail, graph, triggers, recent runs), and the actions on them
(publish, archive, rollback, run, trigger enable/disable/fire now)."""

from __future__ import annotations

import difflib
import json
import uuid
from typing import Any

from aiohttp import web

from dataworkflows.api import request_args as args
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.common.errors import NotFound, Unprocessable
from dataworkflows.common.pagination import PageRequest, parse_choice, parse_int, parse_page
from dataworkflows.console import graph
from dataworkflows.console.rendering import action_form, done, json_field, render
from dataworkflows.db.models import WORKFLOW_STATUSES
from dataworkflows.service.audit import check_note

#: runs shown on a workflow's page; versions and audit rows listed there at most
RECENT_RUNS, MAX_VERSIONS, AUDIT_ROWS = 10, 200, 50


async def workflows_page(request: web.Request) -> web.Response:
    """The tenant's workflows (``q`` searches id and name, ``status`` filters), each with
    its last run."""
    kernel = request.app[kernel_key]
    status = parse_choice(request.query, "status", WORKFLOW_STATUSES)
    text = (request.query.get("q") or "").strip() or None
    result = await kernel.service.list_workflows(
        tenant_id=tenant(request),
        page=parse_page(request.query, "workflows"),
        status=status,
        text=text,
    )
    last_runs = {}
    for workflow in result["items"]:
        runs = await kernel.service.list_executions(
            tenant_id=tenant(request),
            page=PageRequest(1, None),
            workflow_id=workflow["id"],
        )
        last_runs[workflow["id"]] = runs["items"][0] if runs["items"] else None
    return render(
        request,
        "workflows.html",
        {
            "workflows": result["items"],
            "next_cursor": result["nextCursor"],
            "last_runs": last_runs,
            "statuses": WORKFLOW_STATUSES,
            "status": status,
            "q": text or "",
        },
    )


def _diff(old: dict[str, Any], new: dict[str, Any], names: tuple[str, str]) -> list[str]:
    def lines(definition: dict[str, Any]) -> list[str]:
        return json.dumps(definition, indent=2, sort_keys=True).splitlines()

    return list(difflib.unified_diff(lines(old), lines(new), *names, lineterm="", n=3))


async def _version_diff(
    request: web.Request, workflow_id: str, latest: int
) -> tuple[int, int, list[str]]:
    """The versions compared (``from``/``to``, default: the last two) and their diff."""
    kernel = request.app[kernel_key]
    newer = parse_int(request.query, "to", 1, latest) or latest
    older = parse_int(request.query, "from", 1, latest) or max(newer - 1, 1)
    if older == newer:
        return older, newer, []
    left = await kernel.service.get_version(workflow_id, older, tenant_id=tenant(request))
    right = await kernel.service.get_version(workflow_id, newer, tenant_id=tenant(request))
    names = (f"version {older}", f"version {newer}")
    return older, newer, _diff(left["definition"], right["definition"], names)


async def workflow_page(request: web.Request) -> web.Response:
    """One workflow: graph coloured by its last run, versions and a diff, triggers, runs,
    audit trail, and the lifecycle actions."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    who = tenant(request)
    workflow = await kernel.service.get_workflow(workflow_id, tenant_id=who)
    versions = await kernel.service.list_versions(
        workflow_id, tenant_id=who, page=PageRequest(MAX_VERSIONS, None)
    )
    older, newer, diff = await _version_diff(request, workflow_id, workflow["latestVersion"])
    audit = await kernel.service.get_audit(
        workflow_id, tenant_id=who, page=PageRequest(AUDIT_ROWS, None)
    )
    triggers = await kernel.triggers.list(workflow_id, tenant_id=who)
    runs = await kernel.service.list_executions(
        tenant_id=who, page=PageRequest(RECENT_RUNS, None), workflow_id=workflow_id
    )
    last_run = None
    if runs["items"]:
        last_run = await kernel.service.get_execution(
            runs["items"][0]["id"], tenant_id=who, replica=True
        )
    statuses = graph.last_statuses(last_run["actions"]) if last_run else {}
    return render(
        request,
        "workflow.html",
        {
            "workflow": workflow,
            "graph": graph.layout(workflow.get("definition") or {}, statuses),
            "fill": graph.fill,
            "versions": versions["items"],
            "diff_from": older,
            "diff_to": newer,
            "diff": diff,
            "audit": audit["items"],
            "triggers": triggers["items"],
            "runs": runs["items"],
            "last_run": last_run,
        },
    )


def _version(form: dict[str, str]) -> int | None:
    raw = (form.get("version") or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        raise Unprocessable(
            "version must be a positive integer",
            code="invalid_request",
            details={"field": "version"},
        )
    return int(raw)


def _note(form: dict[str, str]) -> str | None:
    return check_note((form.get("note") or "").strip() or None)


async def lifecycle_action(request: web.Request) -> web.Response:
    """Publish, archive or roll back (``operation`` in the path), after the page's
    confirmation; an audit row names the principal and the note."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    operation = request.match_info["operation"]
    form = await action_form(request)
    common = {"tenant_id": tenant(request), "actor": principal(request), "note": _note(form)}
    if operation == "publish":
        view = await kernel.service.publish(workflow_id, version=_version(form), **common)
    elif operation == "rollback":
        view = await kernel.service.rollback(workflow_id, version=_version(form), **common)
    else:
        view = await kernel.service.archive(workflow_id, **common)
    return done(
        f"/workflows/{workflow_id}",
        f"{operation}: {workflow_id} is {view['status']} (version {view['currentVersion']})",
    )


async def run_action(request: web.Request) -> web.Response:
    """Start a run of the published version with the form's trigger JSON; go to the run."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    form = await action_form(request)
    summary, _ = await kernel.service.execute(
        workflow_id,
        trigger=json_field(form, "trigger") or {},
        request_id=f"console:{uuid.uuid4().hex}",
        tenant_id=tenant(request),
        principal=principal(request),
    )
    return done(f"/runs/{summary['executionId']}", f"run {summary['executionId']} queued")


async def trigger_action(request: web.Request) -> web.Response:
    """Enable or disable a trigger, or fire it now (a run with a ``firedFrom: console``
    event, through the trigger's activation condition like any event)."""
    kernel = request.app[kernel_key]
    workflow_id = args.workflow_id(request)
    trigger_id = request.match_info["trigger_id"]
    operation = request.match_info["operation"]
    await action_form(request)
    who = tenant(request)
    back = f"/workflows/{workflow_id}"
    if operation in ("enable", "disable"):
        await kernel.triggers.set_enabled(
            workflow_id, trigger_id, operation == "enable", tenant_id=who
        )
        return done(back, f"trigger {trigger_id} {operation}d")
    await kernel.triggers.get(workflow_id, trigger_id, tenant_id=who)  # 404 if not ours
    handle = await kernel.triggers.handle(trigger_id)
    if handle is None:
        raise NotFound(
            f"trigger {trigger_id!r} cannot fire: its plugin is missing or its config invalid",
            code="trigger_not_found",
        )
    result = await kernel.triggers.start(
        handle,
        {"firedFrom": "console"},
        key=f"console:{uuid.uuid4().hex}",
        principal=principal(request),
    )
    if result.execution_id:
        return done(f"/runs/{result.execution_id}", f"trigger {trigger_id} fired")
    return done(back, f"trigger {trigger_id} did not start a run: {result.reason}")
