"""The folder where prometheus-client's multiprocess mode keeps every worker's metric files: chosen, created
and emptied by the launcher before gunicorn forks, removed at exit when it is the default one.

Apart from metrics.py on purpose: importing metric definitions in multiprocess mode creates files in that
folder, and the launcher and gunicorn's master must not (the folder may be unusable, and the master's own
zero gauges would be counted as a live process's).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it
_DEFAULT_DIR_PREFIX = "clip-sagemaker-metrics-"


def default_dir(pid: int) -> str:
    """Where a server whose gunicorn master has this pid keeps its metric files, unless told otherwise."""
    return str(Path(tempfile.gettempdir()) / f"{_DEFAULT_DIR_PREFIX}{pid}")


def prepare_dir(configured: Optional[str], pid: int) -> str:
    """The metric files' folder, created and emptied of an earlier run's files (their counts would be added)."""
    folder = Path(configured or default_dir(pid))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    except OSError as exc:
        raise OSError(f"cannot use {folder} as the metrics folder (PROMETHEUS_MULTIPROC_DIR): "
                      f"{exc.strerror or exc}") from exc
    return str(folder)


def remove_if_default(folder: str, pid: int) -> None:
    """At the server's exit: the folder, if it is `default_dir`, which nobody else reads (a configured one
    stays: its owner may read it)."""
    if folder == default_dir(pid):
        shutil.rmtree(folder, ignore_errors=True)
