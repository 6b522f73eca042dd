"""monday.com connector: ``monday.get-items`` and ``monday.create-item`` (GraphQL API v2).

``monday.get-items`` parameters (JSON, camelCase):
    boardId: the board's id.
    filters: simple column filters, translated into ``items_page``'s ``query_params.rules``:
        a list of ``{"column", "operator", "value"}`` or a shorthand object
        ``{"status": "Done", "owner": ["Ada", "Grace"]}`` (each entry: ``any_of``). Operators
        are monday's (``any_of``, ``not_any_of``, ``is_empty``, ``is_not_empty``,
        ``greater_than``, ``greater_than_or_equals``, ``lower_than``,
        ``lower_than_or_equal``, ``between``, ``contains_text``, ``not_contains_text``,
        ``contains_terms``, ``starts_with``, ``ends_with``, ``within_the_next``,
        ``within_the_last``) or short forms (``eq``, ``ne``, ``in``, ``not_in``, ``gt``,
        ``gte``, ``lt``, ``lte``, ``contains``, ``empty``, ``not_empty``).
        Status and dropdown columns: monday compares ``any_of`` / ``not_any_of`` by label
        *index* (status) or label *id* (dropdown), never by text, and a text there matches
        no item without an error. So label texts are translated: when an ``any_of`` /
        ``not_any_of`` filter has a text value, the settings of the filtered columns
        (``columns { id type settings_str }``) are read once per attempt, each label text
        (exact, else case-insensitive) becomes its index / id, a blank status ``""`` becomes
        ``5`` (monday's blank index), integers are sent as given. An unknown label fails the
        step (permanent, ``monday_unknown_label``) naming the known ones. Label text can
        also be matched with ``contains_terms`` (status) or ``contains_text`` (dropdown),
        which monday compares by text.
    match: ``and`` (default) or ``or`` between filters.
    orderBy: ``[{"column": "date4", "direction": "asc" | "desc"}]``.
    columns: column ids to return (default all).
    limit: items to return at most (default 100); pages are fetched with ``items_page``
        then ``next_items_page`` cursors until the limit or the end.
    pageSize: items per request (1-500, default 100).
    credential: credential holding the API token (default ``monday``).

    Outputs: ``{"boardId", "items": [{"id", "name", "url", "group": {"id", "title"},
    "columns": {id: {"text", "value"}}}], "count", "hasMore", "cursor"}``.

``monday.create-item`` parameters: ``boardId``, ``groupId`` (optional), ``itemName``,
``columnValues`` (an object, sent as the JSON string monday expects),
``createLabelsIfMissing``, ``dedupeKey`` (default: a hash of board, group, name and column
values), ``verifyExisting`` (default true), ``credential``.

    Before creating, it looks up the resource links of earlier runs of the same workflow
    for that key: if an item was created for the same input (and, with ``verifyExisting``,
    still exists on monday.com), it is returned with ``"created": false`` instead of being
    created twice. Outputs: ``{"id", "name", "url", "boardId", "groupId", "created",
    "dedupeKey"}``, and a resource link ``monday/item/<id>``.

Errors: authentication and validation errors (and ``monday_unknown_label``) are
permanent; complexity-budget, rate and concurrency limits and server errors are retriable
after the wait the API asks for (``retry_in_seconds`` / ``Retry-After``).

Settings: ``DATAWORKFLOWS_MONDAY_API_URL`` (default ``https://api.monday.com/v2``) and
``DATAWORKFLOWS_MONDAY_API_VERSION`` (default ``2025-04``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dataworkflows import (
    Action,
    ActionContext,
    ActionResult,
    Credential,
    ResourceLink,
)
from dataworkflows_monday.client import MondayError, graphql
from dataworkflows_monday.filters import (
    Filter,
    OrderBy,
    label_rules,
    needs_labels,
    translate_filters,
)
from dataworkflows_monday.queries import (
    BOARD_COLUMNS,
    CREATE_ITEM,
    GET_ITEMS,
    ITEM_STATE,
    NEXT_ITEMS,
)

__all__ = ["CreateItem", "GetItems", "MondayError", "label_rules", "translate_filters"]

SYSTEM = "monday"
BoardId = str | int


def _board_id(value: BoardId) -> str:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError("boardId must be a monday.com board id (digits)")
    return text


async def _board_columns(
    ctx: ActionContext, credential: Credential, board_id: str, ids: list[str], timeout: float
) -> dict[str, dict[str, Any]] | None:
    """The settings of the board's columns ``ids`` (None when the board is not visible)."""
    data = await graphql(
        ctx, credential, BOARD_COLUMNS, {"boardId": board_id, "columnIds": ids}, timeout=timeout
    )
    boards = data.get("boards") or []
    if not boards:
        return None
    return {str(c.get("id")): c for c in boards[0].get("columns") or [] if isinstance(c, dict)}


def _board_not_found(board_id: str) -> ActionResult:
    return ActionResult.failed(
        f"board {board_id} does not exist or the token cannot see it",
        code="monday_board_not_found",
        details={"boardId": board_id},
    )


def _item_view(item: dict[str, Any]) -> dict[str, Any]:
    columns = {}
    for cv in item.get("column_values") or []:
        raw = cv.get("value")
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            value = raw
        columns[cv.get("id")] = {"text": cv.get("text"), "value": value}
    return {
        "id": str(item.get("id")),
        "name": item.get("name"),
        "url": item.get("url"),
        "group": item.get("group"),
        "columns": columns,
    }


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

    board_id: BoardId = Field(alias="boardId")
    """The board's id: the digits in its URL (``.../boards/1234567890``), as a number or a
    string."""
    credential: str = Field(default="monday", min_length=1, max_length=128)
    """The name of the credential holding the monday.com API token. Default: ``monday``."""
    timeout_seconds: float = Field(default=30.0, gt=0, le=300, alias="timeoutSeconds")
    """Seconds each API request may take (at most 300, default 30); a timeout is a
    retriable failure."""

    @field_validator("board_id")
    @classmethod
    def _digits(cls, value: BoardId) -> BoardId:
        if isinstance(value, str) and "{{" in value:
            return value
        return _board_id(value)


class GetItems(Action):
    """Read a board's items, filtered, following ``next_items_page`` cursors."""

    type = "monday.get-items"
    title = "Get items from a monday.com board"

    class Params(_Common):
        """Read the items of a monday.com board, optionally filtered and sorted, page by
        page up to ``limit``. Outputs: ``items`` (each with ``id``, ``name``, ``url``,
        ``group`` and ``columns``: ``{id: {text, value}}``), ``count``, ``hasMore`` and
        ``cursor``."""

        filters: list[Filter] | dict[str, Any] | None = None
        """Which items to return: a list of column filters, or the shorthand
        ``{"<column id>": value or [values]}`` (each entry: ``any_of``). Status and
        dropdown columns are filtered by label text (``{"status": "Done"}``).
        Default: every item."""
        match: Literal["and", "or"] = "and"
        """Whether an item must match all filters (``and``, default) or any (``or``)."""
        order_by: list[OrderBy] | None = Field(default=None, alias="orderBy")
        """Sort order, e.g. ``[{"column": "date4", "direction": "desc"}]``.
        Default: monday.com's order."""
        columns: list[str] | None = None
        """The ids of the columns to return for each item. Default: all columns."""
        limit: int = Field(default=100, ge=1, le=10000)
        """The most items to return (1 to 10000, default 100); ``hasMore`` says whether
        the board has more."""
        page_size: int = Field(default=100, ge=1, le=500, alias="pageSize")
        """Items per API request (1 to 500, default 100)."""

        @model_validator(mode="after")
        def _translatable(self) -> GetItems.Params:
            translate_filters(self.filters, self.match, self.order_by)
            return self

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        credential = await ctx.credentials.fetch(params.credential)
        board_id = _board_id(params.board_id)
        query_params = translate_filters(params.filters, params.match, params.order_by)
        wanted = sorted(
            {r["column_id"] for r in (query_params or {}).get("rules", []) if needs_labels(r)}
        )
        if wanted:  # label texts to translate: read those columns' settings, once
            columns = await _board_columns(
                ctx, credential, board_id, wanted, params.timeout_seconds
            )
            if columns is None:
                return _board_not_found(board_id)
            query_params = label_rules(query_params, columns)
        items: list[dict[str, Any]] = []
        data = await graphql(
            ctx,
            credential,
            GET_ITEMS,
            {
                "boardId": board_id,
                "limit": min(params.page_size, params.limit),
                "queryParams": query_params,
                "columnIds": params.columns,
            },
            timeout=params.timeout_seconds,
        )
        boards = data.get("boards") or []
        if not boards:
            return _board_not_found(board_id)
        page = boards[0].get("items_page") or {}
        items.extend(page.get("items") or [])
        cursor = page.get("cursor")
        pages = 1
        while cursor and len(items) < params.limit:
            if ctx.cancelled.is_set():
                break
            data = await graphql(
                ctx,
                credential,
                NEXT_ITEMS,
                {
                    "cursor": cursor,
                    "limit": min(params.page_size, params.limit - len(items)),
                    "columnIds": params.columns,
                },
                timeout=params.timeout_seconds,
            )
            page = data.get("next_items_page") or {}
            items.extend(page.get("items") or [])
            cursor = page.get("cursor")
            pages += 1
        items = items[: params.limit]
        ctx.log.info(
            "monday.get-items: %d items from board %s in %d pages", len(items), board_id, pages
        )
        return ActionResult.succeeded(
            {
                "boardId": board_id,
                "items": [_item_view(i) for i in items],
                "count": len(items),
                "hasMore": bool(cursor),
                "cursor": cursor,
                "pages": pages,
            }
        )


def dedupe_key(
    board_id: str, group_id: str | None, name: str, values: dict[str, Any] | None
) -> str:
    """The default lookup key of an item: a hash of what would be sent to create it."""
    canonical = json.dumps(
        {"board": board_id, "group": group_id, "name": name, "columns": values or {}},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "v1:" + hashlib.sha256(canonical.encode()).hexdigest()


class CreateItem(Action):
    """Create an item, unless an earlier run of the workflow created it for the same input."""

    type = "monday.create-item"
    title = "Create an item on a monday.com board"

    class Params(_Common):
        """Create an item on a monday.com board, at most once per input: if an earlier run
        of this workflow created an item with the same ``dedupeKey``, that item is
        returned with ``created: false``. Outputs: ``id``, ``name``, ``url``, ``boardId``,
        ``groupId``, ``created`` and ``dedupeKey``."""

        group_id: str | None = Field(default=None, alias="groupId", max_length=200)
        """The id of the group (section) to create the item in (e.g. ``topics``).
        Default: the board's top group."""
        item_name: str = Field(alias="itemName", min_length=1, max_length=255)
        """The new item's name (1 to 255 characters)."""
        column_values: dict[str, Any] | None = Field(default=None, alias="columnValues")
        """Column values as monday.com's API expects them, by column id, e.g.
        ``{"status": {"label": "Done"}, "date4": {"date": "2026-01-31"}}``.
        Default: none."""
        create_labels_if_missing: bool = Field(default=False, alias="createLabelsIfMissing")
        """Create a status or dropdown label that ``columnValues`` names but the column does
        not have yet. Default: false (monday.com refuses such a label)."""
        dedupe_key: str | None = Field(
            default=None, alias="dedupeKey", min_length=1, max_length=200
        )
        """What makes two creations the same item: a run finds the item an earlier run of
        this workflow created with the same key. Default: a hash of board, group, name and
        column values."""
        verify_existing: bool = Field(default=True, alias="verifyExisting")
        """Before returning an item created earlier for the same key, check it still exists
        on monday.com (if it was deleted, a new one is created). Default: true."""

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        credential = await ctx.credentials.fetch(params.credential)
        board_id = _board_id(params.board_id)
        key = params.dedupe_key or dedupe_key(
            board_id, params.group_id, params.item_name, params.column_values
        )
        existing = await ctx.resources.find(SYSTEM, "item", key=key)
        if existing is not None:
            item = (
                await self._still_there(ctx, credential, existing, params)
                if params.verify_existing
                else {}
            )
            if item is not None:
                ctx.log.info(
                    "monday.create-item: item %s exists already (key %s)", existing.external_id, key
                )
                return ActionResult.succeeded(
                    {
                        "id": existing.external_id,
                        "name": item.get("name", params.item_name),
                        "url": item.get("url", existing.url),
                        "boardId": board_id,
                        "groupId": (item.get("group") or {}).get("id", params.group_id),
                        "created": False,
                        "dedupeKey": key,
                    },
                    links=(existing,),
                )
        data = await graphql(
            ctx,
            credential,
            CREATE_ITEM,
            {
                "boardId": board_id,
                "groupId": params.group_id,
                "itemName": params.item_name,
                "columnValues": (
                    json.dumps(params.column_values) if params.column_values is not None else None
                ),
                "createLabels": params.create_labels_if_missing,
            },
            timeout=params.timeout_seconds,
        )
        created = data.get("create_item") or {}
        item_id = str(created.get("id") or "")
        if not item_id:
            return ActionResult.failed(
                "monday.com did not return the new item's id", code="monday_invalid_response"
            )
        url = created.get("url")
        return ActionResult.succeeded(
            {
                "id": item_id,
                "name": created.get("name", params.item_name),
                "url": url,
                "boardId": board_id,
                "groupId": (created.get("group") or {}).get("id", params.group_id),
                "created": True,
                "dedupeKey": key,
            },
            links=(ResourceLink(SYSTEM, "item", item_id, url, key),),
        )

    async def _still_there(
        self, ctx: ActionContext, credential: Credential, link: ResourceLink, params: Params
    ) -> dict[str, Any] | None:
        data = await graphql(
            ctx, credential, ITEM_STATE, {"ids": [link.external_id]}, timeout=params.timeout_seconds
        )
        for item in data.get("items") or []:
            if str(item.get("id")) == link.external_id and item.get("state") != "deleted":
                return item
        return None
