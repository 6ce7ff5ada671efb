"""The memory baseline, a program of its own: `python -m benchmark.model_only MODEL_DIR` loads the model the
way a server worker does (clip_sagemaker.model.load_model, its default precision, 2 threads), collects
garbage, and prints its resident memory (VmRSS) and peak (VmHWM) in MB as one JSON line. `measure` runs it."""
from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from pathlib import Path

from .common import BenchmarkError

MB = 1024 * 1024


def measure(model_dir: Path) -> dict:
    from .servers import child_env

    probe = subprocess.run([sys.executable, "-m", "benchmark.model_only", str(model_dir)], capture_output=True,
                           text=True, env=child_env(), timeout=300)
    if probe.returncode != 0:
        raise BenchmarkError(f"the model-only process failed with exit status {probe.returncode}:\n"
                             f"{probe.stderr[-2000:]}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    import psutil
    from clip_sagemaker.model import load_model
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings

    source = resolve_model_source(Settings(model_dir=argv[0], model_dir_explicit=True))
    model = load_model(source, torch_threads=2)
    gc.collect()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes, the process's VmHWM
    print(json.dumps({"VmRSS": psutil.Process().memory_info().rss / MB, "VmHWM": peak_kb / 1024,
                      "precision": model.info.precision}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
