"""The filters of ``monday.get-items``: simple column filters (a list of rules or a
shorthand object) translated into ``items_page``'s ``query_params``, and status/dropdown
label texts translated into the indexes monday compares (see :mod:`dataworkflows_monday.actions`
for the parameters)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dataworkflows_monday.client import MondayError

OPERATORS = (
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
)
ALIASES = {
    "eq": "any_of",
    "=": "any_of",
    "in": "any_of",
    "ne": "not_any_of",
    "!=": "not_any_of",
    "not_in": "not_any_of",
    "gt": "greater_than",
    "gte": "greater_than_or_equals",
    "lt": "lower_than",
    "lte": "lower_than_or_equal",
    "contains": "contains_text",
    "not_contains": "not_contains_text",
    "empty": "is_empty",
    "not_empty": "is_not_empty",
}
LIST_OPERATORS = {"any_of", "not_any_of"}
#: column types whose any_of / not_any_of compare label indexes (status) or ids (dropdown)
LABEL_COLUMNS = frozenset({"status", "dropdown"})
#: monday's compare value for a blank status
BLANK_STATUS_INDEX = 5
NO_VALUE_OPERATORS = {"is_empty", "is_not_empty"}


class Filter(BaseModel):
    """One column filter, a rule of monday's ``items_page`` query: items whose column
    ``column`` compares with ``value`` by ``operator``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

    column: str = Field(min_length=1, max_length=200)
    """The column's id (e.g. ``status``, ``date4``), not its title."""
    operator: str = "any_of"
    """monday's operator (``any_of``, ``not_any_of``, ``is_empty``, ``is_not_empty``,
    ``greater_than``, ``greater_than_or_equals``, ``lower_than``, ``lower_than_or_equal``,
    ``between``, ``contains_text``, ``not_contains_text``, ``contains_terms``,
    ``starts_with``, ``ends_with``, ``within_the_next``, ``within_the_last``) or a short
    form (``eq``, ``ne``, ``in``, ``not_in``, ``gt``, ``gte``, ``lt``, ``lte``,
    ``contains``, ``not_contains``, ``empty``, ``not_empty``). Default: ``any_of``."""
    value: Any = None
    """What to compare with: a value or a list of values (``any_of`` / ``not_any_of``),
    ``[from, to]`` for ``between``, nothing for ``is_empty`` / ``is_not_empty``. Status
    and dropdown columns take label texts (``"Done"``), translated to the indexes monday
    compares; an unknown label fails the step."""
    compare_attribute: str | None = Field(default=None, alias="compareAttribute")
    """The attribute of the column to compare, for column types that need one (monday's
    ``compare_attribute``). Default: none."""

    @field_validator("operator")
    @classmethod
    def _known(cls, operator: str) -> str:
        if "{{" in operator:
            return operator
        name = ALIASES.get(operator.lower(), operator.lower())
        if name not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r} (use one of {', '.join(OPERATORS)})")
        return name


class OrderBy(BaseModel):
    """Sort the items by one column."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    column: str = Field(min_length=1, max_length=200)
    """The id of the column to sort by (e.g. ``date4``)."""
    direction: Literal["asc", "desc"] = "asc"
    """``asc`` (default) or ``desc``."""


def translate_filters(
    filters: list[Filter] | dict[str, Any] | None,
    match: str = "and",
    order_by: list[OrderBy] | None = None,
) -> dict[str, Any] | None:
    """Simple filters → an ``ItemsQuery`` (``query_params``) for ``items_page``."""
    if isinstance(filters, dict):
        filters = [Filter(column=column, value=value) for column, value in filters.items()]
    rules = []
    for f in filters or []:
        operator = ALIASES.get(f.operator, f.operator)
        if operator in NO_VALUE_OPERATORS:
            value: Any = []
        elif operator in LIST_OPERATORS:
            value = f.value if isinstance(f.value, list) else [f.value]
        elif isinstance(f.value, str) and "{{" in f.value:
            value = f.value  # a template: checked again once rendered
        elif operator == "between":
            if not (isinstance(f.value, list) and len(f.value) == 2):
                raise ValueError(f"filter on {f.column!r}: between needs [from, to]")
            value = f.value
        else:
            if f.value is None:
                raise ValueError(f"filter on {f.column!r}: {operator} needs a value")
            value = f.value
        rule: dict[str, Any] = {"column_id": f.column, "compare_value": value, "operator": operator}
        if f.compare_attribute:
            rule["compare_attribute"] = f.compare_attribute
        rules.append(rule)
    if not rules and not order_by:
        return None
    query: dict[str, Any] = {}
    if rules:
        query["rules"] = rules
        query["operator"] = match
    if order_by:
        query["order_by"] = [{"column_id": o.column, "direction": o.direction} for o in order_by]
    return query


def _label_values(column: dict[str, Any]) -> dict[str, int]:
    """A status or dropdown column's labels, text -> index (status) or id (dropdown), from
    its ``settings_str`` (status: ``{"labels": {"1": "Done"}}``; dropdown:
    ``{"labels": [{"id": 1, "name": "Cookie"}]}``; either shape is understood)."""
    try:
        settings = json.loads(column.get("settings_str") or "{}")
    except ValueError:
        settings = {}
    raw = settings.get("labels") if isinstance(settings, dict) else None
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [(e.get("id"), e.get("name")) for e in raw if isinstance(e, dict)]
    else:
        pairs = []
    labels: dict[str, int] = {}
    for key, name in pairs:
        if isinstance(name, str) and name and str(key).lstrip("-").isdigit():
            labels.setdefault(name, int(key))
    return labels


def _label_index(column: dict[str, Any], labels: dict[str, int], value: Any) -> int | None:
    """The index / id monday compares for one filter value (None: no such label)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text in labels:
        return labels[text]
    folded = [index for name, index in labels.items() if name.casefold() == text.casefold()]
    if len(folded) == 1:
        return folded[0]
    if text == "" and column.get("type") == "status":
        return BLANK_STATUS_INDEX
    if text.isdigit() and int(text) in labels.values():
        return int(text)
    return None


def needs_labels(rule: dict[str, Any]) -> bool:
    return (
        rule["operator"] in LIST_OPERATORS
        and "compare_attribute" not in rule
        and isinstance(rule["compare_value"], list)
        and any(not isinstance(v, int) or isinstance(v, bool) for v in rule["compare_value"])
    )


def label_rules(
    query: dict[str, Any] | None, columns: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """``query`` with the label texts of status/dropdown ``any_of``/``not_any_of`` rules
    replaced by the indexes/ids monday compares; ``columns`` maps a column id to its
    ``{"id", "title", "type", "settings_str"}``. Raises :class:`MondayError`
    (``monday_unknown_label``, permanent) for a label the column does not have."""
    if not query or not query.get("rules"):
        return query
    rules = []
    for rule in query["rules"]:
        column = columns.get(rule["column_id"])
        if column is None or column.get("type") not in LABEL_COLUMNS or not needs_labels(rule):
            rules.append(rule)  # an unknown column is monday's to report
            continue
        labels = _label_values(column)
        indexes = []
        for value in rule["compare_value"]:
            index = _label_index(column, labels, value)
            if index is None:
                known = ", ".join(repr(name) for name in labels) or "none"
                raise MondayError(
                    f"column {rule['column_id']!r} ({column.get('type')} "
                    f"{column.get('title')!r}) has no label {value!r}; its labels: {known}",
                    code="monday_unknown_label",
                    details={
                        "column": rule["column_id"],
                        "columnType": column.get("type"),
                        "label": value,
                        "knownLabels": list(labels),
                    },
                )
            indexes.append(index)
        rules.append({**rule, "compare_value": indexes})
    return {**query, "rules": rules}
