"""The processes the benchmark starts, and their environments: the ./serve variants (b), (c), (d), each started,
timed to its first /ping 200 (its cold start), checked against /info and stopped.

The container's settings come from `clip_sagemaker.settings.ENVIRONMENT`: every one of them is removed from
the caller's environment, then only the ones a variant sets are added, so a value the caller happens to have
(MAX_BATCH_WAIT_MS, TEXT_TRUNCATE, ...) cannot change what a "defaults" server runs.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from clip_sagemaker.settings import ENVIRONMENT

from .common import CONTAINER, LOCAL_TEST, READY_TIMEOUT_S, REPO, BenchmarkError
from .processes import ACCOUNTED_PIDS

# Not the container's settings, but OpenMP's and MKL's own: they change what is measured, so every process
# the benchmark starts (servers, raw model, model-only) runs with their defaults, the same for all.
OPENMP_KNOBS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
PING_INTERVAL_S = 0.1  # the cold start's resolution


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    env: dict[str, str]
    expect: dict[str, object] = field(default_factory=dict)  # /info fields (dotted paths) the variant must show


VARIANTS = (
    Variant("b", "product defaults (nginx in front)", {"FRONT": "on"}),
    Variant("c", "one forward per item, no cache, padded text",
            {"MAX_BATCH_SIZE": "1", "TEXT_CACHE_SIZE": "0", "TEXT_TRIM": "false"},
            {"max_batch_size": 1, "text_cache.capacity": 0, "trimmed_text": False}),
    Variant("d", "product defaults in fp32 (today's server)", {"PRECISION": "fp32"}, {"precision": "fp32"}),
    Variant("e", "product defaults without the front (gunicorn on the port)", {"FRONT": "off"}),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)


def child_env() -> dict[str, str]:
    """The caller's environment without any container setting or OpenMP knob; our packages importable."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k not in OPENMP_KNOBS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CONTAINER), str(LOCAL_TEST), os.environ.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    return env


def server_env(variant: Variant, model_dir: Path, port: int) -> dict[str, str]:
    undeclared = sorted(set(variant.env) - set(ENVIRONMENT))
    if undeclared:
        raise ValueError(f"server ({variant.name}) sets {undeclared}, which the container does not read")
    return {**child_env(), "MODEL_DIR": str(model_dir), "LOG_LEVEL": "warning",
            "SAGEMAKER_BIND_TO_PORT": str(port), **variant.env}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _info_value(info: dict, dotted: str) -> object:
    for part in dotted.split("."):
        info = info.get(part, {}) if isinstance(info, dict) else {}
    return info


class Server:
    """One ./serve on a free loopback port; its figures are filled in as the run measures them."""

    def __init__(self, variant: Variant, model_dir: Path, log_dir: Path):
        self.variant, self.name, self.label = variant, variant.name, variant.label
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.name}.log"
        self._log = open(self.log_path, "wb")
        self._started = time.monotonic()
        self.process = subprocess.Popen([str(REPO / "serve")], env=server_env(variant, model_dir, self.port),
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.info: dict = {}
        self.cold_start_s: Optional[float] = None
        self.idle_rss_mb = self.idle_hwm_mb = self.peak_rss_mb = self.hwm_mb = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, deadline: float) -> None:
        import requests

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(f"server ({self.name}) exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    self.cold_start_s = time.monotonic() - self._started
                    self.info = requests.get(f"{self.url}/info", timeout=5).json()
                    self._check_info()
                    return
            except requests.RequestException:
                pass
            time.sleep(PING_INTERVAL_S)
        raise BenchmarkError(f"server ({self.name}) was not ready in time:\n{self.log_tail()}")

    def _check_info(self) -> None:
        wrong = {k: _info_value(self.info, k) for k, v in self.variant.expect.items() if _info_value(self.info, k) != v}
        if wrong:
            raise BenchmarkError(f"server ({self.name}) is not configured as asked ({self.variant.expect}): "
                                 f"/info says {wrong}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn drains and stops its workers
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


def start_servers(model_dir: Path, log_dir: Path, servers: list[Server], names: tuple[str, ...]) -> None:
    """The variants named, one after another, so that no cold start competes with another for the cores;
    appends as it goes, so that the caller can stop whatever started, should one fail."""
    for variant in (v for v in VARIANTS if v.name in names):
        server = Server(variant, model_dir, log_dir)
        servers.append(server)
        ACCOUNTED_PIDS.append(server.pid)
        server.wait_ready(time.monotonic() + READY_TIMEOUT_S)
