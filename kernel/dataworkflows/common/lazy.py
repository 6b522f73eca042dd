"""Names a package exports but imports only on first use (PEP 562 module ``__getattr__``).

The kernel's ``dataworkflows`` package uses it so that ``from dataworkflows import hookimpl``
does not load pydantic; a plugin uses it (``from dataworkflows import lazy_attributes``) to
keep its entry-point module cheap while its classes stay importable from the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any


def lazy_attributes(
    package: str,
    default: str,
    *,
    where: Mapping[str, str] | None = None,
    names: Collection[str] | None = None,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from its module when first asked for.

    Args:
        package: the package's ``__name__`` (for the error message).
        default: the module that defines the names ``where`` does not place.
        where: ``{name: module}`` for names defined elsewhere.
        names: the only names served (None: any name but dunders).

    Usage, in a package's ``__init__.py``::

        __getattr__ = lazy_attributes(__name__, "dataworkflows_hello.action")
    """
    places = dict(where or {})

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(places.get(name, default)), name)

    return __getattr__
