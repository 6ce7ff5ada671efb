"""This process's memory: how much is still available to it, its resident size, and giving freed memory
back to the system. Torch-free, read from /proc and the cgroup file system.

"Available" is the smaller of what the container's cgroup still allows (its limit less its working set:
usage without the inactive page cache the kernel reclaims before it kills anything, as `docker stats` and
the kubelet count it) and the machine's MemAvailable.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number; anything this large is no limit.
_NO_LIMIT = 1 << 60


@dataclass(frozen=True)
class Available:
    bytes: int
    source: str  # where the figure comes from, for messages


def read_cgroup_bytes(path: Path) -> Optional[int]:
    """A cgroup file's byte count; None when absent, unreadable, or no limit (`max`, v1's huge number)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _NO_LIMIT else value


def _stat_field(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_memory_left(root: Path = CGROUP_ROOT) -> Optional[int]:
    """Bytes the cgroup under `root` still allows (cgroup v2, then v1), or None when it sets no limit."""
    for limit_file, usage_file, stat_file, inactive in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
             "total_inactive_file")):
        limit = read_cgroup_bytes(root / limit_file)
        usage = read_cgroup_bytes(root / usage_file)
        if limit is not None and usage is not None:
            working_set = max(0, usage - _stat_field(root / stat_file, inactive))
            return max(0, limit - working_set)
    return None


def mem_available(meminfo: Path = MEMINFO) -> Optional[int]:
    """The kernel's estimate of memory available without swapping (MemAvailable, in bytes)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available(cgroup_root: Path = CGROUP_ROOT, meminfo: Path = MEMINFO) -> Available:
    left = cgroup_memory_left(cgroup_root)
    free = mem_available(meminfo)
    if left is not None and (free is None or left <= free):
        return Available(left, "the container's memory limit less its working set (cgroup)")
    if free is not None:
        return Available(free, "MemAvailable of /proc/meminfo")
    return Available(0, "nothing: neither the cgroup nor /proc/meminfo could be read")


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory() -> bool:
    """Collects garbage, then asks glibc to return its free heap pages to the system (malloc_trim): without
    it the allocator keeps a freed model's hundreds of MB for itself. False where there is no glibc."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
