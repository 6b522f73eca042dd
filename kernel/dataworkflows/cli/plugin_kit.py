"""``dataworkflows plugin new NAME``: scaffold a plugin distribution.

The templates are files shipped inside the kernel package (``cli/scaffold/``): ``common/``
for every plugin, ``action/`` or ``trigger/`` for the example it starts from. Each
``*.tmpl`` file is rendered with :class:`string.Template` (``${name}``; ``$$`` for a
dollar sign), and a path segment ``PACKAGE`` becomes the import package's name. Nothing
is written unless every check passed, and a failure while writing removes what was
written, so a bad call leaves the disk as it was.
"""

from __future__ import annotations

import re
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

import click

from dataworkflows import __version__

#: a plugin name: lowercase words of letters and digits joined by ``-`` or ``_``
NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
TEMPLATES = Path(__file__).with_name("scaffold")
KINDS = ("action", "trigger")


class ScaffoldError(ValueError):
    """A bad name or target: nothing was written."""


@dataclass(frozen=True)
class Scaffold:
    """What ``plugin new`` writes, decided before anything is written."""

    name: str
    kind: str
    target: Path

    @property
    def package(self) -> str:
        return "dataworkflows_" + self.name.replace("-", "_")

    @property
    def values(self) -> dict[str, str]:
        """The template variables."""
        summary = {
            "action": f"the `{self.name}.greet` action.",
            "trigger": f"the `{self.name}.every` trigger type.",
        }[self.kind]
        return {
            "name": self.name,
            "dist": "dataworkflows-" + self.name.replace("_", "-"),
            "package": self.package,
            "action_type": f"{self.name}.greet",
            "trigger_type": f"{self.name}.every",
            "summary": summary,
            "kernel_version": __version__,
        }

    def files(self) -> dict[Path, str]:
        """Relative path → rendered text of every file of the new plugin."""
        out: dict[Path, str] = {}
        for root in (TEMPLATES / "common", TEMPLATES / self.kind):
            for template in sorted(root.rglob("*.tmpl")):
                parts = template.relative_to(root).with_suffix("").parts
                relative = Path(*(p.replace("PACKAGE", self.package) for p in parts))
                text = string.Template(template.read_text(encoding="utf-8"))
                out[relative] = text.substitute(self.values)
        return out


def plan(name: str, kind: str, parent: Path) -> Scaffold:
    """Check ``name`` and the target folder; raises :class:`ScaffoldError`."""
    if not NAME.match(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters and digits, starting with a "
            "letter, words joined by '-' or '_' (e.g. 'acme-crm')"
        )
    if kind not in KINDS:
        raise ScaffoldError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    if parent.exists() and not parent.is_dir():
        raise ScaffoldError(f"--dir {parent} is not a folder")
    target = parent / ("dataworkflows-" + name.replace("_", "-"))
    if target.exists():
        raise ScaffoldError(f"{target} already exists: choose another name or --dir")
    return Scaffold(name, kind, target)


def write(scaffold: Scaffold) -> list[Path]:
    """Write the plugin's files under ``scaffold.target``; returns their paths. On an
    error nothing stays behind."""
    files = scaffold.files()
    created_parent = not scaffold.target.parent.exists()
    written: list[Path] = []
    try:
        scaffold.target.mkdir(parents=True)
        for relative, text in files.items():
            path = scaffold.target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        shutil.rmtree(scaffold.target, ignore_errors=True)
        if created_parent:
            shutil.rmtree(scaffold.target.parent, ignore_errors=True)
        raise ScaffoldError(f"cannot write {scaffold.target}: {exc}") from None
    return written


@click.group("plugin")
def plugin_group() -> None:
    """Plugin author tools: scaffold a plugin distribution."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--action", "as_action", is_flag=True, help="Start from an example action (default).")
@click.option("--trigger", "as_trigger", is_flag=True, help="Start from an example trigger type.")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=True, dir_okay=True, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder in which to create dataworkflows-NAME/.",
)
def new(name: str, as_action: bool, as_trigger: bool, parent: Path) -> None:
    """Create dataworkflows-NAME/: a plugin distribution whose tests pass at once.

    It holds a pyproject.toml with the `dataworkflows` entry point, the package
    dataworkflows_NAME with a working example action (NAME.greet) or time-based trigger
    type (NAME.every), a README and tests that use the dataworkflows.testing fixtures.
    """
    if as_action and as_trigger:
        raise click.ClickException("--action and --trigger exclude each other: choose one")
    try:
        scaffold = plan(name, "trigger" if as_trigger else "action", parent)
        written = write(scaffold)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {scaffold.target} ({len(written)} files):")
    for path in written:
        click.echo(f"  {path.relative_to(scaffold.target)}")
    click.echo(f"next: cd {scaffold.target} && pip install -e '.[test]' && pytest")
