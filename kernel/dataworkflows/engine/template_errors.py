"""The errors of templates and conditions (compiling, rendering, going over budget)."""

from __future__ import annotations


class TemplateError(Exception):
    """A template could not be compiled or rendered; ``path`` says which parameter."""

    code = "template_error"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class TemplateBudgetExceeded(TemplateError):
    """An evaluation went over its work budget (operations, size, time, memory, depth)."""

    code = "template_budget_exceeded"


__all__ = ["TemplateBudgetExceeded", "TemplateError"]
