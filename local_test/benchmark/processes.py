"""What processes use, through psutil: a process tree's resident memory (now and at its peak), its CPU seconds,
the machine's busy time, the CPU that processes outside the benchmark take, and the sampler that keeps the
peak RSS of whichever server is under load."""
from __future__ import annotations

import os
import threading
from typing import Callable, Optional, Protocol

import psutil

from .common import MEMORY_SAMPLE_S

MB = 1024 * 1024
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError)


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except _GONE:
        return []


def _tree_sum(pid: int, read: Callable[[psutil.Process], float]) -> float:
    total = 0.0
    for process in process_tree(pid):
        try:
            total += read(process)
        except _GONE:
            pass  # a process that ended between the listing and the read holds nothing any more
    return total


def _vm_hwm_bytes(process: psutil.Process) -> int:
    # psutil has no peak RSS; the kernel keeps one per process (VmHWM), which no sampler can miss.
    with open(f"/proc/{process.pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_rss_mb(pid: int) -> float:
    return _tree_sum(pid, lambda p: p.memory_info().rss) / MB


def tree_hwm_mb(pid: int) -> float:
    """The processes' own peaks, summed: an upper bound of the tree's peak, as the peaks need not coincide."""
    return _tree_sum(pid, _vm_hwm_bytes) / MB


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (those alive now)."""
    return _tree_sum(pid, lambda p: sum(p.cpu_times()[:2]))


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot: everything but idle and iowait (guest time is in user)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


ACCOUNTED_PIDS: list[int] = []  # the servers and the raw model process: everything else on the machine is "other"


class OtherLoad:
    """CPU time that processes outside this benchmark (and its servers) take from its creation on."""

    def __init__(self):
        self._start = self._ours_and_all()

    @staticmethod
    def _ours_and_all() -> tuple[float, float]:
        ours = own_cpu_s() + sum(tree_cpu_s(pid) for pid in ACCOUNTED_PIDS)
        return ours, machine_busy_s()

    def seconds(self) -> float:
        ours, busy = self._ours_and_all()
        return max(0.0, (busy - self._start[1]) - (ours - self._start[0]))


class Sampled(Protocol):
    peak_rss_mb: float

    @property
    def pid(self) -> int: ...


class MemorySampler:
    """Samples the RSS of whichever server is under load (`target`); keeps each server's peak."""

    def __init__(self):
        self.target: Optional[Sampled] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            server = self.target
            if server is not None:
                server.peak_rss_mb = max(server.peak_rss_mb, tree_rss_mb(server.pid))
