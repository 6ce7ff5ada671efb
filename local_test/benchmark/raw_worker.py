"""The raw model, a program of its own: `python -m benchmark.raw_worker --model-dir D --image-dir I`.

open_clip itself, with no server, no batching loop and no HTTP: `create_model_and_transforms` once per
precision asked for (fp32, and bf16 = open_clip's `precision="bf16"`: weights in bf16, LayerNorms in fp32),
2 torch threads, `torch.inference_mode()`, OpenMP's defaults. It answers one JSON line on its stdout per JSON
command line on stdin, and idles between commands (its OpenMP threads asleep), so that its rounds can
interleave with the servers'. Every measurement answers in one shape: items, requests (calls), elapsed_s,
latencies_s (one per call) and cpu_s.

Measurements: `images` (encode_image on already preprocessed tensors), `prepared_images` (JPEG draft decode
+ preprocess of each image, then encode_image on the batch: at batch 1 the latency a lone request cannot
beat), `texts` (encode_text on pre-tokenized batches of 8 distinct short texts, padded to 77 tokens or
trimmed to the prompt with clip_sagemaker.model's trimmed text tower) and `decode` (decode + preprocess).
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

from .common import RAW_TEXT_COUNTER, TEXTS_PER_REQUEST
from .inputs import unique_text

TORCH_THREADS = 2
TEXT_BATCHES = 64  # distinct pre-tokenized batches a text measurement cycles through
BF16_SHAPE_WARMUP = 3  # oneDNN builds its bf16 kernels during a new shape's first 2-3 calls


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(fn: Callable[[], object], seconds: float, min_calls: int, items_per_call: int) -> dict:
    times: list[float] = []
    cpu, started = _cpu_s(), time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"items": items_per_call * len(times), "requests": len(times), "elapsed_s": sum(times),
            "latencies_s": times, "cpu_s": _cpu_s() - cpu}


class RawModel:
    """One precision of the model, with the inputs its measurements feed it."""

    def __init__(self, model_dir: Path, jpegs: list[bytes], precision: str):
        import open_clip
        import torch
        from clip_sagemaker.model import trimmable_text_tower

        self.torch, self.precision = torch, precision
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            f"local-dir:{model_dir}", require_pretrained=True, precision=precision)
        self.model = model.eval()
        self.tower = trimmable_text_tower(model)
        if self.tower is None:
            raise SystemExit("the raw model's text tower cannot be trimmed")
        size = model.visual.image_size
        self.size = max(size) if isinstance(size, (tuple, list)) else size
        self.jpegs = jpegs
        self.tensors = [self.prepare(data, draft=False) for data in jpegs]
        tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
        self.text_batches = [tokenizer([unique_text(RAW_TEXT_COUNTER + b * TEXTS_PER_REQUEST + i)
                                        for i in range(TEXTS_PER_REQUEST)]) for b in range(TEXT_BATCHES)]
        self._warm: set = set()

    def prepare(self, data: bytes, draft: bool):
        """What the server does to an image body (inputs.decode_image, then the model's preprocess)."""
        from PIL import Image, ImageOps

        image = Image.open(io.BytesIO(data))
        if draft:
            image.draft("RGB", (self.size, self.size))
        return self.preprocess(ImageOps.exif_transpose(image).convert("RGB"))

    def _warm_up(self, shape: tuple, fn: Callable[[], object], rows: int) -> None:
        # Once per shape and process: a measurement then times steady kernels, as a warm server runs.
        if shape not in self._warm:
            for _ in range(BF16_SHAPE_WARMUP if self.precision == "bf16" else (2 if rows < 16 else 1)):
                fn()
            self._warm.add(shape)

    def images(self, batch_size: int, seconds: float, min_calls: int) -> dict:
        batch = self.torch.stack([self.tensors[i % len(self.tensors)] for i in range(batch_size)]).to(self.dtype)
        fn = lambda: self.model.encode_image(batch)  # noqa: E731
        self._warm_up(("image", batch_size), fn, batch_size)
        return _measure(fn, seconds, min_calls, batch_size)

    def prepared_images(self, batch_size: int, seconds: float, min_calls: int) -> dict:
        cycle = itertools.cycle(self.jpegs)

        def fn() -> None:
            batch = self.torch.stack([self.prepare(next(cycle), draft=True) for _ in range(batch_size)])
            self.model.encode_image(batch.to(self.dtype))
        self._warm_up(("image", batch_size), fn, batch_size)
        return _measure(fn, seconds, min_calls, batch_size)

    def texts(self, trimmed: bool, seconds: float, min_calls: int) -> dict:
        from clip_sagemaker.model import encode_text_trimmed

        forward = (lambda t: encode_text_trimmed(self.tower, t)) if trimmed else self.model.encode_text
        for tokens in self.text_batches:
            # Trimmed, a batch's shape is its longest text (open_clip pads with token 0): each one warms up.
            length = int((tokens != 0).sum(dim=-1).max()) if trimmed else tokens.shape[1]
            self._warm_up(("text", len(tokens), length), lambda: forward(tokens), len(tokens))
        cycle = itertools.cycle(self.text_batches)
        return _measure(lambda: forward(next(cycle)), seconds, min_calls, TEXTS_PER_REQUEST)

    def decode(self, draft: bool, seconds: float, min_calls: int) -> dict:
        cycle = itertools.cycle(self.jpegs)
        for data in self.jpegs[:4]:
            self.prepare(data, draft)
        return _measure(lambda: self.prepare(next(cycle), draft), seconds, min_calls, 1)

    def facts(self) -> dict:
        block = self.model.visual.transformer.resblocks[0]
        return {"linear_weights": str(block.mlp.c_fc.weight.dtype).replace("torch.", ""),
                "layernorm_weights": str(block.ln_1.weight.dtype).replace("torch.", "")}


OPS = ("images", "prepared_images", "texts", "decode")


def _serve(models: dict[str, RawModel], answers) -> None:
    import torch

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            return
        if command["op"] not in OPS:
            raise SystemExit(f"unknown command {command['op']!r}")
        with torch.inference_mode():
            answer = getattr(models[command["precision"]], command["op"])(**command["args"])
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--image-dir", type=Path, required=True)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args(argv)
    # The answer channel is a private copy of stdout; stdout itself then points at stderr, so that nothing
    # else (Python or a native library) can write into the answers.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import open_clip
    import torch

    torch.set_num_threads(TORCH_THREADS)
    jpegs = [p.read_bytes() for p in sorted(args.image_dir.glob("photo_*.jpg"))]
    models = {p: RawModel(args.model_dir, jpegs, p) for p in args.precisions.split(",")}
    ready = {"ready": True, "torch": torch.__version__, "open_clip": open_clip.__version__,
             "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
             "precisions": {p: m.facts() for p, m in models.items()}}
    answers.write(json.dumps(ready) + "\n")
    answers.flush()
    _serve(models, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
