"""Measures what a multi-model endpoint's load and unload cost in worker memory: RSS before a load, after
it, and after the unload, for one model directory, through the registry the server uses.

    .venv/bin/python local_test/multi_model_memory.py MODEL_DIR [--no-trim]

Make a ViT-B-32-sized directory with random weights first:
    PYTHONPATH=container .venv/bin/python -m clip_sagemaker.model_files ViT-B-32 --out /tmp/vit-b-32
`--no-trim` unloads without malloc_trim, to show what glibc keeps for itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "container"))

from clip_sagemaker import memory, multi_model  # noqa: E402
from clip_sagemaker.settings import MB, Settings  # noqa: E402
from clip_sagemaker.worker_layout import plan_layout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--no-trim", action="store_true", help="unload without returning memory to the system")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    if args.no_trim:
        multi_model.memory.release_freed_memory = lambda: __import__("gc").collect()
    settings = Settings(multi_model=True, precision=args.precision)
    registry = multi_model.ModelRegistry(settings, plan_layout(settings), on_failure=lambda exc: sys.exit(exc))
    while not registry.ready():
        time.sleep(0.1)
    before, size = memory.rss_bytes(), (args.model_dir / "open_clip_model.safetensors").stat().st_size
    started = time.monotonic()
    registry.load("m", str(args.model_dir))
    load_s = time.monotonic() - started
    loaded = memory.rss_bytes()
    registry.unload("m")
    time.sleep(1)
    after = memory.rss_bytes()
    print(f"weights file {size / MB:.0f} MB, loaded in {load_s:.1f} s; RSS before load {before / MB:.0f} MB, after load {loaded / MB:.0f} MB "
          f"(+{(loaded - before) / MB:.0f} MB = {(loaded - before) / size:.2f}x the file), after unload "
          f"{after / MB:.0f} MB ({'without' if args.no_trim else 'with'} malloc_trim)")


if __name__ == "__main__":
    main()
