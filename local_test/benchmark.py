#!/usr/bin/env python3
"""Benchmarks the real server against the raw model and against itself with its optimisations off, in one run.

    .venv/bin/python local_test/benchmark.py                 # the full run, about 8 minutes on 2 cores
    .venv/bin/python local_test/benchmark.py --scenarios image --rounds 2 --seconds 4 --skip-raw

Everything is measured side by side on this machine in this run, so the ratios mean something even on a
noisy machine (absolute figures do not travel between machines). Three things are compared:

(a) the raw model: open_clip's own ViT-B-32 in a process of its own, no server (`torch.set_num_threads(2)`,
    `torch.inference_mode()`, the inherited OMP_WAIT_POLICY). Up front, with no server running:
    `encode_image` on preprocessed 224x224 tensors at batch 1, 8, 16 and 32, `encode_text` at batch 8 on
    short 4-8 word texts (padded to 77 tokens, as open_clip does), the decode + preprocess time of one 640x480
    JPEG (full decode, and with Pillow's JPEG draft mode) and the batch-1 forward: draft decode + preprocess +
    one batch-1 forward is the latency a lone request cannot beat. The process then stays (idle) and runs
    rounds of its own interleaved with the servers' in image-c8 (encode_image at batch 8) and image-c1 (draft
    decode + preprocess + batch-1 forward, one image at a time): the targets use those side-by-side figures;
(b) `./serve` with the product's defaults: cross-request batching, the text cache, trimmed text, JPEG draft;
(c) `./serve` with MAX_BATCH_SIZE=1 TEXT_CACHE_SIZE=0 TEXT_TRIM=false: one forward pass per item, no text
    cache, texts padded to 77 tokens. JPEG draft stays on in both servers, so (b) vs (c) isolates batching,
    the cache and trimming.

Both servers run at once on free 127.0.0.1 ports (LOG_LEVEL=warning) with a full-size ViT-B-32 model
directory holding seeded random weights (built once with clip_sagemaker.model_files and cached under
--work-dir); only one of them is under load at any moment (the other idles: its threads sleep). Each load scenario runs a short warm-up on each, then alternates (b), (c), [(a)],
(b), (c), [(a)]... for --rounds rounds of --seconds each, and aggregates per server. The client is a pool of
threads on the same machine, one requests.Session each, with every request body prepared before the clock
starts:

  image-c1, image-c8          one 640x480 JPEG per request as a raw body (Content-Type: image/jpeg);
  text-c1, text-c8            {"task": "embed", "texts": [8 texts of 4-8 words]}, every text new (a counter
                              is spelled into each), so that the text cache cannot help;
  classify-c1/-c4/-c8         seed 003: {"images": [1 JPEG], "classes": the same 6 [label, id] pairs}.

For each cell: items/s (images or texts embedded per second; for classification, requests per second),
p50 and p99 latency, the error count, and the CPU cores busy on average in the server, in the client and in
other processes (anything else running on the machine disturbs the figures; the report says so loudly). Any
answer other than 200 stops the run with exit status 1.

Memory: the resident memory (VmRSS summed over the gunicorn master and its workers) of each server is sampled
every 0.25 s while it is under load; its peak is compared with a process that has only loaded the same model
(clip_sagemaker.model.load_model, then gc).

At the end it prints markdown tables and the issue's targets, each PASS or MISS:
  image embeddings, c=8: (b) >= 0.8 x the raw model at batch 8, and (b) >= 1.4 x (c);
  short texts, c=8: (b) >= 7 x (c);            classification, c=4: (b) >= 4 x (c);
  image c=1 p50 latency of (b) <= 1.1 x (draft decode + preprocess + one raw batch-1 forward);
  memory: the peak RSS of server (b) <= 1.25 x the model-only process.
A target whose inputs were not measured (--scenarios, --skip-raw) is "n/a". The exit status is 0 even when
a target is missed: this reports, it does not gate.

Both servers (and the raw model process) are always stopped, also on Ctrl-C; traffic goes to 127.0.0.1
only. Progress goes to stderr, the report to stdout; --json OUT also writes every figure as JSON. Server
logs are kept in WORK_DIR/logs/. Nothing here belongs in tests/: tests never time things.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import io
import itertools
import json
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
CONTAINER = REPO / "container"
DEFAULT_WORK_DIR = REPO / "local_test" / "out" / "bench"
ARCH = "ViT-B-32"
IMAGE_W, IMAGE_H = 640, 480
JPEG_QUALITY = 85
N_IMAGES = 32
TEXTS_PER_REQUEST = 8
RAW_IMAGE_BATCHES = (1, 8, 16, 32)
RAW_TEXT_BATCH = 8
CLASSES = [["cat", 0], ["dog", 0], ["person", 1], ["car", 0], ["bicycle", 0], ["person with a bag", 1]]
REQUEST_TIMEOUT_S = 90
MEMORY_SAMPLE_S = 0.25
SCENARIOS = {  # name: (kind, concurrency)
    "image-c1": ("image", 1), "image-c8": ("image", 8),
    "text-c1": ("text", 1), "text-c8": ("text", 8),
    "classify-c1": ("classify", 1), "classify-c4": ("classify", 4), "classify-c8": ("classify", 8),
}
UNITS = {"image": "img/s", "text": "texts/s", "classify": "req/s"}
OTHER_LOAD_LIMIT = 0.15  # cores other processes may take in a round before the report calls it disturbed
# Everything the container reads from the environment that would change what is measured: never inherited.
SERVER_SETTINGS = (
    "MODEL_DIR", "MODEL_NAME", "MODEL_PRETRAINED", "CLIP_MODEL", "MODEL_ID", "DEVICE", "PRECISION",
    "TORCH_NUM_THREADS", "SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_MODEL_SERVER_WORKERS", "SERVER_THREADS",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT", "SAGEMAKER_BATCH", "LOG_LEVEL", "MAX_BATCH_SIZE", "MAX_QUEUE",
    "TEXT_CACHE_SIZE", "TEXT_TRIM", "JPEG_DRAFT", "MAX_BODY_MB", "MAX_ITEMS", "MAX_IMAGE_PIXELS",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
)
SERVER_B = {}  # the product's defaults
SERVER_C = {"MAX_BATCH_SIZE": "1", "TEXT_CACHE_SIZE": "0", "TEXT_TRIM": "false"}
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


class BenchmarkError(Exception):
    """The run cannot go on (a server failed to start, or answered something other than 200)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- inputs -----------------------------------------------------------------------------------------------

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


def _word_check() -> None:
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


# ---- processes and memory ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(c) for c in handle.read().split())
        return found
    except OSError:
        pass
    for entry in os.listdir("/proc"):  # kernels without /proc/PID/task/TID/children
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def vm_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(pid: int) -> float:
    return sum(vm_rss_kb(p) for p in process_tree(pid)) / 1024


class Server:
    def __init__(self, name: str, label: str, model_dir: Path, extra_env: dict[str, str], log_dir: Path):
        self.name, self.label, self.extra_env = name, label, extra_env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in SERVER_SETTINGS}
        env.update({"MODEL_DIR": str(model_dir), "LOG_LEVEL": "warning", "SAGEMAKER_BIND_TO_PORT": str(self.port),
                    "HF_HUB_OFFLINE": "1", **extra_env})
        self.log_path = log_dir / f"server-{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(REPO / "serve")], env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.info: dict = {}
        self.idle_rss_mb = 0.0
        self.peak_rss_mb = 0.0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, deadline: float) -> None:
        import requests

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(f"server ({self.name}) exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    self.info = requests.get(f"{self.url}/info", timeout=5).json()
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise BenchmarkError(f"server ({self.name}) was not ready in time:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn drains and stops its workers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


class MemorySampler:
    """Samples the RSS of whichever server is under load; keeps each server's peak."""

    def __init__(self):
        self.target: Optional[Server] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            server = self.target
            if server is not None:
                server.peak_rss_mb = max(server.peak_rss_mb, tree_rss_mb(server.process.pid))


# ---- load -------------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (as they are now)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / CLOCK_TICKS


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


ACCOUNTED_PIDS: list[int] = []  # the servers and the raw model process: everything else on the machine is "other"


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


class OtherLoad:
    """CPU time that processes outside this benchmark (and its servers) take while a round runs."""

    def __init__(self):
        self._start = self._ours_and_all()

    @staticmethod
    def _ours_and_all() -> tuple[float, float]:
        ours = own_cpu_s() + sum(tree_cpu_s(pid) for pid in ACCOUNTED_PIDS)
        return ours, machine_busy_s()

    def seconds(self) -> float:
        ours, busy = self._ours_and_all()
        return max(0.0, (busy - self._start[1]) - (ours - self._start[0]))


@dataclass
class RoundResult:
    items: int
    requests: int
    elapsed_s: float
    latencies_s: list[float]
    server_cpu_s: float = 0.0  # for (a), the raw model process
    client_cpu_s: Optional[float] = None
    other_cpu_s: float = 0.0  # processes outside the benchmark: anything above ~0.1 cores disturbs the figures

    @property
    def rate(self) -> float:
        return self.items / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_round(server: Server, pool: PayloadPool, concurrency: int, seconds: float,
              keep_first: bool = False) -> tuple[RoundResult, Optional[bytes]]:
    """`concurrency` threads send requests back to back for `seconds`; requests in flight at the end finish."""
    import requests

    url = f"{server.url}/invocations"
    barrier = threading.Barrier(concurrency + 1)
    clock = {}
    done: list[list[tuple[float, int, float]]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    first: list[bytes] = []
    abort = threading.Event()

    def client(index: int) -> None:
        session = requests.Session()
        try:
            barrier.wait()
            end = clock["end"]
            while not abort.is_set() and time.perf_counter() < end:
                payload = pool.take()
                started = time.perf_counter()
                try:
                    answer = session.post(url, data=payload.body, headers={"Content-Type": payload.content_type},
                                          timeout=REQUEST_TIMEOUT_S)
                except requests.RequestException as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    abort.set()
                    return
                finished = time.perf_counter()
                if answer.status_code != 200:
                    errors.append(f"HTTP {answer.status_code}: {answer.content[:300]!r}")
                    abort.set()
                    return
                if keep_first and not first:
                    first.append(answer.content)
                done[index].append((finished - started, payload.items, finished))
        except BenchmarkError as exc:
            errors.append(str(exc))
            abort.set()
        finally:
            session.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True, name=f"client-{i}")
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    server_cpu, client_cpu, other = tree_cpu_s(server.process.pid), own_cpu_s(), OtherLoad()
    start = time.perf_counter()
    clock["end"] = start + seconds
    barrier.wait()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # a short join keeps Ctrl-C working
    server_cpu, client_cpu, other = tree_cpu_s(server.process.pid) - server_cpu, own_cpu_s() - client_cpu, other.seconds()
    if errors:
        raise BenchmarkError(f"server ({server.name}) failed {len(errors)} request(s); first: {errors[0]}\n"
                             f"server log tail:\n{server.log_tail()}")
    records = [r for per_thread in done for r in per_thread]
    last = max((r[2] for r in records), default=start + seconds)
    result = RoundResult(items=sum(r[1] for r in records), requests=len(records), elapsed_s=last - start,
                         latencies_s=[r[0] for r in records], server_cpu_s=server_cpu, client_cpu_s=client_cpu,
                         other_cpu_s=other)
    return result, (first[0] if first else None)


def percentile(values: list[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Cell:
    scenario: str
    server: str  # "a" (the raw model), "b" or "c"
    concurrency: int
    label: str = ""
    rounds: list[RoundResult] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return sum(r.elapsed_s for r in self.rounds)

    @property
    def rate(self) -> float:
        return sum(r.items for r in self.rounds) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latencies(self) -> list[float]:
        return [lat for r in self.rounds for lat in r.latencies_s]

    def cores(self, which: str) -> Optional[float]:
        values = [getattr(r, which) for r in self.rounds]
        if any(v is None for v in values) or self.elapsed_s <= 0:
            return None
        return sum(values) / self.elapsed_s

    def as_json(self) -> dict:
        lat = self.latencies()
        return {"scenario": self.scenario, "server": self.server, "label": self.label,
                "concurrency": self.concurrency, "items_per_s": self.rate,
                "round_items_per_s": [r.rate for r in self.rounds],
                "requests": sum(r.requests for r in self.rounds), "items": sum(r.items for r in self.rounds),
                "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000, "errors": 0,
                "server_cpu_cores": self.cores("server_cpu_s"), "client_cpu_cores": self.cores("client_cpu_s"),
                "other_cpu_cores": self.cores("other_cpu_s"),
                "round_other_cpu_cores": [r.other_cpu_s / r.elapsed_s if r.elapsed_s else 0.0 for r in self.rounds]}


# The raw model's side-by-side round in a scenario: (operation, its arguments, the row's label).
RAW_ROUNDS = {
    "image-c8": ("images", {"batch_size": 8}, "raw model, encode_image batch 8"),
    "image-c1": ("latency", {}, "raw model, draft decode + batch-1 forward, one at a time"),
}


def raw_round(raw: RawProcess, scenario: str, seconds: float) -> RoundResult:
    op, args, _ = RAW_ROUNDS[scenario]
    other = OtherLoad()
    answer = raw.call(op, seconds=seconds, **args)
    return RoundResult(items=answer["items"], requests=answer["requests"], elapsed_s=answer["elapsed_s"],
                       latencies_s=answer["latencies_s"], server_cpu_s=answer["cpu_s"], other_cpu_s=other.seconds())


def run_scenario(name: str, servers: list[Server], raw: Optional[RawProcess], jpegs: list[bytes], rounds: int,
                 seconds: float, warmup_s: float, sampler: MemorySampler) -> list[Cell]:
    """Warm-up on each, then rounds that alternate (b), (c) and, where it has a side-by-side round, (a)."""
    kind, concurrency = SCENARIOS[name]
    make_pool = pool_factory(kind, jpegs)
    raw = raw if name in RAW_ROUNDS else None
    cells = {s.name: Cell(name, s.name, concurrency, s.label) for s in servers}
    if raw:
        cells["a"] = Cell(name, "a", 1, RAW_ROUNDS[name][2])
        raw_round(raw, name, warmup_s)
    for server in servers:
        sampler.target = server
        _, first = run_round(server, make_pool(warmup_s), concurrency, warmup_s, keep_first=True)
        sampler.target = None
        if first is None:
            raise BenchmarkError(f"server ({server.name}) answered nothing during the {warmup_s:g} s warm-up")
        check_answer(kind, first)
    for r in range(rounds):
        for server in servers:
            pool = make_pool(seconds)
            sampler.target = server
            result, _ = run_round(server, pool, concurrency, seconds)
            sampler.target = None
            cells[server.name].rounds.append(result)
            log(f"{name} ({server.name}) round {r + 1}/{rounds}: {result.rate:.1f} {UNITS[kind]}, "
                f"{result.requests} requests, p50 {percentile(result.latencies_s, 50) * 1000:.0f} ms, "
                f"server CPU {result.server_cpu_s / result.elapsed_s:.2f} cores, "
                f"client CPU {result.client_cpu_s / result.elapsed_s:.2f} cores, "
                f"other processes {result.other_cpu_s / result.elapsed_s:.2f} cores")
        if raw:
            result = raw_round(raw, name, seconds)
            cells["a"].rounds.append(result)
            log(f"{name} (a) round {r + 1}/{rounds}: {result.rate:.1f} {UNITS[kind]}, "
                f"p50 {percentile(result.latencies_s, 50) * 1000:.0f} ms, CPU {result.server_cpu_s / result.elapsed_s:.2f} "
                f"cores, other processes {result.other_cpu_s / result.elapsed_s:.2f} cores")
    order = [n for n in ("b", "c", "a") if n in cells]
    return [cells[n] for n in order]


# ---- the raw model (a long-lived process of its own) -------------------------------------------------------

def _timed(fn: Callable[[], object], min_seconds: float, min_iterations: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_iterations or time.perf_counter() - started < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RawModel:
    """open_clip itself, in the worker process: no server, no batching loop, no HTTP, default OpenMP settings."""

    def __init__(self, model_dir: Path, image_dir: Path):
        import open_clip
        import torch

        torch.set_num_threads(2)
        self.torch, self.open_clip = torch, open_clip
        model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}",
                                                                          require_pretrained=True)
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
        self.jpegs = [p.read_bytes() for p in sorted(image_dir.glob("photo_*.jpg"))]
        size = model.visual.image_size
        self.size = max(size) if isinstance(size, (tuple, list)) else size
        self.tensors = [self.prepare(d, draft=False) for d in self.jpegs]

    def prepare(self, data: bytes, draft: bool):
        """What the server does to an image body (inputs.decode_image, then the model's preprocess)."""
        from PIL import Image, ImageOps

        image = Image.open(io.BytesIO(data))
        if draft:
            image.draft("RGB", (self.size, self.size))
        return self.preprocess(ImageOps.exif_transpose(image).convert("RGB"))

    def batch(self, batch_size: int):
        return self.torch.stack([self.tensors[i % len(self.tensors)] for i in range(batch_size)])

    def table(self, seconds: float) -> dict:
        """The up-front figures: every batch size, text, decode."""
        import statistics

        torch = self.torch
        out: dict = {"torch": torch.__version__, "open_clip": self.open_clip.__version__,
                     "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
        decode = {}
        for draft in (False, True):
            cycle = itertools.cycle(self.jpegs)
            times = _timed(lambda: self.prepare(next(cycle), draft), 1.0, 64, warmup=4)
            decode["draft" if draft else "full"] = statistics.median(times) * 1000
        out["decode_preprocess_ms"] = decode
        out["preprocessed_shape"] = list(self.prepare(self.jpegs[0], True).shape)
        rows = {}
        with torch.inference_mode():
            for batch_size in RAW_IMAGE_BATCHES:
                batch = self.batch(batch_size)
                cpu, wall = _cpu_s(), time.perf_counter()
                times = _timed(lambda: self.model.encode_image(batch), seconds, 3, warmup=2 if batch_size < 16 else 1)
                cores = (_cpu_s() - cpu) / (time.perf_counter() - wall)
                rows[str(batch_size)] = {"items_per_s": batch_size * len(times) / sum(times),
                                         "median_batch_ms": statistics.median(times) * 1000,
                                         "iterations": len(times), "cpu_cores": cores}
                print(f"  raw encode_image batch {batch_size}: {rows[str(batch_size)]['items_per_s']:.1f} img/s",
                      file=sys.stderr, flush=True)
            texts = [unique_text(10_000_000 + i) for i in range(RAW_TEXT_BATCH)]
            tokens = self.tokenizer(texts)
            cpu, wall = _cpu_s(), time.perf_counter()
            times = _timed(lambda: self.model.encode_text(tokens), seconds * 0.75, 3, warmup=2)
            out["encode_text"] = {"batch": RAW_TEXT_BATCH, "tokens": list(tokens.shape),
                                  "items_per_s": RAW_TEXT_BATCH * len(times) / sum(times),
                                  "median_batch_ms": statistics.median(times) * 1000, "iterations": len(times),
                                  "cpu_cores": (_cpu_s() - cpu) / (time.perf_counter() - wall)}
        out["encode_image"] = rows
        out["best_image_items_per_s"] = max(r["items_per_s"] for r in rows.values())
        out["forward_b1_ms"] = rows["1"]["median_batch_ms"]
        out["latency_floor_ms"] = decode["draft"] + out["forward_b1_ms"]
        return out

    def images(self, batch_size: int, seconds: float) -> dict:
        """A round like a server's: encode_image on one prepared batch, back to back, for `seconds`."""
        batch = self.batch(batch_size)
        cpu = _cpu_s()
        with self.torch.inference_mode():
            times = _timed(lambda: self.model.encode_image(batch), seconds, 2, warmup=0)
        return {"items": batch_size * len(times), "requests": len(times), "elapsed_s": sum(times),
                "latencies_s": times, "cpu_s": _cpu_s() - cpu}

    def latency(self, seconds: float) -> dict:
        """A round of lone requests without a server: draft decode + preprocess + a batch-1 forward, each."""
        cycle = itertools.cycle(self.jpegs)

        def one() -> None:
            self.model.encode_image(self.prepare(next(cycle), draft=True).unsqueeze(0))
        cpu = _cpu_s()
        with self.torch.inference_mode():
            times = _timed(one, seconds, 3, warmup=0)
        return {"items": len(times), "requests": len(times), "elapsed_s": sum(times), "latencies_s": times,
                "cpu_s": _cpu_s() - cpu}


def raw_worker(model_dir: Path, image_dir: Path) -> int:
    """The child process: answers one JSON line on its original stdout per JSON command line on stdin."""
    answers = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    raw = RawModel(model_dir, image_dir)
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        answers.write(json.dumps(getattr(raw, command["op"])(**command["args"])) + "\n")
        answers.flush()
    return 0


class RawProcess:
    """The parent's handle on the raw model worker; it idles (sleeping OpenMP threads) between commands."""

    name = "a"

    def __init__(self, work_dir: Path, env: dict):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--raw-worker",
                                         "--work-dir", str(work_dir)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise BenchmarkError(f"the raw model process exited with {self.process.wait()}")
        return json.loads(line)

    def call(self, op: str, **args) -> dict:
        self.process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
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


MODEL_ONLY_PROBE = """
import gc, json, sys
sys.path.insert(0, sys.argv[2])
from clip_sagemaker.model import load_model
from clip_sagemaker.model_source import resolve_model_source
from clip_sagemaker.settings import Settings
source = resolve_model_source(Settings(model_dir=sys.argv[1], model_dir_explicit=True))
model = load_model(source, torch_threads=2)
gc.collect()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
print(json.dumps({k: int(v.split()[0]) / 1024 for k, v in status.items()}))
"""


# ---- the report -------------------------------------------------------------------------------------------

def machine() -> dict:
    import importlib.metadata as metadata

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        mem_gb = float("nan")

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cores": len(os.sched_getaffinity(0)), "cpu": cpu, "memory_gb": round(mem_gb, 1),
            "python": platform.python_version(), "torch": version("torch"),
            "open_clip": version("open_clip_torch"), "pillow": version("pillow"), "commit": commit}


def target(name: str, measured: Optional[float], required: float, detail: str, at_most: bool = False,
           disturbed: bool = False) -> dict:
    if measured is None:
        return {"target": name, "measured": None, "required": required, "detail": detail, "result": "n/a",
                "at_most": at_most, "disturbed": False}
    ok = measured <= required if at_most else measured >= required
    # A verdict from rounds that other processes disturbed is not one: it says so next to it.
    result = ("PASS" if ok else "MISS") + (" (disturbed: rerun)" if disturbed else "")
    return {"target": name, "measured": measured, "required": required, "detail": detail, "result": result,
            "at_most": at_most, "disturbed": disturbed}


def evaluate_targets(cells: dict, raw: Optional[dict], memory: dict) -> list[dict]:
    def rate(scenario: str, server: str) -> Optional[float]:
        cell = cells.get((scenario, server))
        return cell.rate if cell else None

    def p50_ms(scenario: str, server: str) -> Optional[float]:
        cell = cells.get((scenario, server))
        return percentile(cell.latencies(), 50) * 1000 if cell else None

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return a / b if a is not None and b else None

    def disturbed(*keys: tuple[str, str]) -> bool:
        return any(o > OTHER_LOAD_LIMIT for key in keys if key in cells
                   for o in cells[key].as_json()["round_other_cpu_cores"])

    out = []
    b8, c8, a8 = rate("image-c8", "b"), rate("image-c8", "c"), rate("image-c8", "a")
    up_front = f"; up front: {raw['encode_image']['8']['items_per_s']:.1f}" if raw else ""
    out.append(target("image c=8: (b) / (a) raw model at batch 8, side by side", ratio(b8, a8), 0.8,
                      f"{b8:.1f} vs {a8:.1f} img/s{up_front}" if b8 and a8 else "not measured",
                      disturbed=disturbed(("image-c8", "b"), ("image-c8", "a"))))
    out.append(target("image c=8: (b) / (c)", ratio(b8, c8), 1.4,
                      f"{b8:.1f} vs {c8:.1f} img/s" if b8 and c8 else "not measured",
                      disturbed=disturbed(("image-c8", "b"), ("image-c8", "c"))))
    bt, ct = rate("text-c8", "b"), rate("text-c8", "c")
    out.append(target("short texts c=8: (b) / (c)", ratio(bt, ct), 7.0,
                      f"{bt:.1f} vs {ct:.1f} texts/s" if bt and ct else "not measured",
                      disturbed=disturbed(("text-c8", "b"), ("text-c8", "c"))))
    bk, ck = rate("classify-c4", "b"), rate("classify-c4", "c")
    out.append(target("classification c=4: (b) / (c)", ratio(bk, ck), 4.0,
                      f"{bk:.2f} vs {ck:.2f} req/s" if bk and ck else "not measured",
                      disturbed=disturbed(("classify-c4", "b"), ("classify-c4", "c"))))
    lat_b, floor = p50_ms("image-c1", "b"), p50_ms("image-c1", "a")
    up_front = f"; up front: {raw['latency_floor_ms']:.1f} ms" if raw else ""
    out.append(target("image c=1 p50 latency: (b) / (a) draft decode + preprocess + batch-1 forward",
                      ratio(lat_b, floor), 1.1,
                      f"{lat_b:.1f} vs {floor:.1f} ms{up_front}" if lat_b and floor else "not measured",
                      at_most=True, disturbed=disturbed(("image-c1", "b"), ("image-c1", "a"))))
    peak, alone = memory.get("peak_b_mb"), memory.get("model_only_mb")
    out.append(target("memory: server (b) peak RSS / model-only process", ratio(peak, alone), 1.25,
                      f"{peak:.0f} vs {alone:.0f} MB" if peak and alone else "not measured", at_most=True))
    return out


def _cores(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_report(meta: dict, config: dict, servers: list[Server], raw: Optional[dict], cell_list: list[Cell],
                  memory: dict, targets: list[dict]) -> str:
    lines = [f"# clip-sagemaker benchmark, {meta['date']}", "",
             f"Machine: {meta['cores']} cores ({meta['cpu']}), {meta['memory_gb']} GB RAM; Python {meta['python']}, "
             f"torch {meta['torch']}, open_clip {meta['open_clip']}, Pillow {meta['pillow']}; commit {meta['commit']} "
             f"(the working tree may differ).",
             f"Model: {ARCH}, seeded random weights (full size), {config['model_dir']}.",
             f"Load: {config['rounds']} interleaved rounds x {config['seconds']:g} s per server and scenario, after a "
             f"{config['warmup']:g} s warm-up; {N_IMAGES} photo-like {IMAGE_W}x{IMAGE_H} JPEGs (quality "
             f"{JPEG_QUALITY}, about {config['jpeg_kb']:.0f} KB each). The client runs on the same cores.", ""]
    disturbed = [(c, o) for c in cell_list for o in c.as_json()["round_other_cpu_cores"] if o > OTHER_LOAD_LIMIT]
    before = meta.get("busy_cores_before_start", 0.0)
    raw_other = raw.get("other_cpu_cores", 0.0) if raw else 0.0
    if disturbed or before > OTHER_LOAD_LIMIT or raw_other > OTHER_LOAD_LIMIT:
        worst = max([o for _, o in disturbed] + [before, raw_other])
        lines += [f"**WARNING: other processes on this machine used CPU during the run** (up to {worst:.2f} cores in "
                  f"a round; {len(disturbed)} of {sum(len(c.rounds) for c in cell_list)} rounds above "
                  f"{OTHER_LOAD_LIMIT} cores; {before:.2f} cores busy before the start; {raw_other:.2f} during (a)'s "
                  "table). Those figures are disturbed: rerun on a quiet machine.", ""]
    else:
        lines += [f"Other processes stayed below {OTHER_LOAD_LIMIT} cores in every round (the figures are "
                  "undisturbed by them; the host may still vary).", ""]
    for server in servers:
        info = server.info
        cache = info.get("text_cache", {}).get("capacity")
        lines.append(f"- ({server.name}) {server.label}: max batch {info.get('max_batch_size')}, text cache "
                     f"{cache}, trimmed text {info.get('trimmed_text')}; env "
                     f"{' '.join(f'{k}={v}' for k, v in server.extra_env.items()) or '(defaults)'}")
    lines.append("- JPEG draft decoding is on in both servers (the product default), so (b) vs (c) isolates batching, "
                 "the text cache and trimmed text.")
    if raw:
        lines.append(f"- (a) runs open_clip in a process of its own with OMP_WAIT_POLICY={config['raw_omp_wait_policy']}; "
                     "the servers run with the OMP_WAIT_POLICY they inherit (the OpenMP default unless given).")
    lines.append("")
    if raw:
        text = raw["encode_text"]
        lines += ["## (a) Raw model, up front: open_clip, no server, 2 torch threads, inference_mode", "",
                  "| measurement | per call (median) | items/s | CPU cores |", "|---|---:|---:|---:|"]
        for batch_size, row in raw["encode_image"].items():
            lines.append(f"| encode_image, batch {batch_size} | {row['median_batch_ms']:.1f} ms | "
                         f"{row['items_per_s']:.1f} | {row['cpu_cores']:.2f} |")
        lines += [f"| encode_image, best | | {raw['best_image_items_per_s']:.1f} | |",
                  f"| encode_text, batch {text['batch']} ({text['tokens'][1]} tokens, 4-8 words) | "
                  f"{text['median_batch_ms']:.1f} ms | {text['items_per_s']:.1f} | {text['cpu_cores']:.2f} |",
                  f"| decode + preprocess, one {IMAGE_W}x{IMAGE_H} JPEG, full decode | "
                  f"{raw['decode_preprocess_ms']['full']:.2f} ms | | |",
                  f"| decode + preprocess, with JPEG draft | {raw['decode_preprocess_ms']['draft']:.2f} ms | | |",
                  f"| c=1 latency floor: draft decode + batch-1 forward | {raw['latency_floor_ms']:.1f} ms | | |", ""]
    lines += ["## Load: (b) product defaults vs (c) one forward per item, no cache, padded text", "",
              "items/s: images or texts embedded per second; classification: requests per second (1 image, the same "
              "6 classes). CPU: cores busy on average in the server (master + workers), in this client, and in other "
              "processes on the machine (not the benchmark's). Rows (a): "
              "the raw model's rounds, interleaved with the servers' (latencies per batch, or per lone image).", "",
              "| scenario | conc. | server | items/s | per round | p50 ms | p99 ms | requests | errors "
              "| server CPU | client CPU | other CPU |",
              "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cell in cell_list:
        row = cell.as_json()
        kind = SCENARIOS[cell.scenario][0]
        who = f"(a) {cell.label}" if cell.server == "a" else f"({cell.server})"
        concurrency = "-" if cell.server == "a" else str(cell.concurrency)
        unit = "img/s" if cell.server == "a" else UNITS[kind]
        lines.append(f"| {cell.scenario} | {concurrency} | {who} | {row['items_per_s']:.1f} {unit} | "
                     f"{' / '.join(f'{r:.1f}' for r in row['round_items_per_s'])} | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} | {row['requests']} | 0 | {_cores(row['server_cpu_cores'])} | "
                     f"{_cores(row['client_cpu_cores'])} | {_cores(row['other_cpu_cores'])} |")
    pairs: dict = {}
    for cell in cell_list:
        pairs.setdefault(cell.scenario, {})[cell.server] = cell.rate
    if any(p.get("b") and p.get("c") for p in pairs.values()):
        lines += ["", "| scenario | (b) / (c) |", "|---|---:|"]
        for scenario, by_server in pairs.items():
            if by_server.get("b") and by_server.get("c"):
                lines.append(f"| {scenario} | {by_server['b'] / by_server['c']:.2f}x |")
    lines += ["", "## Memory (VmRSS; servers: gunicorn master + workers, peak while under load)", "",
              "| process | MB |", "|---|---:|"]
    if memory.get("model_only_mb"):
        lines.append(f"| model only (load_model, after gc; its VmHWM {memory['model_only_hwm_mb']:.0f} MB) | "
                     f"{memory['model_only_mb']:.0f} |")
    for server in servers:
        if server.peak_rss_mb:
            lines.append(f"| server ({server.name}): idle after start {server.idle_rss_mb:.0f} MB, peak under load | "
                         f"{server.peak_rss_mb:.0f} |")
    lines += ["", "## Targets", "", "| target | measured | ratio | required | result |", "|---|---|---:|---:|---|"]
    for t in targets:
        ratio = f"{t['measured']:.2f}x" if t["measured"] is not None else "-"
        bound = "<=" if t.get("at_most") else ">="
        lines.append(f"| {t['target']} | {t['detail']} | {ratio} | {bound} {t['required']:g}x | {t['result']} |")
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------

def parse_scenarios(value: str) -> list[str]:
    chosen = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        matches = [name for name, (kind, _) in SCENARIOS.items() if part in (name, kind)]
        if not matches:
            raise argparse.ArgumentTypeError(f"unknown scenario {part!r}; choose from {', '.join(SCENARIOS)} "
                                             "or image, text, classify")
        chosen.extend(m for m in matches if m not in chosen)
    return [name for name in SCENARIOS if name in chosen]


def estimate_s(args) -> float:
    load = len(args.scenarios) * 2 * (args.warmup + args.rounds * (args.seconds + 0.7))
    if args.skip_raw:
        return 35 + load
    side_by_side = sum(1 for s in args.scenarios if s in RAW_ROUNDS) * (args.warmup + args.rounds * args.seconds)
    return 35 + 20 + 4.5 * args.seconds * 0.6 + 8 + load + side_by_side


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the run like Ctrl-C: the servers still get stopped


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="where the model directory, images and server logs go (reused; default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=7.0,
                        help="seconds per round and server (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up per scenario and server (default %(default)s)")
    parser.add_argument("--scenarios", type=parse_scenarios, default=list(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)}, or kinds image, text, classify "
                             "(default: all)")
    parser.add_argument("--skip-raw", action="store_true", help="skip (a), the in-process raw model measurement")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every figure to this JSON file")
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup <= 0:
        parser.error("--rounds must be at least 1, --seconds and --warmup above 0")
    work_dir = args.work_dir.resolve()
    model_dir, image_dir, log_dir = work_dir / "model-vit-b-32", work_dir / "images", work_dir / "logs"

    if args.raw_worker:  # the child process that measures (a)
        return raw_worker(model_dir, image_dir)

    _word_check()
    estimate = estimate_s(args)
    log(f"benchmark: scenarios {', '.join(args.scenarios)}; {args.rounds} rounds x {args.seconds:g} s; expected "
        f"duration about {estimate / 60:.1f} minutes (more on the first run, which builds the model directory)")
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    servers: list[Server] = []
    raw_process: Optional[RawProcess] = None
    sampler = MemorySampler()
    python = sys.executable
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CONTAINER),
                                                                            os.environ.get("PYTHONPATH")])),
                 "HF_HUB_OFFLINE": "1"}
    try:
        meta = machine()
        busy = machine_busy_s()
        time.sleep(2.0)
        meta["busy_cores_before_start"] = round((machine_busy_s() - busy) / 2.0, 2)
        if meta["busy_cores_before_start"] > 0.2:
            log(f"WARNING: the machine is not idle ({meta['busy_cores_before_start']:.2f} cores busy before the start): "
                "expect disturbed figures")
        if not (model_dir / "open_clip_model.safetensors").is_file():
            log(f"building {model_dir} ({ARCH}, seeded random weights)")
            subprocess.run([python, "-m", "clip_sagemaker.model_files", ARCH, "--out", str(model_dir)],
                           env=child_env, check=True, stdout=subprocess.DEVNULL)
        else:
            log(f"reusing {model_dir}")
        jpegs = make_jpegs(image_dir, N_IMAGES)
        log_dir.mkdir(parents=True, exist_ok=True)

        raw = None
        if not args.skip_raw:
            log("(a) raw model: open_clip in a process of its own, 2 threads (it stays, idle, for side-by-side rounds)")
            raw_process = RawProcess(work_dir, child_env)
            ACCOUNTED_PIDS.append(raw_process.process.pid)
            other, wall = OtherLoad(), time.perf_counter()
            raw = raw_process.call("table", seconds=args.seconds * 0.6)
            raw["other_cpu_cores"] = other.seconds() / (time.perf_counter() - wall)
            log(f"(a) best {raw['best_image_items_per_s']:.1f} img/s; batch 8 "
                f"{raw['encode_image']['8']['items_per_s']:.1f} img/s; text batch 8 "
                f"{raw['encode_text']['items_per_s']:.1f} texts/s; latency floor {raw['latency_floor_ms']:.1f} ms")

        log("starting servers (b) and (c), and a model-only process for the memory baseline")
        servers = [Server("b", "product defaults", model_dir, SERVER_B, log_dir),
                   Server("c", "one forward per item, no cache, padded text", model_dir, SERVER_C, log_dir)]
        ACCOUNTED_PIDS.extend(server.process.pid for server in servers)
        probe = subprocess.Popen([python, "-c", MODEL_ONLY_PROBE, str(model_dir), str(CONTAINER)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env)
        probe_out, _ = probe.communicate(timeout=300)
        if probe.returncode != 0:
            raise BenchmarkError(f"the model-only process failed with exit status {probe.returncode}")
        model_only = json.loads(probe_out.strip().splitlines()[-1])
        deadline = time.monotonic() + 240
        for server in servers:
            server.wait_ready(deadline)
        expected_c = (servers[1].info.get("max_batch_size"), servers[1].info.get("text_cache", {}).get("capacity"),
                      servers[1].info.get("trimmed_text"))
        if expected_c != (1, 0, False):
            raise BenchmarkError(f"server (c) is not configured as asked: /info says {servers[1].info}")
        time.sleep(1.0)
        for server in servers:
            server.idle_rss_mb = tree_rss_mb(server.process.pid)
        log(f"servers ready: (b) {servers[0].url}, (c) {servers[1].url}; model-only RSS "
            f"{model_only['VmRSS']:.0f} MB")

        sampler.start()
        cell_list: list[Cell] = []
        for name in args.scenarios:
            log(f"scenario {name}")
            cell_list += run_scenario(name, servers, raw_process, jpegs, args.rounds, args.seconds, args.warmup, sampler)
        sampler.stop()

        memory = {"model_only_mb": model_only["VmRSS"], "model_only_hwm_mb": model_only["VmHWM"],
                  "peak_b_mb": servers[0].peak_rss_mb or None, "peak_c_mb": servers[1].peak_rss_mb or None,
                  "idle_b_mb": servers[0].idle_rss_mb, "idle_c_mb": servers[1].idle_rss_mb}
        cells = {(c.scenario, c.server): c for c in cell_list}
        targets = evaluate_targets(cells, raw, memory)
        config = {"model_dir": str(model_dir), "rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup,
                  "scenarios": args.scenarios, "jpeg_kb": sum(len(j) for j in jpegs) / len(jpegs) / 1024,
                  "servers": {s.name: {"label": s.label, "env": s.extra_env, "info": s.info} for s in servers},
                  "raw_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "(unset: the OpenMP default)"}
        report = render_report(meta, config, servers, raw, cell_list, memory, targets)
        print(report, flush=True)
        log(f"done in {(time.monotonic() - started) / 60:.1f} minutes")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"machine": meta, "config": config, "raw": raw,
                                             "cells": [c.as_json() for c in cell_list], "memory": memory,
                                             "targets": targets}, indent=2))
            log(f"wrote {args.json}")
        return 0
    except BenchmarkError as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave a server behind
        sampler.target = None
        if raw_process is not None:
            raw_process.stop()
        for server in servers:
            server.stop()
        if servers:
            log("servers stopped")


if __name__ == "__main__":
    sys.exit(main())
