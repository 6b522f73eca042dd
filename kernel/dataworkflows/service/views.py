"""The API's camelCase shapes of workflows, versions, runs, attempts, events and dead
letters, built from ledger and store rows (times as :func:`~dataworkflows.common.clock.iso_utc`)."""

from __future__ import annotations

from typing import Any

from dataworkflows.common.clock import iso_utc


def workflow_view(row: dict[str, Any], definition: dict[str, Any] | None = None) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "displayName": row["display_name"],
        "description": row["description"],
        "status": row["status"],
        "currentVersion": row["current_version"],
        "latestVersion": row["latest_version"],
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
    }
    if definition is not None:
        view["definition"] = definition
    return view


def version_view(workflow: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflowId": workflow["id"],
        "version": row["version"],
        "checksum": row["checksum"],
        "createdAt": iso_utc(row["created_at"]),
        "createdBy": row["created_by"],
        "current": workflow["current_version"] == row["version"],
        "latest": workflow["latest_version"] == row["version"],
    }


def run_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "executionId": str(row["id"]),
        "status": row["status"],
        "statusUrl": f"/api/v1/executions/{row['id']}",
    }


def _execution_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "workflowId": row["workflow_id"],
        "workflowVersion": row["workflow_version"],
        "requestId": row["request_id"],
        "status": row["status"],
        "error": row["error"],
        "principal": row["principal"],
        "correlationId": row["correlation_id"],
        "createdAt": iso_utc(row["created_at"]),
        "startedAt": iso_utc(row["started_at"]),
        "endedAt": iso_utc(row["ended_at"]),
        "testRun": bool(row.get("test_run", False)),
        "parentExecutionId": _id_or_none(row.get("parent_execution_id")),
        "parentNodeId": row.get("parent_node_id"),
        "rootExecutionId": _id_or_none(row.get("root_execution_id")),
        "depth": row.get("depth") or 0,
    }


def _id_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def execution_view(row: dict[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    """A run with its trigger payload and every attempt."""
    return {
        **_execution_fields(row),
        "trigger": row["trigger"],
        "actions": [action_view(a) for a in actions],
    }


def execution_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A run in a list: no trigger payload and no attempts (GET the run for those)."""
    return {**_execution_fields(row), "statusUrl": f"/api/v1/executions/{row['id']}"}


def action_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "nodeId": row["node_id"],
        "actionType": row["action_type"],
        "attempt": row["attempt"],
        "status": row["status"],
        "parameters": row["parameters"],
        "outputs": row["outputs"],
        "error": row["error"],
        "startedAt": iso_utc(row["started_at"]),
        "endedAt": iso_utc(row["ended_at"]),
    }


def log_lines_view(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept ``ctx.log`` lines of these attempts, each with its node and attempt."""
    return [
        {**line, "nodeId": a["node_id"], "attempt": a["attempt"]}
        for a in actions
        for line in a.get("logs") or ()
    ]


def variable_view(row: dict[str, Any]) -> dict[str, Any]:
    """A ``run_variables`` row as the API shows it."""
    return {
        "key": row["key"],
        "type": row["type"],
        "value": row["value"],
        "nodeId": row["node_id"],
        "attempt": row["attempt"],
        "updatedAt": iso_utc(row["updated_at"]),
    }


def dead_letter_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "executionId": str(row["execution_id"]),
        "workflowId": row["workflow_id"],
        "reason": row["reason"],
        "details": row["details"],
        "createdAt": iso_utc(row["created_at"]),
        "requeuedAt": iso_utc(row["requeued_at"]),
        "requeuedExecutionId": (
            str(row["requeued_execution_id"]) if row["requeued_execution_id"] else None
        ),
    }


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "sequence": row["sequence"],
        "type": row["type"],
        "nodeId": row["node_id"],
        "payload": row["payload"],
        "createdAt": iso_utc(row["created_at"]),
    }
