"""Console pages of runs: the list (workflow, status, time range; keyset pages), one run
(timeline of every attempt, parameters, outputs, errors, logs, variables, resource links;
its live part re-rendered while the run is in flight), cancel, rerun; dead letters."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from dataworkflows.api import request_args as args
from dataworkflows.api.keys import kernel_key
from dataworkflows.api.middleware import principal, tenant
from dataworkflows.common.errors import NotFound, Unprocessable
from dataworkflows.common.pagination import parse_choice, parse_page, parse_time
from dataworkflows.console import graph, timeline
from dataworkflows.console.rendering import action_form, done, render
from dataworkflows.db.models import RUN_STATUSES
from dataworkflows.ledger.resources import link_view

#: run statuses after which nothing changes any more
FINAL = {"Succeeded", "Failed", "Cancelled"}
_FILTERS = ("workflowId", "status", "from", "to")


async def runs_page(request: web.Request) -> web.Response:
    """The tenant's runs, newest first, filtered by workflow, status and creation time
    (``from`` inclusive, ``to`` exclusive, UTC), 50 a page with a keyset cursor."""
    kernel = request.app[kernel_key]
    query = request.query
    workflow_id = (query.get("workflowId") or "").strip() or None
    if workflow_id is not None and not args.WORKFLOW_ID.fullmatch(workflow_id):
        raise Unprocessable(
            "workflowId is not a valid workflow id",
            code="invalid_query",
            details={"parameter": "workflowId"},
        )
    result = await kernel.service.list_executions(
        tenant_id=tenant(request),
        page=parse_page(query, "executions"),
        workflow_id=workflow_id,
        status=parse_choice(query, "status", RUN_STATUSES),
        created_from=parse_time(query, "from"),
        created_to=parse_time(query, "to"),
    )
    kept = {name: query[name] for name in _FILTERS if query.get(name)}
    next_url = None
    if result["nextCursor"]:
        next_url = "/runs?" + urlencode({**kept, "cursor": result["nextCursor"]})
    return render(
        request,
        "runs.html",
        {
            "runs": result["items"],
            "next_url": next_url,
            "filters": {name: query.get(name, "") for name in _FILTERS},
            "statuses": RUN_STATUSES,
        },
    )


def _safe_url(url: Any) -> str | None:
    """A link target shown as a link only if it is http(s) (never ``javascript:``)."""
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


async def _run_context(request: web.Request) -> dict[str, Any]:
    """Everything the run page shows, read through the services (404 for another
    tenant's run, like the API)."""
    kernel = request.app[kernel_key]
    who = tenant(request)
    execution_id = request.match_info["execution_id"]
    run = await kernel.service.get_execution(execution_id, tenant_id=who, replica=True)
    logs = await kernel.service.execution_logs(execution_id, tenant_id=who)
    variables = await kernel.service.execution_variables(execution_id, tenant_id=who)
    links = [link_view(r) for r in await kernel.resources.list_for_execution(uuid.UUID(run["id"]))]
    for link in links:
        link["href"] = _safe_url(link["url"])
    version = await kernel.service.get_version(
        run["workflowId"], run["workflowVersion"], tenant_id=who
    )
    bars, span = timeline.bars(run, kernel.clock.now())
    by_attempt: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for line in logs["items"]:
        by_attempt.setdefault((line["nodeId"], line["attempt"]), []).append(line)
    return {
        "run": run,
        "final": run["status"] in FINAL,
        "bars": bars,
        "span": span,
        "logs": by_attempt,
        "variables": variables["items"],
        "links": links,
        "graph": graph.layout(version["definition"], graph.last_statuses(run["actions"])),
        "fill": graph.fill,
    }


async def run_page(request: web.Request) -> web.Response:
    """One run; its live part follows the event stream while the run is in flight."""
    return render(request, "run.html", await _run_context(request))


async def run_live_fragment(request: web.Request) -> web.Response:
    """The live part of a run page alone (what the page's script swaps in on each event)."""
    return render(request, "run_live.html", await _run_context(request))


async def cancel_action(request: web.Request) -> web.Response:
    """Cancel the run (Pending: at once; Running: its worker stops it)."""
    kernel = request.app[kernel_key]
    execution_id = request.match_info["execution_id"]
    await action_form(request)
    result = await kernel.service.cancel(execution_id, tenant_id=tenant(request))
    return done(f"/runs/{result['executionId']}", f"cancel requested ({result['status']})")


async def rerun_action(request: web.Request) -> web.Response:
    """Queue a new run of the workflow's published version with this run's trigger."""
    kernel = request.app[kernel_key]
    await action_form(request)
    run = await kernel.service.get_execution(
        request.match_info["execution_id"], tenant_id=tenant(request)
    )
    summary, _ = await kernel.service.execute(
        run["workflowId"],
        trigger=run["trigger"] or {},
        request_id=f"console-rerun:{uuid.uuid4().hex}",
        tenant_id=tenant(request),
        principal=principal(request),
    )
    return done(f"/runs/{summary['executionId']}", f"rerun of {run['id']} queued")


async def dead_letters_page(request: web.Request) -> web.Response:
    """Runs the engine gave up on, newest first, with a requeue button each."""
    kernel = request.app[kernel_key]
    result = await kernel.service.list_dead_letters(
        tenant_id=tenant(request), page=parse_page(request.query, "deadLetters")
    )
    next_url = f"/dead-letters?cursor={result['nextCursor']}" if result["nextCursor"] else None
    return render(request, "dead_letters.html", {"letters": result["items"], "next_url": next_url})


async def requeue_action(request: web.Request) -> web.Response:
    """Queue a new run with the dead run's version and trigger."""
    kernel = request.app[kernel_key]
    await action_form(request)
    raw = request.match_info["dead_letter_id"]
    try:
        uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no dead letter {raw!r}", code="dead_letter_not_found") from None
    result = await kernel.service.requeue_dead_letter(raw, tenant_id=tenant(request))
    return done(f"/runs/{result['executionId']}", f"requeued as {result['executionId']}")
