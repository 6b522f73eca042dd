"""A local monday.com API v2 (GraphQL over ``POST /v2``) for the connector's tests.

It answers the operations the connector sends, recognised by their root fields
(``boards { columns }``, ``boards { items_page }``, ``next_items_page``, ``create_item``,
``items``), with the real shapes: ``{"data": ..., "account_id", "extensions": {"request_id"}}``;
application errors as HTTP 200 with an ``errors`` array (``message``, ``locations``,
``path``, ``extensions.code``); missing/invalid tokens as HTTP 401; rate and complexity
limits as HTTP 429 with ``Retry-After`` and ``extensions.retry_in_seconds``. It checks the
``Authorization`` and ``API-Version`` headers, ``items_page`` limits (max 500),
``query_params`` rules (column ids, operators, ``compare_value``), cursors, and that
``column_values`` is a JSON *string* as the ``JSON`` scalar requires.

``items_page`` rules compare values the way monday documents it per column type
(developer.monday.com, "Filter by the status column" and the other column-type pages):

* ``status``: ``any_of`` / ``not_any_of`` compare the label's *index* (from the column's
  ``settings_str``; ``5`` stands for a blank value), so a label's text matches nothing —
  silently, as on monday; ``contains_terms`` compares the label's text; ``is_empty`` /
  ``is_not_empty``.
* ``dropdown``: ``any_of`` / ``not_any_of`` compare label *ids*; ``contains_text`` /
  ``not_contains_text`` the labels' text; ``is_empty`` / ``is_not_empty``.
* ``text`` / ``name``: ``any_of`` / ``not_any_of`` the full text (``""`` is blank), the
  text operators; ``numbers``: the comparisons and ``between``.

An operator monday does not document for a column type is answered with an error (what
monday really answers there is not documented; an error makes a test fail loudly).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

API_TOKEN = "eyJhbGciOiJIUzI1NiJ9.monday-canary+/=token"
OPERATORS = {
    "any_of",
    "not_any_of",
    "is_empty",
    "is_not_empty",
    "greater_than",
    "greater_than_or_equals",
    "lower_than",
    "lower_than_or_equal",
    "between",
    "contains_text",
    "not_contains_text",
    "contains_terms",
    "starts_with",
    "ends_with",
    "within_the_next",
    "within_the_last",
}
STATUSES = ["Working on it", "Stuck", "Done"]
#: monday's default status labels: index -> text (``5`` is the blank label)
STATUS_LABELS = {"0": "Working on it", "1": "Done", "2": "Stuck"}
BLANK_STATUS = 5
DROPDOWN_LABELS = [
    {"id": 1, "name": "Backend"},
    {"id": 2, "name": "Frontend"},
    {"id": 3, "name": "Docs"},
]
AREAS = [["Backend"], ["Frontend", "Docs"], []]
#: which operators monday documents for which column type
SUPPORTED = {
    "status": {"any_of", "not_any_of", "is_empty", "is_not_empty", "contains_terms"},
    "dropdown": {
        "any_of",
        "not_any_of",
        "is_empty",
        "is_not_empty",
        "contains_text",
        "not_contains_text",
    },
}


def _error(
    message: str, code: str, path: list[str] | None = None, **extensions: Any
) -> dict[str, Any]:
    return {
        "message": message,
        "locations": [{"line": 2, "column": 3}],
        "path": path or [],
        "extensions": {"code": code, **extensions},
    }


class FakeMonday:
    def __init__(self, token: str = API_TOKEN) -> None:
        self.token = token
        #: column id -> (title, type, settings)
        self.columns: dict[str, tuple[str, str, dict[str, Any]]] = {
            "name": ("Name", "name", {}),
            "status": (
                "Status",
                "status",
                {"labels": dict(STATUS_LABELS), "labels_colors": {"5": {"color": "#c4c4c4"}}},
            ),
            "text": ("Notes", "text", {}),
            "numbers": ("Estimate", "numbers", {}),
            "dropdown": ("Area", "dropdown", {"labels": list(DROPDOWN_LABELS)}),
        }
        self.groups = {"topics": "Group Title", "new_group": "New Group"}
        self.board_id = "1234567890"
        self.items: dict[str, dict[str, Any]] = {}
        for n in range(1, 8):
            self._add_item(
                f"Task {n}",
                "topics" if n % 2 else "new_group",
                {
                    "status": STATUSES[n % 3],
                    "text": f"note {n}",
                    "numbers": str(n * 10),
                    "dropdown": AREAS[n % 3],
                },
            )
        self.calls: list[dict[str, Any]] = []
        self.queued: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self.cursors: dict[str, list[str]] = {}
        self.server: TestServer | None = None

    # -- test helpers ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v2"))

    def queue(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self.queued.append((status, body, headers or {}))

    def complexity_exhausted(self, retry_in_seconds: int = 0) -> None:
        self.queue(
            429,
            {
                "errors": [
                    {
                        "message": "Complexity budget exhausted",
                        "extensions": {
                            "code": "COMPLEXITY_BUDGET_EXHAUSTED",
                            "retry_in_seconds": retry_in_seconds,
                        },
                    }
                ],
                "account_id": 1234567,
            },
            {"Retry-After": str(retry_in_seconds)},
        )

    def operations(self) -> list[str]:
        return [c["operation"] for c in self.calls]

    # -- the data -------------------------------------------------------------------------

    def status_index(self, label: str) -> int | None:
        """The index of a status label on the board (None: no such label)."""
        labels = self.columns["status"][2]["labels"]
        return next((int(i) for i, text in labels.items() if text == label), None)

    def dropdown_ids(self, names: list[str]) -> list[int]:
        labels = self.columns["dropdown"][2]["labels"]
        return [label["id"] for label in labels if label["name"] in names]

    def _add_item(self, name: str, group: str, values: dict[str, Any]) -> dict[str, Any]:
        item_id = str(9_000_000_000 + len(self.items) + 1)
        item = {
            "id": item_id,
            "name": name,
            "state": "active",
            "group": group,
            "values": dict(values),
        }
        self.items[item_id] = item
        return item

    def _item_json(self, item: dict[str, Any], column_ids: list[str] | None) -> dict[str, Any]:
        values = []
        for cid in self.columns:
            if cid == "name" or (column_ids is not None and cid not in column_ids):
                continue
            text = item["values"].get(cid, "")
            if cid == "status":
                raw = (
                    json.dumps({"index": self.status_index(text), "post_id": None})
                    if text
                    else None
                )
            elif cid == "dropdown":
                raw = json.dumps({"ids": self.dropdown_ids(text)}) if text else None
                text = ", ".join(text)
            else:
                raw = json.dumps(text) if text else None
            values.append({"id": cid, "text": text, "value": raw})
        return {
            "id": item["id"],
            "name": item["name"],
            "url": f"https://fake-account.monday.com/boards/{self.board_id}/pulses/{item['id']}",
            "group": {"id": item["group"], "title": self.groups[item["group"]]},
            "column_values": values,
        }

    def _matches(self, item: dict[str, Any], rule: dict[str, Any]) -> bool:
        column, op, value = rule["column_id"], rule["operator"], rule["compare_value"]
        kind = self.columns[column][1]
        if kind == "status":
            return self._matches_status(item["values"].get(column, ""), op, value)
        if kind == "dropdown":
            return self._matches_dropdown(item["values"].get(column) or [], op, value)
        text = item["name"] if column == "name" else item["values"].get(column, "")
        if op == "any_of":
            return text in [str(v) for v in value]
        if op == "not_any_of":
            return text not in [str(v) for v in value]
        if op == "is_empty":
            return text == ""
        if op == "is_not_empty":
            return text != ""
        if op == "contains_text":
            return str(value).lower() in text.lower()
        if op == "not_contains_text":
            return str(value).lower() not in text.lower()
        if op == "starts_with":
            return text.startswith(str(value))
        if op == "ends_with":
            return text.endswith(str(value))
        number = float(text or 0)
        first = float(value[0] if isinstance(value, list) else value)
        if op == "greater_than":
            return number > first
        if op == "greater_than_or_equals":
            return number >= first
        if op == "lower_than":
            return number < first
        if op == "lower_than_or_equal":
            return number <= first
        if op == "between":
            return float(value[0]) <= number <= float(value[1])
        return False

    @staticmethod
    def _integers(value: Any) -> set[int]:
        """The index/id compare values of a rule; anything else (a label's text) matches
        no label, as on monday."""
        values = value if isinstance(value, list) else [value]
        out = set()
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool):
                out.add(v)
            elif isinstance(v, str) and v.strip().isdigit():
                out.add(int(v))
        return out

    def _matches_status(self, label: str, op: str, value: Any) -> bool:
        if op in ("is_empty", "is_not_empty"):
            return (label == "") == (op == "is_empty")
        if op == "contains_terms":
            return bool(label) and str(value).lower() in label.lower()
        index = self.status_index(label) if label else BLANK_STATUS
        found = index in self._integers(value)
        return found if op == "any_of" else not found

    def _matches_dropdown(self, names: list[str], op: str, value: Any) -> bool:
        if op in ("is_empty", "is_not_empty"):
            return (not names) == (op == "is_empty")
        if op in ("contains_text", "not_contains_text"):
            found = any(str(value).lower() in name.lower() for name in names)
            return found if op == "contains_text" else not found
        found = bool(set(self.dropdown_ids(names)) & self._integers(value))
        return found if op == "any_of" else not found

    # -- the endpoint ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2", self.endpoint)
        return app

    async def endpoint(self, request: web.Request) -> web.Response:
        raw = await request.read()
        call: dict[str, Any] = {"headers": dict(request.headers), "operation": "?"}
        self.calls.append(call)
        auth = request.headers.get("Authorization")
        if not auth:
            return web.json_response(
                {
                    "errors": [
                        {
                            "message": "Unauthorized",
                            "extensions": {"code": "UNAUTHENTICATED", "status_code": 401},
                        }
                    ]
                },
                status=401,
            )
        if auth.removeprefix("Bearer ") != self.token:
            return web.json_response(
                {
                    "errors": [
                        {
                            "message": "Not Authenticated",
                            "extensions": {"code": "UNAUTHENTICATED", "status_code": 401},
                        }
                    ]
                },
                status=401,
            )
        version = request.headers.get("API-Version", "")
        if not re.fullmatch(r"\d{4}-\d{2}", version):
            return web.json_response(
                {
                    "errors": [
                        _error(f"Invalid API version: {version!r}", "InvalidVersionException")
                    ]
                },
                status=400,
            )
        try:
            body = json.loads(raw)
            query, variables = body["query"], body.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"errors": [_error("Request body is not valid JSON", "JsonParseException")]},
                status=400,
            )
        call.update(query=query, variables=variables)
        if "settings_str" in query:
            call["operation"] = "columns"
        elif "next_items_page" in query:
            call["operation"] = "next_items_page"
        elif "items_page" in query:
            call["operation"] = "items_page"
        elif "create_item" in query:
            call["operation"] = "create_item"
        elif re.search(r"\bitems\s*\(", query):
            call["operation"] = "items"
        if self.queued:
            status, canned, headers = self.queued.pop(0)
            return web.json_response(canned, status=status, headers=headers)
        handler = {
            "columns": self._columns,
            "items_page": self._items_page,
            "next_items_page": self._next_items_page,
            "create_item": self._create_item,
            "items": self._items,
        }.get(call["operation"])
        if handler is None:
            return self._reply(errors=[_error("Parse error on query", "GRAPHQL_PARSE_FAILED")])
        return handler(variables)

    def _reply(self, data: Any = None, errors: list[dict[str, Any]] | None = None) -> web.Response:
        body: dict[str, Any] = {"data": data, "account_id": 1234567}
        if errors:
            body["errors"] = errors
        body["extensions"] = {"request_id": str(uuid.uuid4())}
        return web.json_response(body)

    def _page(self, ids: list[str], limit: int, column_ids: list[str] | None) -> dict[str, Any]:
        page, rest = ids[:limit], ids[limit:]
        cursor = None
        if rest:
            cursor = f"MSw5NzI4MDA5MDAs{uuid.uuid4().hex}"
            self.cursors[cursor] = rest
        return {
            "cursor": cursor,
            "items": [self._item_json(self.items[i], column_ids) for i in page],
        }

    def _check_limit(self, limit: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(limit, int) or not 1 <= limit <= 500:
            return [
                _error("The limit argument must be between 1 and 500", "INVALID_ARGUMENT", [path])
            ]
        return []

    def _columns(self, v: dict[str, Any]) -> web.Response:
        if str(v.get("boardId")) != self.board_id:
            return self._reply({"boards": []})
        wanted = v.get("columnIds")
        columns = [
            {"id": cid, "title": title, "type": kind, "settings_str": json.dumps(settings)}
            for cid, (title, kind, settings) in self.columns.items()
            if wanted is None or cid in wanted
        ]
        return self._reply({"boards": [{"id": self.board_id, "columns": columns}]})

    def _items_page(self, v: dict[str, Any]) -> web.Response:
        if str(v.get("boardId")) != self.board_id:
            return self._reply({"boards": []})
        errors = self._check_limit(v.get("limit"), "items_page")
        params = v.get("queryParams") or {}
        rules = params.get("rules") or []
        for index, rule in enumerate(rules):
            if rule.get("operator", "any_of") not in OPERATORS:
                errors.append(
                    _error(
                        f"Variable $queryParams got invalid value {rule.get('operator')!r} at "
                        f"'queryParams.rules[{index}].operator'; Expected type "
                        "'ItemsQueryRuleOperator'",
                        "GRAPHQL_VALIDATION_FAILED",
                    )
                )
            elif "compare_value" not in rule:
                errors.append(
                    _error(
                        f"Variable $queryParams got invalid value at 'queryParams.rules[{index}]'; "
                        "Field 'compare_value' of required type 'CompareValue!' was not provided.",
                        "GRAPHQL_VALIDATION_FAILED",
                    )
                )
            elif rule["column_id"] not in self.columns:
                errors.append(
                    _error(
                        "Column not found",
                        "InvalidColumnIdException",
                        ["boards", "0", "items_page"],
                        error_data={"column_id": rule["column_id"]},
                        status_code=200,
                    )
                )
            elif rule.get("operator", "any_of") not in SUPPORTED.get(
                self.columns[rule["column_id"]][1], OPERATORS
            ):
                kind = self.columns[rule["column_id"]][1]
                errors.append(
                    _error(
                        f"Operator {rule.get('operator', 'any_of')} is not supported for a "
                        f"{kind} column",
                        "INVALID_ARGUMENT",
                        ["boards", "0", "items_page"],
                        error_data={"column_id": rule["column_id"], "column_type": kind},
                    )
                )
        if params.get("operator", "and") not in ("and", "or"):
            errors.append(_error("invalid query operator", "GRAPHQL_VALIDATION_FAILED"))
        if errors:
            return self._reply(None, errors)
        ids = [i for i, item in self.items.items() if item["state"] == "active"]
        if rules:
            combine = all if params.get("operator", "and") == "and" else any
            ids = [i for i in ids if combine(self._matches(self.items[i], r) for r in rules)]
        page = self._page(ids, v["limit"], v.get("columnIds"))
        return self._reply(
            {"boards": [{"id": self.board_id, "name": "Roadmap", "items_page": page}]}
        )

    def _next_items_page(self, v: dict[str, Any]) -> web.Response:
        errors = self._check_limit(v.get("limit"), "next_items_page")
        rest = self.cursors.pop(str(v.get("cursor")), None)
        if rest is None:
            errors.append(
                _error(
                    "CursorException: cursor is invalid or expired",
                    "CursorExpiredError",
                    ["next_items_page"],
                )
            )
        if errors:
            return self._reply(None, errors)
        assert rest is not None
        return self._reply({"next_items_page": self._page(rest, v["limit"], v.get("columnIds"))})

    def _create_item(self, v: dict[str, Any]) -> web.Response:
        if str(v.get("boardId")) != self.board_id:
            return self._reply(
                {"create_item": None},
                [
                    _error(
                        "Board not found",
                        "InvalidBoardIdException",
                        ["create_item"],
                        error_data={"board_id": v.get("boardId")},
                    )
                ],
            )
        group = v.get("groupId") or "topics"
        if group not in self.groups:
            return self._reply(
                {"create_item": None},
                [
                    _error(
                        "Group not found",
                        "InvalidGroupIdException",
                        ["create_item"],
                        error_data={"group_id": group},
                    )
                ],
            )
        name = v.get("itemName")
        if not isinstance(name, str) or not name:
            return self._reply(
                None,
                [
                    _error(
                        "Variable $itemName of required type String! was not provided.",
                        "GRAPHQL_VALIDATION_FAILED",
                    )
                ],
            )
        raw_values = v.get("columnValues")
        values: dict[str, Any] = {}
        if raw_values is not None:
            if not isinstance(raw_values, str):
                return self._reply(
                    {"create_item": None},
                    [
                        _error(
                            "invalid value, please check our API documentation for the correct "
                            "data structure for this column.",
                            "ColumnValueException",
                            ["create_item"],
                        )
                    ],
                )
            parsed = json.loads(raw_values)
            for column, value in parsed.items():
                if column not in self.columns:
                    return self._reply(
                        {"create_item": None},
                        [
                            _error(
                                "This column ID doesn't exist for the board",
                                "InvalidColumnIdException",
                                ["create_item"],
                                error_data={"column_id": column},
                            )
                        ],
                    )
                if isinstance(value, dict):
                    values[column] = value.get("labels", value.get("label", ""))
                else:
                    values[column] = str(value)
        item = self._add_item(name, group, values)
        created = self._item_json(item, [])
        return self._reply(
            {
                "create_item": {
                    "id": item["id"],
                    "name": item["name"],
                    "url": created["url"],
                    "board": {"id": self.board_id},
                    "group": {"id": group},
                }
            }
        )

    def _items(self, v: dict[str, Any]) -> web.Response:
        found = []
        for item_id in v.get("ids") or []:
            item = self.items.get(str(item_id))
            if item is not None:
                body = self._item_json(item, [])
                found.append(
                    {
                        "id": item["id"],
                        "name": item["name"],
                        "url": body["url"],
                        "state": item["state"],
                        "board": {"id": self.board_id},
                        "group": {"id": item["group"]},
                    }
                )
        return self._reply({"items": found})


@pytest_asyncio.fixture
async def fake_monday() -> AsyncIterator[FakeMonday]:
    fake = FakeMonday()
    fake.server = TestServer(fake.app(), host="127.0.0.1")
    await fake.server.start_server()
    yield fake
    await fake.server.close()
