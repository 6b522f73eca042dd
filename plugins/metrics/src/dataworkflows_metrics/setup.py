"""Where this process keeps its metrics: the settings, and ``prometheus_client``'s
multi-process mode (one directory of mmap files per host, summed at scrape).

Read once per process, before the first metric exists: ``prometheus_client`` chooses how a
value is stored when the value is created, so the directory cannot change afterwards.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
from dataclasses import dataclass
from functools import cache

#: ``DATAWORKFLOWS_METRICS``: ``off`` (or ``0``, ``false``, ``no``) records nothing
ENABLED_VARIABLE = "DATAWORKFLOWS_METRICS"
#: ``DATAWORKFLOWS_METRICS_DIR``: the multi-process directory (else PROMETHEUS_MULTIPROC_DIR)
DIR_VARIABLE = "DATAWORKFLOWS_METRICS_DIR"
PROMETHEUS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_OFF = {"off", "0", "false", "no"}
_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


class MetricsSettingError(ValueError):
    """A metrics setting cannot be used (e.g. the directory is not a writable folder)."""


@dataclass(frozen=True)
class MetricsConfig:
    """The plugin's settings, as this process read them."""

    enabled: bool
    #: the multi-process directory, or None (this process reports only itself)
    directory: str | None


def read_config(environ: os._Environ[str] | dict[str, str] | None = None) -> MetricsConfig:
    """The settings from the environment (see the plugin's README)."""
    env = os.environ if environ is None else environ
    enabled = env.get(ENABLED_VARIABLE, "on").strip().lower() not in _OFF
    directory = env.get(DIR_VARIABLE) or env.get(PROMETHEUS_DIR_VARIABLE) or None
    return MetricsConfig(enabled, directory)


@cache
def config() -> MetricsConfig:
    """This process's settings, read on first use and then fixed; in multi-process mode
    the directory is checked and handed to ``prometheus_client`` before any metric is
    made, and this process's live-gauge files are removed when it exits."""
    current = read_config()
    if current.enabled and current.directory:
        directory = current.directory
        check_directory(directory)
        os.environ[PROMETHEUS_DIR_VARIABLE] = directory
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client was imported before the variable was set
            values.ValueClass = values.MultiProcessValue()
        atexit.register(_mark_dead, os.getpid(), directory)
    return current


def check_directory(directory: str) -> None:
    """Raise :class:`MetricsSettingError` unless ``directory`` is a writable folder."""
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise MetricsSettingError(
            f"{DIR_VARIABLE}={directory!r}: not a writable directory (create it, empty, "
            "before starting the processes that share it)"
        )


def _mark_dead(pid: int, directory: str) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)


def remove_dead_processes(directory: str) -> list[int]:
    """``mark_process_dead`` for every process whose live-gauge files are in ``directory``
    but which no longer exists (killed without exiting cleanly); returns their pids."""
    dead = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        match = _LIVE_FILE.search(os.path.basename(path))
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        _mark_dead(pid, directory)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
