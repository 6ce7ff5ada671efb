"""What hardware this process may use, and how the server's workers and threads are laid out on it.

Counted without importing torch, so that `serve` can plan gunicorn's layout in milliseconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .settings import Settings


CGROUP_ROOT = Path("/sys/fs/cgroup")
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver exposes


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> Optional[float]:
    """The CPU quota of this container in cores, or None when unlimited (cgroup v2, then v1), read from
    the cgroup file system mounted at `root`."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus(affinity: Optional[int] = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on: its CPU affinity (`affinity` cores when given, else read), capped by
    the cgroup quota under `cgroup_root`."""
    if affinity is not None:
        cores = affinity
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


def visible_gpus(gpus_dir: Path = NVIDIA_GPUS_DIR) -> int:
    """NVIDIA GPUs the driver exposes (the entries of `gpus_dir`), narrowed by CUDA_VISIBLE_DEVICES."""
    try:
        present = len(list(gpus_dir.iterdir()))
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    names = [n for n in visible.split(",") if n.strip() and n.strip() != "-1"]
    return min(present, len(names))


@dataclass(frozen=True)
class Layout:
    """How many worker processes serve, and how many torch threads each may use."""
    workers: int
    torch_threads: int
    gpus: int


def plan_layout(settings: Settings, cpus: Optional[int] = None, gpus: Optional[int] = None) -> Layout:
    cpus = available_cpus() if cpus is None else cpus
    gpus = visible_gpus() if gpus is None else gpus
    if settings.device and settings.device.startswith("cpu"):
        gpus = 0
    # One process per device: each holds one model copy and one model loop that batches across requests.
    workers = settings.workers or max(1, gpus)
    if settings.multi_model:
        workers = 1  # SageMaker sends each model's load once: the one process that gets it must serve it
    # Workers x torch threads must never exceed the cores: oversubscribed OpenMP pools spin against each other.
    # Each worker needs at least one thread, so there can be no more workers than cores.
    workers = max(1, min(workers, cpus))
    threads = max(1, cpus // workers)
    if settings.torch_threads:
        threads = min(threads, settings.torch_threads)
    return Layout(workers=workers, torch_threads=threads, gpus=gpus)
