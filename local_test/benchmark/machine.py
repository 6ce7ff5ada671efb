"""Which machine the figures come from: the CPU's model and whether it has AMX (its flags, and what torch makes
of it), cores, memory, versions, the commit, and how busy the machine was before the run started."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .common import REPO
from .processes import machine_busy_s

# Run in a child: the benchmark's own process never imports torch, whose libraries would be in its memory.
_TORCH_FACTS = """
import json, torch
cpu = getattr(torch, "cpu", None)
amx = getattr(cpu, "_is_amx_tile_supported", None)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "amx_tile": amx() if amx else None, "mkldnn": torch.backends.mkldnn.is_available()}))
"""


def cpu_facts() -> dict:
    """The CPU's model name and its AMX flags (amx_bf16, amx_tile, amx_int8) from /proc/cpuinfo."""
    # psutil knows neither; lscpu reads the same file and is not in every image.
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": name, "amx_flags": sorted(f for f in flags if f.startswith("amx"))}


def torch_facts(env: dict) -> dict:
    try:
        out = subprocess.run([sys.executable, "-c", _TORCH_FACTS], capture_output=True, text=True, env=env,
                             timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {"capability": "?", "amx_tile": None, "mkldnn": None}


def _version(name: str) -> str:
    import importlib.metadata as metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine(env: dict) -> dict:
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cores": len(os.sched_getaffinity(0)), **cpu_facts(), "torch_cpu": torch_facts(env),
            "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "python": platform.python_version(), "torch": _version("torch"),
            "open_clip": _version("open_clip_torch"), "pillow": _version("pillow"), "commit": _commit()}


def busy_cores(seconds: float = 2.0) -> float:
    """Cores busy on average over `seconds` (before anything of ours runs: all of it is other processes)."""
    busy = machine_busy_s()
    time.sleep(seconds)
    return round((machine_busy_s() - busy) / seconds, 2)
