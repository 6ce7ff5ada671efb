#!/usr/bin/env python3
"""The GPU path, proved in one short run: local_test/gpu_check.sh drives this file (docs/gpu-check.md).

    python local_test/gpu_check.py run [--dry-run] [--work-dir DIR]   the check itself; one table at the end
    python local_test/gpu_check.py wheel-list                         name==version of every wheel to carry
    python local_test/gpu_check.py install-wheels WHEELS TARGET       install them offline (pip, else unzip)

`run` builds a full-size random ViT-B-32, loads it through the production loader in fp16 on CUDA, checks it
against fp32, measures the in-process limit (JPEG decode + preprocess over a process pool on every core, the
fp16 forward at batch 32/64/128/256, both together), torchvision's GPU JPEG decoder beside the CPU path,
then `./serve` on the GPU at concurrency 64 (images, then short texts) and the GPU memory it peaks at.
`--dry-run` runs the same steps on the CPU with a tiny model at fp32 and a few requests (CI).

Top-level imports are the standard library only: the client and decode processes are spawned and import
this file first, and `wheel-list` / `install-wheels` must run where torch is not importable.
"""
from __future__ import annotations

import argparse
import base64
import gc
import http.client
import io
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from concurrent.futures import ProcessPoolExecutor, wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "container"))

# The GPU machine brings these; every other runtime dependency travels as a wheel.
MACHINE_PACKAGES = ("torch", "torchvision")
TARGET_PYTHON = "3.12"
AGREEMENT_MIN = 0.995  # min cosine, fp16 against fp32 (and the server against in-process)
MAX_PIXELS = 40_000_000


# ---------------------------------------------------------------------------------------------- wheels

def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def wheel_closure(requirements: Path = REPO / "requirements.txt") -> list[tuple[str, str]]:
    """Every distribution requirements.txt needs on Linux x86_64 / CPython 3.12 but torch and torchvision
    (and what only they need), at the version installed in this interpreter: the checkout's .venv, whose
    versions are requirements.txt's pins."""
    from importlib import metadata

    from packaging.requirements import Requirement

    env = {"python_version": TARGET_PYTHON, "python_full_version": TARGET_PYTHON + ".0", "os_name": "posix",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    roots = [Requirement(line.split("#")[0].strip()) for line in requirements.read_text().splitlines()
             if line.split("#")[0].strip()]
    found: dict[str, str] = {}
    stack = list(roots)
    while stack:
        req = stack.pop()
        name = _canonical(req.name)
        if name in MACHINE_PACKAGES or name in found or (req.marker and not req.marker.evaluate(env)):
            continue
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"wheel-list: {req} is needed but not installed in {sys.executable}") from None
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise SystemExit(f"wheel-list: {req} is needed but {name} {version} is installed in {sys.executable}")
        found[name] = version
        stack.extend(Requirement(r) for r in metadata.requires(name) or [])
    return sorted(found.items())


def install_wheels(wheels: Path, target: Path) -> None:
    """Installs every wheel in `wheels` into `target` without an index and without resolving (the folder
    is the whole set, wheel-list's closure): with pip when this interpreter has it, else by unpacking."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"install-wheels: no wheels in {wheels}; fetch them with local_test/gpu_check.sh --fetch-wheels")
    target.mkdir(parents=True, exist_ok=True)
    has_pip = (os.environ.get("GPU_CHECK_UNZIP") != "1"  # GPU_CHECK_UNZIP=1 tries the no-pip path
               and subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0)
    if has_pip:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
                        "--no-deps", "--disable-pip-version-check", "--no-compile", "--target", str(target),
                        *map(str, files)], check=True, timeout=180)
    else:  # a venv made without pip (uv's): a wheel is a zip laid out as site-packages
        for path in files:
            with zipfile.ZipFile(path) as wheel:
                for member in wheel.infolist():
                    parts = member.filename.split("/")
                    if parts[0].endswith(".data"):
                        if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                            continue  # scripts, headers, data: not needed to import
                        parts = parts[2:]
                    out = target.joinpath(*parts)
                    if member.is_dir():
                        continue
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(wheel.read(member))
    missing = missing_requirements(target)
    if missing:
        raise SystemExit("install-wheels: the wheel folder is incomplete; missing: " + ", ".join(missing))
    print(f"install-wheels: {len(files)} wheels into {target} ({'pip' if has_pip else 'unpacked'}); "
          f"torch and torchvision are the machine's")


def missing_requirements(target: Path) -> list[str]:
    """Requirements of the distributions in `target` that neither `target` nor this interpreter satisfies
    (torch and torchvision are left to the machine)."""
    from importlib import metadata

    sys.path.insert(0, str(target))  # packaging may itself be one of the wheels
    from packaging.requirements import Requirement

    env = {"extra": ""}
    here = {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(target)])}
    missing = []
    for dist in metadata.distributions(path=[str(target)]):
        for text in dist.requires or []:
            req = Requirement(text)
            name = _canonical(req.name)
            if name in MACHINE_PACKAGES or (req.marker and not req.marker.evaluate(env)):
                continue
            version = here.get(name)
            if version is None:
                try:
                    version = metadata.version(name)
                except metadata.PackageNotFoundError:
                    missing.append(f"{req} (for {dist.metadata['Name']})")
                    continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                missing.append(f"{req} (for {dist.metadata['Name']}; {version} found)")
    return sorted(set(missing))


# ---------------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class Plan:
    dry: bool
    device: str
    precision: str
    arch: str
    model_cfg: Optional[dict]
    batches: tuple[int, ...]
    concurrency: int
    client_procs: int
    measure_s: float  # each in-process measurement
    serve_s: float  # each server measurement
    warm_s: float
    serve_start_s: float  # the most ./serve may take to answer /ping
    images: int  # distinct JPEGs


def make_plan(dry: bool) -> Plan:
    if dry:
        cfg = json.loads((REPO / "tests" / "fixtures" / "tiny_open_clip_config.json").read_text())
        return Plan(dry=True, device="cpu", precision="fp32", arch="gpu-check-tiny", model_cfg=cfg,
                    batches=(32, 64, 128, 256), concurrency=8, client_procs=1, measure_s=0.6, serve_s=1.5,
                    warm_s=0.3, serve_start_s=60, images=16)
    return Plan(dry=False, device="cuda", precision="fp16", arch="ViT-B-32", model_cfg=None,
                batches=(32, 64, 128, 256), concurrency=64, client_procs=4, measure_s=4.0, serve_s=8.0,
                warm_s=2.0, serve_start_s=150, images=64)


# ---------------------------------------------------------------------------------------------- inputs

def make_jpegs(count: int, seed: int = 0, size=(640, 480)) -> list[bytes]:
    """Photo-like 640x480 JPEGs: smooth colour fields, a few soft shapes, sensor-like noise; quality 90."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(count):
        image = np.zeros((height, width, 3), np.float32)
        for c in range(3):
            a, b, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 6.3)
            image[..., c] = 128 + 60 * (a * x / width + b * y / height) + 40 * np.sin(x / rng.uniform(40, 200) + phase)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, 150)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
            image += blob * rng.uniform(-90, 90, 3)
        coarse = rng.normal(0, 10, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)
        image += coarse + rng.normal(0, 4, image.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


SHORT_TEXTS = ("a photo of a dog", "a red car parked on a street", "two people walking on a beach",
               "a bowl of fruit on a wooden table", "a city skyline at night", "a cat sleeping on a sofa",
               "a mountain lake in the morning", "a plate of pasta")


# ---------------------------------------------------------------------------------------------- decode pool

_worker: dict = {}


def _pool_init(preprocess, jpegs: list[bytes], draft_size: int) -> None:
    import torch

    torch.set_num_threads(1)
    _worker.update(preprocess=preprocess, jpegs=jpegs, draft=draft_size, buffers={})


def _pool_decode(path: str, shape: tuple, slot: int, first_row: int, indices: list[int]) -> int:
    """Decodes and preprocesses images into rows of a shared buffer slot, exactly as a request thread does:
    inputs.decode_image then ClipModel.prepare_image (which is `_preprocess(image)`)."""
    import numpy as np
    from clip_sagemaker.inputs import decode_image

    buffers = _worker["buffers"]
    if path not in buffers:
        buffers.clear()
        buffers[path] = np.memmap(path, dtype=np.float32, mode="r+", shape=shape)
    rows = buffers[path][slot]
    for offset, index in enumerate(indices):
        image = decode_image(_worker["jpegs"][index], "image", MAX_PIXELS, draft_size=_worker["draft"])
        rows[first_row + offset] = _worker["preprocess"](image).numpy()
    return len(indices)


def _pool_ping() -> int:
    return os.getpid()


class DecodePool:
    """A process pool over every core, writing preprocessed rows into a shared (memory-mapped) ring of
    batch slots that the forward pass reads in place."""

    def __init__(self, workers: int, preprocess, jpegs: list[bytes], draft_size: int, row_shape: tuple,
                 work_dir: Path):
        import multiprocessing

        self.workers = workers
        self.count = len(jpegs)
        self.row_shape = row_shape
        self._dir = work_dir
        self._ring = 0
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_pool_init, initargs=(preprocess, jpegs, draft_size))
        pids = {f.result(timeout=120) for f in [self.pool.submit(_pool_ping) for _ in range(workers * 2)]}
        self.started = len(pids)

    def _ring_file(self, nbytes: int) -> Path:
        shm = Path("/dev/shm")
        try:
            roomy = shm.is_dir() and os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize > 2 * nbytes
        except OSError:
            roomy = False
        self._ring += 1
        return (shm if roomy else self._dir) / f"gpu-check-{os.getpid()}-{self._ring}.f32"

    def run(self, batch: int, seconds: float, consume: Optional[Callable] = None, min_batches: int = 3) -> float:
        """Images per second through decode (+ `consume(batch_tensor)` on each full batch), for `seconds`."""
        import numpy as np
        import torch

        chunk = max(1, batch // self.workers)
        slots = max(3, math.ceil(3 * self.workers * chunk / batch) + 1)
        shape = (slots, batch, *self.row_shape)
        path = self._ring_file(int(np.prod(shape)) * 4)
        ring = np.memmap(path, dtype=np.float32, mode="w+", shape=shape)
        try:
            tensors = [torch.from_numpy(ring[s]) for s in range(slots)]
            pending: dict[int, list] = {}
            order: list[int] = []
            next_image = 0

            def submit(slot: int) -> None:
                nonlocal next_image
                tasks = []
                for first in range(0, batch, chunk):
                    n = min(chunk, batch - first)
                    indices = [(next_image + i) % self.count for i in range(n)]
                    next_image += n
                    tasks.append(self.pool.submit(_pool_decode, str(path), shape, slot, first, indices))
                pending[slot] = tasks
                order.append(slot)

            for s in range(slots):
                submit(s)
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds or done < min_batches * batch:
                slot = order.pop(0)
                for task in pending.pop(slot):
                    task.result(timeout=60)
                if consume is not None:
                    consume(tensors[slot])
                done += batch
                submit(slot)
            elapsed = time.perf_counter() - t0
            wait_futures([t for tasks in pending.values() for t in tasks], timeout=60)
            return done / elapsed
        finally:
            del ring
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------- model work

def cosine_rows(a, b) -> float:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_rate(step: Callable[[], int], seconds: float, min_steps: int = 3) -> float:
    """Items per second of `step` (which returns how many items it did), run for about `seconds`."""
    done = steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < min_steps:
        done += step()
        steps += 1
    return done / (time.perf_counter() - t0)


def gpu_decode(jpegs: list[bytes], image_size: tuple[int, int], preprocess_cfg: dict, device: str):
    """torchvision.io.decode_jpeg on `device` (batched), then resize (bicubic, antialiased), centre crop and
    normalise there: the GPU counterpart of decode_image + prepare_image. Returns (decode, decode+prepare)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

    mean = torch.tensor(preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device).view(1, 3, 1, 1)
    datas = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]

    modes = [ImageReadMode.RGB, ImageReadMode.UNCHANGED]  # the test JPEGs are RGB: UNCHANGED is the same

    def decode(indices: list[int]):
        while True:
            try:
                return decode_jpeg([datas[i] for i in indices], mode=modes[0], device=device)
            except RuntimeError:
                if len(modes) == 1:
                    raise
                modes.pop(0)

    def prepare(indices: list[int]):
        decoded = torch.stack(decode(indices))  # the test images share one size; a server would resize each
        x = F.resize(decoded, [min(image_size)], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        x = F.center_crop(x, list(image_size)).float().div_(255)
        return (x - mean) / std

    return decode, prepare


# ---------------------------------------------------------------------------------------------- HTTP clients

def _client(port: int, kind: str, bodies: list[bytes], threads: int, start_at: float, seconds: float,
            proc: int) -> dict:
    """One client process: `threads` keep-alive connections posting one item each until the window ends."""
    results = {"count": 0, "errors": 0, "latencies": [], "first_error": None}
    lock = threading.Lock()
    end = start_at + seconds
    expect = b'"image_embeddings"' if kind == "images" else b'"text_embeddings"'

    def worker(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies, count, errors, first_error, n = [], 0, 0, None, 0
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            now = time.time()
            if now >= end:
                break
            if kind == "images":
                body = bodies[(proc * 7919 + t * 131 + n) % len(bodies)]
            else:  # unique texts: the server's text cache must not answer them
                text = f"{bodies[n % len(bodies)].decode()} number {proc}-{t}-{n}"
                body = json.dumps({"task": "embed", "texts": [text]}).encode()
            n += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json",
                                                             "Accept": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                ok = response.status == 200 and expect in payload
            except (OSError, http.client.HTTPException) as exc:
                ok, payload = False, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if time.time() > end:
                break  # finished after the window: not counted
            if ok:
                count += 1
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
                first_error = first_error or payload[:300].decode(errors="replace")
        conn.close()
        with lock:
            results["count"] += count
            results["errors"] += errors
            results["latencies"].extend(latencies)
            results["first_error"] = results["first_error"] or first_error

    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + (start_at - time.time()) + 40)
    return results


@dataclass
class Load:
    rate: float
    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    first_error: Optional[str]


def drive(clients: ProcessPoolExecutor, plan: Plan, port: int, kind: str, bodies: list[bytes],
          seconds: float) -> Load:
    per_proc = [plan.concurrency // plan.client_procs + (1 if i < plan.concurrency % plan.client_procs else 0)
                for i in range(plan.client_procs)]
    start_at = time.time() + 0.5
    futures = [clients.submit(_client, port, kind, bodies, n, start_at, seconds, i) for i, n in enumerate(per_proc)]
    parts = [f.result(timeout=seconds + 60) for f in futures]
    latencies = sorted(x for p in parts for x in p["latencies"])
    count = sum(p["count"] for p in parts)

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return Load(rate=count / seconds, count=count, errors=sum(p["errors"] for p in parts), p50_ms=pct(0.5),
                p99_ms=pct(0.99), first_error=next((p["first_error"] for p in parts if p["first_error"]), None))


def post_json(port: int, payload: dict, timeout: float = 30) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", json.dumps(payload).encode(), {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /invocations answered {response.status}: {body[:300]!r}")
        return json.loads(body)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """./serve in its own process group (under `timeout`, so that it cannot outlive this run)."""

    def __init__(self, plan: Plan, model_dir: Path, work_dir: Path, lifetime_s: int):
        self.port = free_port()
        env = dict(os.environ)
        env.update(MODEL_DIR=str(model_dir), DEVICE=plan.device, PRECISION=plan.precision,
                   SERVER_THREADS=str(plan.concurrency + 16), SAGEMAKER_BIND_TO_PORT=str(self.port),
                   LOG_LEVEL="warning", PYTHON=sys.executable)
        self.log_path = work_dir / "serve.log"
        self._log = open(self.log_path, "wb")
        command = [str(REPO / "serve")]
        if shutil_which("timeout"):
            command = ["timeout", "-k", "5", str(max(30, lifetime_s)), *command]
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, seconds: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if self.proc.poll() is not None:
                raise RuntimeError(f"./serve exited with {self.proc.returncode} before answering /ping: {self.log_tail(1)}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/ping")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return time.perf_counter() - t0
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"./serve did not answer /ping within {seconds:.0f} s: {self.log_tail(1)}")

    def pids(self) -> list[int]:
        """Processes of the server's group (timeout, gunicorn's master and its worker)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[2]) == self.proc.pid:
                        found.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    pass
        return found

    def peak_rss_mb(self) -> float:
        """The largest peak resident set (VmHWM) among the server's processes: the model worker's."""
        peak = 0.0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
            except OSError:
                pass
        return peak

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> float:
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()
        return time.perf_counter() - t0


def shutil_which(name: str) -> Optional[str]:
    import shutil

    return shutil.which(name)


class DeviceMemoryWatch:
    """Peak device memory in use while it runs (cudaMemGetInfo, all processes), above a baseline."""

    def __init__(self, device: str):
        import torch

        self._torch = torch
        self.enabled = device.startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()
        self.baseline = self._used() if self.enabled else 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.enabled:
            self._thread.start()

    def _used(self) -> int:
        free, total = self._torch.cuda.mem_get_info()
        return total - free

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self._used())

    def stop(self) -> int:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=5)
        return max(0, self.peak - self.baseline)


# ---------------------------------------------------------------------------------------------- the table

@dataclass
class Table:
    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, what: str, result: str, notes: str = "") -> None:
        self.rows.append((what, result, notes))
        print(f"gpu_check: {what}: {result}  {notes}".rstrip(), flush=True)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"gpu_check: FAIL: {message}", flush=True)

    def render(self) -> str:
        w1 = max([len("measure")] + [len(r[0]) for r in self.rows])
        w2 = max([len("result")] + [len(r[1]) for r in self.rows])
        lines = [self.title, f"{'measure':<{w1}}  {'result':>{w2}}  notes", f"{'-' * w1}  {'-' * w2}  {'-' * 5}"]
        lines += [f"{a:<{w1}}  {b:>{w2}}  {c}".rstrip() for a, b, c in self.rows]
        lines.append("result: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))
        return "\n".join(lines)


def rate(value: float, unit: str = "img/s") -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.2f} GiB"


# ---------------------------------------------------------------------------------------------- run

@dataclass
class Held:
    """What run's `finally` must stop, whichever step failed: ./serve and the two process pools."""
    server: Optional[Server] = None
    clients: Optional[ProcessPoolExecutor] = None
    pool: Optional[DecodePool] = None

    def release(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.pool is not None:
            self.pool.close()
        if self.clients is not None:
            self.clients.shutdown(cancel_futures=True)


def prepare_jpeg(model, jpeg: bytes, draft: int):
    """decode_image + prepare_image, exactly as a request thread does."""
    from clip_sagemaker.inputs import decode_image

    return model.prepare_image(decode_image(jpeg, "image", MAX_PIXELS, draft_size=draft))


@dataclass
class Subject:
    """The model under test and the inputs and embeddings that the later steps reuse."""
    model_dir: Path
    model: object  # None once the in-process steps are done: ./serve's device memory must be its own
    jpegs: list[bytes]
    draft: int
    rows: list  # the first JPEGs, prepared
    texts: list[str]
    image_embeddings: object  # of `rows`, by `model`
    text_embeddings: object  # of `texts`, by `model`

    def prepare(self, index: int):
        return prepare_jpeg(self.model, self.jpegs[index], self.draft)


@dataclass
class InProcess:
    """The in-process limit that the server is held against."""
    decode: float  # img/s, the CPU pool alone
    best: int  # the batch with the fastest forward
    forward: float  # img/s, the forward alone at `best`
    combined: float  # img/s, the pool feeding the forward at `best`
    bound: str
    peak: int  # bytes torch allocated, the most over all batches


def begin(plan: Plan, cpus: int) -> Table:
    """The table, titled with what this run measures and on what."""
    import open_clip
    import torch

    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available here (torch %s); use --dry-run on a CPU" % torch.__version__)
    device_name = torch.cuda.get_device_name(0) if plan.device == "cuda" else "CPU"
    table = Table(f"== gpu_check{' DRY RUN (CPU, tiny model: numbers mean nothing)' if plan.dry else ''}: "
                  f"{plan.arch} random weights (seed 0), {plan.precision} on {plan.device} ({device_name}), "
                  f"{cpus} cores, torch {torch.__version__}, open_clip {open_clip.__version__} ==")
    if plan.dry:
        closure = wheel_closure()
        table.add("wheel list (for --fetch-wheels)", f"{len(closure)} wheels",
                  "requirements.txt closure but torch, torchvision")
    return table


def load_subject(plan: Plan, work_dir: Path, table: Table) -> Subject:
    """Builds the model folder and loads it through the production loader, with an fp32 reference beside it."""
    import torch

    from clip_sagemaker.model import load_model
    from clip_sagemaker.model_files import build_model_dir
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings

    t0 = time.perf_counter()
    model_dir = build_model_dir(work_dir / "model", plan.arch, model_cfg=plan.model_cfg, seed=0)
    settings = Settings(model_dir=str(model_dir), model_dir_explicit=True)
    source = resolve_model_source(settings)
    model = load_model(source, device=plan.device, precision=plan.precision)
    if plan.dry:  # the production CPU path (TorchScript vision, trimmed text) against plain eager fp32
        reference = load_model(source, device=plan.device, precision="fp32", trim_text=False, freeze_towers=False)
        against = "fp32 eager"
    else:
        reference = load_model(source, device=plan.device, precision="fp32")
        against = "fp32"
    info = model.info
    table.add("model built + loaded", f"{time.perf_counter() - t0:.1f} s",
              f"{info.name}, embed_dim {info.embed_dim}, image {info.image_size[0]}x{info.image_size[1]}, "
              f"{info.precision} ({info.precision_reason})")

    jpegs = make_jpegs(plan.images)
    draft = max(info.image_size)
    rows = [prepare_jpeg(model, jpegs[i], draft) for i in range(min(16, plan.images))]
    texts = list(SHORT_TEXTS) * 2
    images, text = check_agreement(plan, table, model, reference, against, rows, texts)
    del reference
    if plan.device == "cuda":
        torch.cuda.empty_cache()
    return Subject(model_dir=model_dir, model=model, jpegs=jpegs, draft=draft, rows=rows, texts=texts,
                   image_embeddings=images, text_embeddings=text)


def check_agreement(plan: Plan, table: Table, model, reference, against: str, rows: list, texts: list[str]):
    """Fails the run unless `model` and `reference` agree; returns `model`'s image and text embeddings."""
    img_a, img_b = model.encode("image", rows), reference.encode("image", rows)
    txt_a = model.encode("text", list(model.tokenize(texts)))
    txt_b = reference.encode("text", list(reference.tokenize(texts)))
    agree_img, agree_txt = cosine_rows(img_a, img_b), cosine_rows(txt_a, txt_b)
    agreement = min(agree_img, agree_txt)
    table.add(f"agreement {plan.precision} vs {against}", f"{agreement:.5f}",
              f"min cosine; images {agree_img:.5f}, texts {agree_txt:.5f}; pass >= {AGREEMENT_MIN}")
    if not agreement >= AGREEMENT_MIN:
        table.fail(f"{plan.precision} disagrees with {against} (min cosine {agreement:.5f})")
    return img_a, txt_a


def measure_decode(plan: Plan, work_dir: Path, table: Table, subject: Subject, cpus: int, held: Held) -> float:
    """Decode + preprocess on one core, then over a pool on every core (left in `held.pool`); the pool's rate."""
    import numpy as np

    jpegs = subject.jpegs
    one_core = timed_rate(lambda: (subject.prepare(np.random.randint(plan.images)), 1)[1], plan.measure_s / 2)
    table.add("decode+preprocess, 1 core", rate(one_core),
              f"Pillow decode_image (draft {subject.draft}) + prepare_image, 640x480 JPEG "
              f"~{sum(map(len, jpegs)) / len(jpegs) / 1024:.0f} KiB")
    t0 = time.perf_counter()
    held.pool = DecodePool(cpus, subject.model._preprocess, jpegs, subject.draft, tuple(subject.rows[0].shape),
                           work_dir)
    spawn_s = time.perf_counter() - t0
    decode_rate = held.pool.run(max(plan.batches), plan.measure_s)
    table.add(f"decode+preprocess, {cpus} processes", rate(decode_rate),
              f"process pool, rows into shared memory (pool start {spawn_s:.1f} s)")
    return decode_rate


def measure_forward(plan: Plan, table: Table, subject: Subject) -> tuple[dict[int, float], dict[int, int]]:
    """The forward pass alone at each batch: images per second, and the peak torch allocated (CUDA)."""
    import torch

    model, rows = subject.model, subject.rows
    forward: dict[int, float] = {}
    peaks: dict[int, int] = {}
    stock = torch.stack(rows)
    for batch in plan.batches:
        rows_b = list(stock[torch.arange(batch) % len(rows)])
        for _ in range(2):
            model.encode("image", rows_b)
        if plan.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        forward[batch] = timed_rate(lambda: len(model.encode("image", rows_b)), plan.measure_s / len(plan.batches))
        peaks[batch] = torch.cuda.max_memory_allocated() if plan.device == "cuda" else 0
        table.add(f"forward {plan.precision}, batch {batch}", rate(forward[batch]),
                  f"model.encode (stack, copy in, forward, copy out)"
                  + (f"; peak allocated {gib(peaks[batch])}" if plan.device == "cuda" else ""))
    return forward, peaks


def measure_in_process(plan: Plan, work_dir: Path, table: Table, subject: Subject, cpus: int,
                       held: Held) -> InProcess:
    """Decode, the forward, then both together at the forward's best batch: the limit a server could reach."""
    decode_rate = measure_decode(plan, work_dir, table, subject, cpus, held)
    forward, peaks = measure_forward(plan, table, subject)
    best = max(forward, key=forward.get)

    def consume(batch_tensor) -> None:
        subject.model.encode("image", list(batch_tensor))

    combined = held.pool.run(best, plan.measure_s, consume)
    bound = "decode" if decode_rate < forward[best] else "forward"
    table.add(f"in-process decode -> forward, batch {best}", rate(combined),
              f"bound: {bound} (decode {rate(decode_rate)}, forward {rate(forward[best])}); "
              f"{100 * combined / min(decode_rate, forward[best]):.0f}% of the smaller")
    held.pool.close()
    held.pool = None
    return InProcess(decode=decode_rate, best=best, forward=forward[best], combined=combined, bound=bound,
                     peak=max(peaks.values()))


def measure_gpu_decode(plan: Plan, table: Table, subject: Subject, limit: InProcess) -> None:
    """torchvision's JPEG decoder on the device, beside the CPU pool and as the forward's feed."""
    model, rows = subject.model, subject.rows
    decode_fn, prepare_fn = gpu_decode(subject.jpegs, model.info.image_size, model._model.visual.preprocess_cfg,
                                       plan.device)
    batch_idx = [i % plan.images for i in range(64)]
    try:
        for _ in range(2):
            prepare_fn(batch_idx)
        sync(plan.device)
        tv_decode = timed_rate(lambda: (decode_fn(batch_idx), sync(plan.device), len(batch_idx))[2], plan.measure_s / 3)
        tv_prepare = timed_rate(lambda: (prepare_fn(batch_idx), sync(plan.device), len(batch_idx))[2], plan.measure_s / 3)
        tv_forward = timed_rate(lambda: len(model.encode("image", list(prepare_fn(batch_idx)))), plan.measure_s / 3)
        via_tv = model.encode("image", list(prepare_fn(list(range(len(rows))))))
        tv_agree = cosine_rows(via_tv, subject.image_embeddings)
        where = "GPU" if plan.device == "cuda" else "CPU (dry run)"
        faster = tv_prepare / limit.decode
        table.add(f"torchvision decode_jpeg + preprocess ({plan.device})", rate(tv_prepare),
                  f"{where}, batches of 64; decode alone {rate(tv_decode)}; {faster:.2f}x the CPU pool; "
                  f"embeddings vs Pillow path min cosine {tv_agree:.4f}")
        table.add(f"torchvision decode_jpeg -> forward ({plan.device})", rate(tv_forward),
                  f"{tv_forward / limit.combined:.2f}x the in-process CPU-decode pipeline; "
                  + ("worth a setting" if tv_forward > 1.1 * limit.combined and plan.device == "cuda"
                     else "no setting proposed"))
    except Exception as exc:  # noqa: BLE001 - an unsupported decoder is a finding, not a failed check
        table.add(f"torchvision decode_jpeg ({plan.device})", "n/a", f"{type(exc).__name__}: {exc}"[:160])


def measure_text_forward(plan: Plan, subject: Subject) -> float:
    """Texts per second through the in-process text forward at batch 64, for the server's text row."""
    model = subject.model
    text_batch = [f"{SHORT_TEXTS[i % len(SHORT_TEXTS)]} number {i}" for i in range(64)]
    return timed_rate(lambda: len(model.encode("text", list(model.tokenize(text_batch)))), plan.measure_s / 3)


def release_model(plan: Plan, subject: Subject) -> None:
    """Frees the in-process model, so that the memory ./serve peaks at is its own."""
    import torch

    subject.model = None
    gc.collect()
    if plan.device == "cuda":
        torch.cuda.empty_cache()


def start_server(plan: Plan, work_dir: Path, subject: Subject, held: Held) -> tuple[DeviceMemoryWatch, float]:
    """The client processes, then ./serve (both left in `held`); the memory watch and seconds to /ping."""
    import multiprocessing

    held.clients = ProcessPoolExecutor(plan.client_procs, mp_context=multiprocessing.get_context("spawn"))
    [f.result(timeout=60) for f in [held.clients.submit(_pool_ping) for _ in range(plan.client_procs)]]
    watch = DeviceMemoryWatch(plan.device)  # before ./serve starts: the peak above this baseline is the server's
    lifetime = int(plan.serve_start_s + 4 * (plan.serve_s + plan.warm_s) + 60)
    held.server = Server(plan, subject.model_dir, work_dir, lifetime)
    return watch, held.server.wait_ready(plan.serve_start_s)


def check_server_agreement(table: Table, port: int, subject: Subject, ready_s: float) -> None:
    """Fails the run unless the server embeds one image and one text as the in-process model did."""
    import numpy as np

    served = np.asarray(post_json(port, {"task": "embed", "images": [base64.b64encode(subject.jpegs[0]).decode()]})
                        ["image_embeddings"], dtype=np.float32)
    served_text = np.asarray(post_json(port, {"task": "embed", "texts": subject.texts[:1]})["text_embeddings"],
                             dtype=np.float32)
    served_agree = min(cosine_rows(served, subject.image_embeddings[:1]),
                       cosine_rows(served_text, subject.text_embeddings[:1]))
    table.add("server vs in-process embeddings", f"{served_agree:.5f}",
              f"min cosine, one image and one text; ./serve answered /ping after {ready_s:.1f} s")
    if not served_agree >= AGREEMENT_MIN:
        table.fail(f"the server's embeddings differ from in-process ones (min cosine {served_agree:.5f})")


def measure_server(plan: Plan, table: Table, clients: ProcessPoolExecutor, port: int, jpegs: list[bytes],
                   limit: InProcess, text_forward: float) -> None:
    """./serve under load at plan.concurrency, images then short texts, each after a warm-up."""
    image_bodies = [json.dumps({"task": "embed", "images": [base64.b64encode(j).decode()]}).encode() for j in jpegs]
    drive(clients, plan, port, "images", image_bodies, plan.warm_s)
    images = drive(clients, plan, port, "images", image_bodies, plan.serve_s)
    ceiling = min(limit.combined, limit.forward)
    verdict = ("bound: " + limit.bound if images.rate >= 0.8 * ceiling else
               f"bound: neither; the server's own path (HTTP, JSON, base64, one process's threads)")
    table.add(f"server images, concurrency {plan.concurrency}", rate(images.rate),
              f"1 image/request; p50 {images.p50_ms:.1f} ms, p99 {images.p99_ms:.1f} ms; "
              f"{100 * images.rate / ceiling:.0f}% of in-process {rate(ceiling)}; {verdict}")
    text_seeds = [t.encode() for t in SHORT_TEXTS]
    drive(clients, plan, port, "texts", text_seeds, plan.warm_s)
    text_load = drive(clients, plan, port, "texts", text_seeds, plan.serve_s)
    table.add(f"server short texts, concurrency {plan.concurrency}", rate(text_load.rate, "texts/s"),
              f"1 unique text/request; p50 {text_load.p50_ms:.1f} ms, p99 {text_load.p99_ms:.1f} ms; "
              f"in-process text forward (batch 64) {rate(text_forward, 'texts/s')}")
    for name, load in (("images", images), ("texts", text_load)):
        if load.errors or load.count == 0:
            table.fail(f"server {name}: {load.errors} errors, {load.count} answered; first: {load.first_error}")


def report_memory(plan: Plan, table: Table, watch: DeviceMemoryWatch, server: Server, in_process_peak: int) -> None:
    """The device memory ./serve peaked at (and its RSS), beside the in-process peak."""
    server_gpu = watch.stop()
    server_rss = server.peak_rss_mb()
    if plan.device == "cuda":
        table.add("peak GPU memory", gib(server_gpu),
                  f"server: device memory in use above the baseline while it loaded and served; in-process: "
                  f"{gib(in_process_peak)} allocated by torch (largest batch); server RSS peak {server_rss:,.0f} MiB")
    else:
        table.add("peak GPU memory", "n/a", f"no GPU; server RSS peak {server_rss:,.0f} MiB")


def run(plan: Plan, work_dir: Path) -> int:
    t_start = time.perf_counter()
    # Outside the steps' `try`: a dependency that does not import is a broken setup, reported as a traceback,
    # not as a failed measurement in the table.
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import open_clip  # noqa: F401

    from clip_sagemaker.model import load_model  # noqa: F401
    from clip_sagemaker.model_files import build_model_dir  # noqa: F401
    from clip_sagemaker.model_source import resolve_model_source  # noqa: F401
    from clip_sagemaker.settings import Settings  # noqa: F401
    from clip_sagemaker.worker_layout import available_cpus

    cpus = available_cpus()
    table = begin(plan, cpus)
    held = Held()
    try:
        subject = load_subject(plan, work_dir, table)
        limit = measure_in_process(plan, work_dir, table, subject, cpus, held)
        measure_gpu_decode(plan, table, subject, limit)
        text_forward = measure_text_forward(plan, subject)
        release_model(plan, subject)
        watch, ready_s = start_server(plan, work_dir, subject, held)
        check_server_agreement(table, held.server.port, subject, ready_s)
        measure_server(plan, table, held.clients, held.server.port, subject.jpegs, limit, text_forward)
        report_memory(plan, table, watch, held.server, limit.peak)
        stop_s = held.server.stop()
        held.server = None
        table.add("total", f"{time.perf_counter() - t_start:.0f} s", f"./serve stopped in {stop_s:.1f} s after SIGTERM")
    except Exception as exc:  # noqa: BLE001 - report, then fail the run
        traceback.print_exc()
        table.fail(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        if held.server is not None:
            print(f"gpu_check: ./serve's log ends:\n{held.server.log_tail()}", flush=True)
    finally:
        held.release()
    print("\n" + table.render(), flush=True)
    return 1 if table.failures else 0


def _terminate(signum, frame):  # timeout(1) sends SIGTERM: unwind, so that ./serve is stopped
    raise SystemExit(f"gpu_check: stopped by signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="the check")
    p_run.add_argument("--dry-run", action="store_true", help="CPU, tiny model, fp32, a few requests")
    p_run.add_argument("--work-dir", type=Path, help="scratch folder (default: a temporary one)")
    sub.add_parser("wheel-list", help="print name==version for every wheel the GPU machine needs")
    p_inst = sub.add_parser("install-wheels", help="install a wheel folder offline into a target folder")
    p_inst.add_argument("wheels", type=Path)
    p_inst.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.command == "wheel-list":
        for name, version in wheel_closure():
            print(f"{name}=={version}")
        return 0
    if args.command == "install-wheels":
        install_wheels(args.wheels, args.target)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    plan = make_plan(args.dry_run)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return run(plan, args.work_dir)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        return run(plan, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
