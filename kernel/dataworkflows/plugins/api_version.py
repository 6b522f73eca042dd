"""Which plugin-API versions a plugin accepts, and whether this kernel provides one of them.

A plugin declares what it needs with a module-level (or class-level) string in the object
its entry point names::

    dataworkflows_api = ">=1,<2"

The syntax is a subset of PEP 440 specifiers on ``MAJOR[.MINOR]`` versions: comma-separated
clauses of ``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=`` or ``~=``; ``==1.*`` matches every
1.x. It is parsed here rather than with ``packaging``, whose import alone costs start-up
(``dataworkflows --help`` loads every plugin) about as much as the rest of the CLI.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from dataworkflows.hookspecs import PLUGIN_API_VERSION

#: The attribute a plugin declares its requirement in.
DECLARATION = "dataworkflows_api"

_CLAUSE = re.compile(r"^\s*(>=|<=|==|!=|~=|>|<)\s*(\d+(?:\.\d+)?)(\.\*)?\s*$")


def declared_requirement(plugin: Any) -> Any:
    """The plugin's ``dataworkflows_api`` value, or None if it declares none.

    Read with :func:`inspect.getattr_static`, so that a lazy module ``__getattr__``
    (``lazy_attributes``) is not triggered into importing the plugin's classes.
    """
    return inspect.getattr_static(plugin, DECLARATION, None)


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def _matches(op: str, wanted: str, star: bool, have: tuple[int, int]) -> bool:
    version = _version(wanted)
    if star:  # "==1.*" / "!=1.*": the major version only
        if op not in ("==", "!="):
            raise ValueError(f"'{op}{wanted}.*': '.*' goes with == or != only")
        return (have[0] == version[0]) == (op == "==")
    if op == "~=":  # compatible release: ~=1.2 is >=1.2,<2
        if "." not in wanted:
            raise ValueError(f"'~={wanted}' needs MAJOR.MINOR")
        return have >= version and have[0] == version[0]
    return {
        ">=": have >= version,
        "<=": have <= version,
        ">": have > version,
        "<": have < version,
        "==": have == version,
        "!=": have != version,
    }[op]


def accepts(requirement: Any, version: str = PLUGIN_API_VERSION) -> bool:
    """Whether ``requirement`` (e.g. ``">=1,<2"``) accepts the plugin-API ``version``.

    Raises:
        ValueError: ``requirement`` is not a string of valid clauses; the message says why.
    """
    if not isinstance(requirement, str) or not requirement.strip():
        raise ValueError(
            f"{DECLARATION} must be a non-empty string like '>=1,<2', not {requirement!r}"
        )
    have = _version(version)
    result = True
    for clause in requirement.split(","):
        match = _CLAUSE.match(clause)
        if match is None:
            raise ValueError(
                f"{DECLARATION} = {requirement!r}: {clause.strip()!r} is not a clause like "
                "'>=1' or '<2.0'"
            )
        op, wanted, star = match.group(1), match.group(2), bool(match.group(3))
        result = _matches(op, wanted, star, have) and result  # check every clause
    return result


def incompatibility(plugin: Any, origin: str) -> str | None:
    """Why this kernel cannot load ``plugin`` (None: it can, or it declares nothing).

    Args:
        plugin: the object an entry point (or ``DATAWORKFLOWS_PLUGIN_MODULES``, or a test)
            registers.
        origin: how to name it in the message: the distribution and its version.
    """
    requirement = declared_requirement(plugin)
    if requirement is None:
        return None
    try:
        if accepts(requirement):
            return None
    except ValueError as exc:
        return f"plugin {origin} declares an invalid plugin-API requirement: {exc}"
    return (
        f"plugin {origin} needs plugin API {requirement} ({DECLARATION}), but this kernel "
        f"provides plugin API {PLUGIN_API_VERSION}: install a version of the plugin made "
        "for it, or remove the plugin"
    )
