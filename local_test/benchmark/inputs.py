"""The request bodies and raw inputs: photo-like JPEGs, texts no cache has seen, prepared payload pools, and the
check that a warm-up answer is what its scenario asked for."""
from __future__ import annotations

import base64
import io
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .common import CLASSES, IMAGE_H, IMAGE_W, JPEG_QUALITY, TEXTS_PER_REQUEST, BenchmarkError

# Common words, all distinct: a request's texts spell a unique counter in three of them.
WORDS = """
a the red blue green small large old young happy quiet dark bright wooden metal glass stone soft loud fast
slow tall short round square shiny dusty wet dry warm cold fresh empty full busy lonely little big black white
yellow orange purple pink brown grey golden silver striped spotted cat dog horse bird fish cow sheep goat
rabbit mouse lion tiger bear fox wolf deer duck owl frog turtle snake car bus truck bicycle boat train plane
road bridge river lake sea beach mountain hill forest tree flower garden field park city street house room
kitchen table chair bed window door wall roof lamp book cup plate bowl bottle bag box shoe hat coat shirt
dress phone computer camera clock guitar piano ball kite umbrella bench fence sign tower castle church
market shop school office station airport farm barn tent cloud sky sun moon star rain snow storm fog night
morning evening summer winter autumn spring man woman child boy girl baby person family friend crowd team
player chef doctor farmer teacher worker runner dancer singer sitting standing running walking jumping
flying swimming sleeping eating drinking reading playing holding carrying riding driving cooking painting
near under over behind beside inside outside above below with on in at by from of and two three four many
several some
""".split()


def make_jpeg(seed: int) -> bytes:
    """A deterministic photo-like 640x480 JPEG: smooth colour gradients, soft shapes, texture and noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(1000 + seed)
    y, x = np.mgrid[0:IMAGE_H, 0:IMAGE_W].astype(np.float32)
    u, v = x / IMAGE_W, y / IMAGE_H
    corners = rng.uniform(20, 235, size=(4, 3)).astype(np.float32)
    img = ((1 - u) * (1 - v))[..., None] * corners[0] + (u * (1 - v))[..., None] * corners[1] \
        + ((1 - u) * v)[..., None] * corners[2] + (u * v)[..., None] * corners[3]
    for _ in range(3):  # low-frequency colour waves (light and shade)
        fx, fy = rng.uniform(0.3, 2.5, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(8, 30, size=3).astype(np.float32)
        img += np.sin(2 * np.pi * (fx * u + fy * v) + phase)[..., None] * amp
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    for _ in range(int(rng.integers(3, 7))):  # a few shaded shapes with soft edges
        mask = Image.new("L", (IMAGE_W, IMAGE_H), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0, IMAGE_W), rng.uniform(0, IMAGE_H)
        rx, ry = rng.uniform(30, 180), rng.uniform(30, 150)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        elif kind == 1:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles], fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 3.0))))
        colour = rng.uniform(0, 255, size=3)
        shade = (1.0 - 0.35 * ((y - cy) / IMAGE_H + (x - cx) / IMAGE_W))[..., None]
        fill = Image.fromarray(np.clip(colour * shade, 0, 255).astype(np.uint8), "RGB")
        canvas = Image.composite(fill, canvas, mask)
    img = np.asarray(canvas).astype(np.float32)
    grain = rng.normal(0, 1, size=(IMAGE_H // 4, IMAGE_W // 4)).astype(np.float32)  # coarse texture
    texture = np.asarray(Image.fromarray(((grain * 40) + 128).clip(0, 255).astype(np.uint8))
                         .resize((IMAGE_W, IMAGE_H), Image.BICUBIC)).astype(np.float32) - 128
    img += texture[..., None] * 0.25 + np.sin(x * 0.9 + y * 0.4)[..., None] * 2.0  # fabric-like fine pattern
    img += rng.normal(0, 3.0, size=img.shape).astype(np.float32)  # sensor noise
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def make_jpegs(directory: Path, count: int) -> list[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for seed in range(count):
        data = make_jpeg(seed)
        path = directory / f"photo_{seed:02d}.jpg"
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        images.append(data)
    return images


def word_check() -> None:
    if len(set(WORDS)) != len(WORDS):
        raise AssertionError("WORDS must be distinct, or two counters could spell the same text")


def unique_text(counter: int) -> str:
    """4-8 words; the counter is spelled in the first two and the last word, so no two counters collide."""
    n = len(WORDS)
    if counter >= n ** 3:
        raise BenchmarkError("ran out of unique texts")
    rng = random.Random(counter)
    d0, d1, d2 = counter // (n * n), (counter // n) % n, counter % n
    middle = [rng.choice(WORDS) for _ in range(rng.randint(1, 5))]
    return " ".join([WORDS[d0], WORDS[d1], *middle, WORDS[d2]])


_text_counter = itertools.count()


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    items: int


class PayloadPool:
    """Bodies prepared before the clock starts. A cyclic pool reuses its bodies; a fresh one never does."""

    def __init__(self, payloads: list[Payload], cyclic: bool):
        self._payloads = payloads
        self._cyclic = cyclic
        self._next = itertools.count()  # next() on a count is atomic under the GIL

    def take(self) -> Payload:
        i = next(self._next)
        if self._cyclic:
            return self._payloads[i % len(self._payloads)]
        if i >= len(self._payloads):
            raise BenchmarkError(f"the pool of {len(self._payloads)} fresh request bodies ran out; "
                                 "this machine is faster than the benchmark expects: raise FRESH_RATE_BOUND")
        return self._payloads[i]


FRESH_RATE_BOUND = 150  # requests/s no server can exceed on text; sizes the pool of fresh text bodies


def pool_factory(kind: str, jpegs: list[bytes]) -> Callable[[float], PayloadPool]:
    if kind == "image":
        payloads = [Payload(data, "image/jpeg", 1) for data in jpegs]
        return lambda seconds: PayloadPool(payloads, cyclic=True)
    if kind == "classify":
        payloads = [Payload(json.dumps({"images": [base64.b64encode(data).decode()], "classes": CLASSES}).encode(),
                            "application/json", 1) for data in jpegs]
        return lambda seconds: PayloadPool(payloads, cyclic=True)

    def fresh_texts(seconds: float) -> PayloadPool:
        count = int(FRESH_RATE_BOUND * seconds) + 100
        payloads = []
        for _ in range(count):
            texts = [unique_text(next(_text_counter)) for _ in range(TEXTS_PER_REQUEST)]
            payloads.append(Payload(json.dumps({"task": "embed", "texts": texts}).encode(),
                                    "application/json", TEXTS_PER_REQUEST))
        return PayloadPool(payloads, cyclic=False)
    return fresh_texts


def check_answer(kind: str, answer: bytes) -> None:
    """The first answer of each warm-up must be what the scenario asked for, not just a 200."""
    body = json.loads(answer)
    if kind == "image":
        ok = len(body.get("image_embeddings", [])) == 1 and len(body["image_embeddings"][0]) == body.get("dim")
    elif kind == "text":
        ok = len(body.get("text_embeddings", [])) == TEXTS_PER_REQUEST
    else:
        ok = isinstance(body, list) and len(body) == 1 and body[0].get("classification") in (0, 1)
    if not ok:
        raise BenchmarkError(f"unexpected {kind} answer: {answer[:300]!r}")

