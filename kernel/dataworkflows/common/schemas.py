"""The JSON schemas the kernel publishes for plugin models.

:meth:`Action.params_schema <dataworkflows.actions.Action.params_schema>` and
:meth:`TriggerType.config_schema <dataworkflows.triggers.TriggerType.config_schema>` build
them; ``GET /api/v1/plugins`` and ``dataworkflows plugins --json`` show them to workflow
authors. They are pydantic's JSON schemas (by alias, validation mode) with defaults that
read better than pydantic's:

* the model's ``title``: the plugin's own (``model_config["title"]``) if it gives one, else
  the caller's default (``"core.echo parameters"``), not the class name (``"Params"``);
* a property's ``title``: its JSON name in words (``failAttempts`` → ``"Fail attempts"``),
  not pydantic's ``"Failattempts"``; a field's own ``Field(title=...)`` is kept;
* descriptions in Markdown: the line breaks of a wrapped docstring are joined (blank lines
  and list items, ``- `` / ``* `` / ``1. ``, stay) and RST literals (````x````) become code
  spans (```x```).

Descriptions are the plugin's: the model's docstring and each field's docstring (with
``use_attribute_docstrings=True``) or ``Field(description=...)``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

__all__ = ["PluginSchemaGenerator", "markdown", "model_schema"]

# a lower-case letter or digit followed by a capital, or an acronym followed by a word
_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_RST_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_LIST_ITEM = re.compile(r"\s*([-*]|\d+[.)])\s")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
#: keywords whose values are data (a default, an example), not schemas
_DATA_KEYWORDS = frozenset({"default", "examples", "const", "enum"})
#: keywords whose values map names to schemas
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


class PluginSchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON schema generator with property titles in words."""

    def get_title_from_name(self, name: str) -> str:
        """``failAttempts`` / ``fail_attempts`` → ``"Fail attempts"``; acronyms
        (``"URL"``) keep their capitals."""
        words = _WORD_BOUNDARY.sub(" ", name).replace("_", " ").split()
        if not words:
            return super().get_title_from_name(name)
        words = [w if len(w) > 1 and w.isupper() else w.lower() for w in words]
        title = " ".join(words)
        return title[0].upper() + title[1:]


def markdown(text: str) -> str:
    """A docstring as a Markdown description: wrapped lines joined, RST literals as code."""
    text = _RST_LITERAL.sub(r"`\1`", text.strip())
    paragraphs = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not _LIST_ITEM.match(line):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _markdown_descriptions(schema: Any) -> None:
    """Rewrite every ``description`` of ``schema`` and its sub-schemas in place."""
    if isinstance(schema, list):
        for item in schema:
            _markdown_descriptions(item)
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            schema[key] = markdown(value)
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            for sub in value.values():
                _markdown_descriptions(sub)
        elif key not in _DATA_KEYWORDS:
            _markdown_descriptions(value)


def model_schema(model: type[BaseModel], default_title: str) -> dict[str, Any]:
    """The published JSON schema of a plugin's pydantic ``model``.

    Args:
        model: an action's ``Params`` or a trigger type's ``Config``.
        default_title: the schema's ``title`` unless the model names one itself
            (``model_config["title"]``, a ``model_title_generator`` or ``json_schema_extra``).
    Returns: a new dict.
    """
    schema = model.model_json_schema(schema_generator=PluginSchemaGenerator)
    if not model.model_config.get("title") and schema.get("title") in (None, model.__name__):
        schema["title"] = default_title
    _markdown_descriptions(schema)
    return schema
