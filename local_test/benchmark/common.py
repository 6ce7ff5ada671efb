"""What every part of the benchmark shares: where things live, the model, the inputs' shape, the scenarios,
the one error that stops a run, and the progress log (stderr; the report goes to stdout)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "container"
LOCAL_TEST = REPO / "local_test"
DEFAULT_WORK_DIR = LOCAL_TEST / "out" / "bench"
ARCH = "ViT-B-32"
IMAGE_W, IMAGE_H = 640, 480
JPEG_QUALITY = 85
N_IMAGES = 32
TEXTS_PER_REQUEST = 8
RAW_BATCH = 8  # the raw model's batch in the rows the c=8 targets compare with
CLASSES = [["cat", 0], ["dog", 0], ["person", 1], ["car", 0], ["bicycle", 0], ["person with a bag", 1]]
REQUEST_TIMEOUT_S = 90
READY_TIMEOUT_S = 240
MEMORY_SAMPLE_S = 0.25
SCENARIOS = {  # name: (kind, concurrency)
    "image-c1": ("image", 1), "image-c8": ("image", 8),
    "text-c1": ("text", 1), "text-c8": ("text", 8),
    "classify-c1": ("classify", 1), "classify-c4": ("classify", 4), "classify-c8": ("classify", 8),
}
UNITS = {"image": "img/s", "text": "texts/s", "classify": "req/s"}
OTHER_LOAD_LIMIT = 0.15  # cores other processes may take in a round before the report calls it disturbed
# The raw model's texts count from here, so that they never repeat one a server has seen (and cached).
RAW_TEXT_COUNTER = 10_000_000


class BenchmarkError(Exception):
    """The run cannot go on (a server failed to start, or answered something other than 200)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
