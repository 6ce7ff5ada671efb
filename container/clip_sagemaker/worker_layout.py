"""What hardware this process may use (cores, GPUs, memory), and how the server's workers and threads are
laid out on it: no more workers x torch threads than cores, no more workers than the memory holds.

Counted without importing torch, so that `serve` can plan gunicorn's layout in milliseconds. The memory a
worker needs is estimated from the model's weights file before anything loads: SageMaker serverless
endpoints (and inference components) give the container a cgroup memory limit, and a worker that outgrows
it is OOM-killed mid-load, again and again; `serve` refuses to start instead (MemoryBudget.require_one).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .model_source import LOCAL_DIR_PREFIX, ModelSource, ModelSourceError, resolve_model_source, weights_in
from .memory import CGROUP_ROOT, read_cgroup_bytes
from .settings import MB, Settings


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


def cgroup_memory_limit(root: Optional[Path] = None) -> Optional[int]:
    """The memory limit of this container in bytes, or None when unlimited (cgroup v2 `memory.max`, then
    v1 `memory/memory.limit_in_bytes`), read from the cgroup file system mounted at `root`."""
    root = CGROUP_ROOT if root is None else root
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        limit = read_cgroup_bytes(root / name)
        if limit is not None:
            return limit if limit > 0 else None
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


# Measured (fp32, CPU, 2026-12): a worker serving the tiny test model holds 816 MiB (Python, torch with its
# CUDA libraries, open_clip, the server); one serving a ViT-B-32 from its 577 MiB safetensors file peaks at
# 1433 MiB, 1.07 x the file more (safetensors are memory-mapped; a pickled .bin is read whole and then copied:
# about twice the file); the gunicorn master holds 24 MiB. Rounded up, so that an estimate that fits leaves
# some room.
WORKER_RUNTIME_BYTES = 900 * MB
MASTER_BYTES = 64 * MB


def load_factor(weights: Path) -> float:
    """Peak memory of loading the weights, as a multiple of the file's size."""
    return 1.25 if weights.suffix == ".safetensors" else 2.0


def weights_file(source: ModelSource) -> Optional[Path]:
    """The weights file the source loads from local disk; None when it is not there before loading (a
    download, or random weights)."""
    if source.name.startswith(LOCAL_DIR_PREFIX):
        path = weights_in(Path(source.name.removeprefix(LOCAL_DIR_PREFIX)))
    else:
        path = Path(source.pretrained) if source.pretrained else None
    return path if path is not None and path.is_file() else None


class MemoryFitError(Exception):
    """The model cannot fit the memory the container is given."""


@dataclass(frozen=True)
class MemoryBudget:
    """The memory available (None: no limit) and what one worker needs (None: unknown before it loads)."""
    available_bytes: Optional[int]
    worker_bytes: Optional[int]
    limited_by: str = "the cgroup memory limit"

    def workers_that_fit(self) -> Optional[int]:
        if self.available_bytes is None or self.worker_bytes is None:
            return None
        return max(0, (self.available_bytes - MASTER_BYTES) // self.worker_bytes)

    def require_one(self) -> None:
        """Raises MemoryFitError, with the figures, when not even one worker fits."""
        if self.workers_that_fit() != 0:
            return
        needed = (MASTER_BYTES + self.worker_bytes) // MB
        raise MemoryFitError(
            f"the model needs about {needed} MiB of memory (the server {MASTER_BYTES // MB} MiB + one worker "
            f"{self.worker_bytes // MB} MiB: its runtime {WORKER_RUNTIME_BYTES // MB} MiB and the weights while "
            f"they load), but only {self.available_bytes // MB} MiB are available "
            f"({self.limited_by}); give the container more memory (a serverless endpoint's MemorySizeInMB) or "
            f"serve a smaller model")


def memory_budget(settings: Settings, cgroup_root: Optional[Path] = None) -> MemoryBudget:
    """What the container may use (the cgroup's limit, lowered by MEMORY_LIMIT_MB) and what a worker needs."""
    available, limited_by = cgroup_memory_limit(cgroup_root), "the cgroup memory limit"
    chosen = None if settings.memory_limit_mb is None else settings.memory_limit_mb * MB
    if chosen is not None and (available is None or chosen < available):
        available, limited_by = chosen, f"MEMORY_LIMIT_MB={settings.memory_limit_mb}"
    try:
        weights = weights_file(resolve_model_source(settings))
    except ModelSourceError:
        weights = None  # `serve` reports a wrong source on its own
    if weights is None:
        return MemoryBudget(available, None, limited_by)
    return MemoryBudget(available, WORKER_RUNTIME_BYTES + int(load_factor(weights) * weights.stat().st_size),
                        limited_by)


@dataclass(frozen=True)
class Layout:
    """How many worker processes serve, and how many torch threads each may use."""
    workers: int
    torch_threads: int
    gpus: int


def plan_layout(settings: Settings, cpus: Optional[int] = None, gpus: Optional[int] = None,
                memory: Optional[MemoryBudget] = None) -> Layout:
    cpus = available_cpus() if cpus is None else cpus
    gpus = visible_gpus() if gpus is None else gpus
    memory = memory_budget(settings) if memory is None else memory
    if settings.device and settings.device.startswith("cpu"):
        gpus = 0
    # One process per device: each holds one model copy and one model loop that batches across requests.
    workers = settings.workers or max(1, gpus)
    if settings.multi_model:
        workers = 1  # SageMaker sends each model's load once: the one process that gets it must serve it
    # Workers x torch threads must never exceed the cores: oversubscribed OpenMP pools spin against each other.
    # Each worker needs at least one thread, so there can be no more workers than cores.
    workers = max(1, min(workers, cpus))
    fit = memory.workers_that_fit()
    if fit:  # when none fits, `serve` refuses to start (MemoryBudget.require_one)
        workers = min(workers, fit)
    threads = max(1, cpus // workers)
    if settings.torch_threads:
        threads = min(threads, settings.torch_threads)
    return Layout(workers=workers, torch_threads=threads, gpus=gpus)
