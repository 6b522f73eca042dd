"""Checking what a client sends to create or change a trigger: its fields, its config
(against the trigger type's ``Config`` model, and for a time-based type whether a next
fire time can be computed) and its activation condition (it must compile). Problems are
collected, not raised one by one, so a 422 ``invalid_trigger`` lists them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from pydantic import ValidationError

from dataworkflows.common.clock import Clock
from dataworkflows.common.errors import Unprocessable
from dataworkflows.common.validation_messages import friendly_errors, json_path
from dataworkflows.engine.templating import TemplateEngine
from dataworkflows.triggers import TriggerType

CREATE_FIELDS = {"type", "config", "name", "enabled", "activationCondition"}
UPDATE_FIELDS = {"config", "name", "enabled", "activationCondition"}


def problem(path: str, code: str, message: str) -> dict[str, str]:
    return {"path": path, "code": code, "message": message}


def invalid_trigger(problems: list[dict[str, str]]) -> Unprocessable:
    return Unprocessable(
        f"the trigger has {len(problems)} problem(s)",
        code="invalid_trigger",
        details={"problems": problems},
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, ``null`` removes a key."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def check_fields(raw: Any, allowed: set[str], problems: list[dict[str, str]]) -> None:
    for name in sorted(set(raw) - allowed):
        problems.append(problem(f"$.{name}", "unknown_field", f"unknown field {name!r}"))
    if "name" in raw and raw["name"] is not None and not isinstance(raw["name"], str):
        problems.append(problem("$.name", "invalid_type", "name must be a string or null"))
    if "enabled" in raw and not isinstance(raw["enabled"], bool):
        problems.append(problem("$.enabled", "invalid_type", "enabled must be true or false"))
    if "config" in raw and not isinstance(raw["config"], dict):
        problems.append(problem("$.config", "invalid_type", "config must be a JSON object"))


def validate_config(
    cls: type[TriggerType], raw: Any, clock: Clock, problems: list[dict[str, str]]
) -> Any:
    """The validated config model, or None with the problems added."""
    try:
        config = cls.Config.model_validate(raw)
    except ValidationError as exc:
        for loc, message, _kind in friendly_errors(exc, cls.Config):
            problems.append(problem(json_path(loc, "$.config"), "invalid_config", message))
        return None
    if cls.time_based:
        try:
            cls.next_fire_time(config, clock.now())
        except Exception as exc:
            problems.append(problem("$.config", "invalid_config", f"{type(exc).__name__}: {exc}"))
            return None
    return config


def validate_condition(
    templates: TemplateEngine, source: Any, problems: list[dict[str, str]]
) -> None:
    if source is None:
        return
    if not isinstance(source, str) or not source.strip():
        problems.append(
            problem(
                "$.activationCondition",
                "invalid_condition",
                "activationCondition must be a non-empty string or null",
            )
        )
        return
    try:
        # the engine's (LRU-bounded) cache; an activation condition is an edge condition
        templates.compile_condition(source)
    except jinja2.TemplateSyntaxError as exc:
        problems.append(
            problem(
                "$.activationCondition",
                "invalid_condition",
                f"condition syntax error: {exc.message}",
            )
        )
