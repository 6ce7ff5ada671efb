"""The parent's side of the raw model (a): which measurements make its up-front table, which interleave with
the servers' rounds in which scenario, and the handle on the worker process (benchmark.raw_worker) that runs
them."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import IMAGE_H, IMAGE_W, RAW_BATCH, BenchmarkError, log
from .processes import OtherLoad
from .servers import child_env

PRECISIONS = ("fp32", "bf16")
TABLE_MIN_CALLS = 3
ROUND_MIN_CALLS = 2


@dataclass(frozen=True)
class RawRow:
    key: str  # in the up-front table; for a side-by-side round, the cell's "server" (a-fp32, a-bf16)
    precision: str
    op: str  # a raw_worker measurement
    label: str
    args: dict = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return {"texts": "texts/s", "decode": ""}.get(self.op, "img/s")


def _image_rows(precision: str, batches: tuple[int, ...]) -> list[RawRow]:
    return [RawRow(f"{precision}-image-b{b}", precision, "images",
                   f"{precision} encode_image, batch {b} (preprocessed tensors)", {"batch_size": b}) for b in batches]


TABLE = (
    *_image_rows("fp32", (1, 8, 16, 32)),
    RawRow("fp32-text-padded", "fp32", "texts", f"fp32 encode_text, batch {RAW_BATCH}, padded to 77 tokens",
           {"trimmed": False}),
    RawRow("fp32-text-trimmed", "fp32", "texts", f"fp32 encode_text trimmed to the prompt, batch {RAW_BATCH}",
           {"trimmed": True}),
    RawRow("decode-full", "fp32", "decode", f"decode + preprocess, one {IMAGE_W}x{IMAGE_H} JPEG, full decode",
           {"draft": False}),
    RawRow("decode-draft", "fp32", "decode", "decode + preprocess, with JPEG draft", {"draft": True}),
    RawRow("fp32-c1", "fp32", "prepared_images", "fp32 c=1: draft decode + preprocess + batch-1 forward",
           {"batch_size": 1}),
    RawRow("bf16-image-b8", "bf16", "prepared_images",
           f"bf16 draft decode + preprocess + encode_image, batch {RAW_BATCH}", {"batch_size": RAW_BATCH}),
    RawRow("bf16-text-trimmed", "bf16", "texts", f"bf16 encode_text trimmed to the prompt, batch {RAW_BATCH}",
           {"trimmed": True}),
    RawRow("bf16-c1", "bf16", "prepared_images", "bf16 c=1: draft decode + preprocess + batch-1 forward",
           {"batch_size": 1}),
)

# The raw rounds that run beside the servers' in a scenario; the targets use these side-by-side figures.
SIDE_BY_SIDE = {
    "image-c8": (
        RawRow("a-fp32", "fp32", "images", f"raw fp32, encode_image batch {RAW_BATCH} (preprocessed tensors)",
               {"batch_size": RAW_BATCH}),
        RawRow("a-bf16", "bf16", "prepared_images",
               f"raw bf16, draft decode + preprocess + encode_image batch {RAW_BATCH}", {"batch_size": RAW_BATCH})),
    "image-c1": (
        RawRow("a-fp32", "fp32", "prepared_images", "raw fp32, draft decode + preprocess + batch-1 forward, "
               "one at a time", {"batch_size": 1}),
        RawRow("a-bf16", "bf16", "prepared_images", "raw bf16, draft decode + preprocess + batch-1 forward, "
               "one at a time", {"batch_size": 1})),
    "text-c8": (
        RawRow("a-bf16", "bf16", "texts", f"raw bf16, encode_text trimmed to the prompt, batch {RAW_BATCH}",
               {"trimmed": True}),),
}


class RawProcess:
    """The handle on the raw model worker; it idles (sleeping OpenMP threads) between commands."""

    def __init__(self, model_dir: Path, image_dir: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmark.raw_worker", "--model-dir", str(model_dir), "--image-dir",
             str(image_dir), "--precisions", ",".join(PRECISIONS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
        self.facts = self._read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise BenchmarkError(f"the raw model process exited with {self.process.wait()}")
        return json.loads(line)

    def call(self, row: RawRow, seconds: float, min_calls: int = ROUND_MIN_CALLS) -> dict:
        command = {"op": row.op, "precision": row.precision,
                   "args": {**row.args, "seconds": seconds, "min_calls": min_calls}}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)


def measure_table(raw: RawProcess, seconds: float) -> dict:
    """The up-front figures, with no server under load: one summary per TABLE row."""
    other, wall = OtherLoad(), time.perf_counter()
    rows = {}
    for row in TABLE:
        answer = raw.call(row, seconds, TABLE_MIN_CALLS)
        rows[row.key] = {"label": row.label, "unit": row.unit, "iterations": answer["requests"],
                         "items_per_s": answer["items"] / answer["elapsed_s"],
                         "median_ms": statistics.median(answer["latencies_s"]) * 1000,
                         "cpu_cores": answer["cpu_s"] / answer["elapsed_s"]}
        log(f"  (a) {row.label}: {rows[row.key]['median_ms']:.1f} ms per call"
            + (f", {rows[row.key]['items_per_s']:.1f} {row.unit}" if row.unit else ""))
    image_rows = [r["items_per_s"] for k, r in rows.items() if k.startswith("fp32-image-")]
    return {"facts": raw.facts, "rows": rows, "best_fp32_image_items_per_s": max(image_rows),
            "other_cpu_cores": other.seconds() / (time.perf_counter() - wall)}
