"""The memory available to the container (memory.py): the cgroup's limit less its working set (v2, then v1),
else MemAvailable, whichever is smaller; and returning freed memory to the system."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from clip_sagemaker import memory

MB = 2**20
CONTAINER = Path(memory.__file__).resolve().parents[1]


def _meminfo(tmp_path, available_kb: int):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   {available_kb} kB\n")
    return path


def test_cgroup_v2_limit_less_working_set_not_counting_reclaimable_page_cache(tmp_path):
    (tmp_path / "memory.max").write_text(f"{4096 * MB}\n")
    (tmp_path / "memory.current").write_text(f"{1500 * MB}\n")
    (tmp_path / "memory.stat").write_text(f"anon {1000 * MB}\ninactive_file {500 * MB}\nactive_file 0\n")
    found = memory.available(tmp_path, _meminfo(tmp_path, 20_000_000))
    assert found.bytes == (4096 - 1000) * MB
    assert "cgroup" in found.source


def test_cgroup_v1_limit_is_read_and_its_no_limit_value_means_none(tmp_path):
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(f"{2048 * MB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{48 * MB}\n")
    assert memory.cgroup_memory_left(tmp_path) == 2000 * MB
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.cgroup_memory_left(tmp_path) is None


def test_without_a_cgroup_limit_mem_available_is_the_figure(tmp_path):
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text(f"{1500 * MB}\n")
    found = memory.available(tmp_path, _meminfo(tmp_path, 1024))
    assert (found.bytes, found.source) == (MB, "MemAvailable of /proc/meminfo")


def test_the_smaller_of_cgroup_and_mem_available_wins(tmp_path):
    (tmp_path / "memory.max").write_text(f"{4096 * MB}\n")
    (tmp_path / "memory.current").write_text("0\n")
    assert memory.available(tmp_path, _meminfo(tmp_path, 1024 * 1024)).bytes == 1024 * MB


_FREED_MEMORY_PROGRAM = """
import json
from clip_sagemaker import memory
before = memory.rss_bytes()
# Heap blocks (below glibc's mmap threshold) with a small block kept between each two: freed, they are holes in
# the middle of the heap, which glibc keeps for itself (measured: all 190 MB) until malloc_trim.
blocks, pins = [], []
for _ in range(3000):
    blocks.append(bytearray(64 * 1024))
    pins.append(bytearray(1024))  # above pymalloc's 512 bytes: from glibc's heap too
grown = memory.rss_bytes()
del blocks
print(json.dumps([before, grown, memory.release_freed_memory(), memory.rss_bytes()]))
"""


def test_freed_memory_goes_back_to_the_system():
    # In a fresh interpreter: in one that has run other tests, the blocks may land in holes already there.
    result = subprocess.run([sys.executable, "-c", _FREED_MEMORY_PROGRAM], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(CONTAINER)})
    before, grown, released, after = json.loads(result.stdout)
    assert released
    assert grown - before > 150 * MB
    assert after - before < 50 * MB
