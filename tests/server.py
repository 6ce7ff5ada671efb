"""Starts the real ./serve on a free loopback port for integration tests, and always stops it.

Tests get servers from the `serve` and `serve_module` fixtures (conftest.py), which are `Servers`. The front
(nginx) is whatever TEST_FRONT says (CI sets `on`: a missing nginx then fails instead of being skipped), by
default `auto`: on where nginx is installed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import requests

REPO = Path(__file__).resolve().parent.parent
TEST_FRONT = os.environ.get("TEST_FRONT", "auto")


def children_of(pid: int) -> list[int]:
    """The ids of the processes whose parent is `pid` (read from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def skip_if_a_default_model_dir_holds_a_model() -> None:
    """For tests of the start without a model directory: a model in /opt/ml/model would take precedence."""
    import pytest
    from clip_sagemaker.model_source import ModelSourceError, resolve_model_source
    from clip_sagemaker.settings import Settings
    try:
        if resolve_model_source(Settings()).name.startswith("local-dir:"):
            pytest.skip("this machine has a model in /opt/ml/model, which would take precedence")
    except ModelSourceError:
        pytest.skip("this machine has a broken model in /opt/ml/model")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path = REPO):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "SAGEMAKER_BIND_TO_PORT": str(self.port),
                    "SERVER_THREADS": "8", "FRONT": TEST_FRONT,
                    # The value tests prove exactness against open_clip's fp32 on every CPU; bf16 has tests of its own.
                    "PRECISION": "fp32", **env}
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([str(REPO / "serve")], env=full_env, stdout=self._log, cwd=cwd,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def _children_named(self, word: str) -> list[int]:
        return [pid for pid in children_of(self.process.pid) if word in _cmdline(pid)]

    def master(self) -> int:
        """The gunicorn master: a child of `serve` behind the front, else `serve` itself (it execs gunicorn)."""
        if "gunicorn" in _cmdline(self.process.pid):
            return self.process.pid
        return next(iter(self._children_named("gunicorn")), self.process.pid)

    def nginx(self) -> Optional[int]:
        """nginx's master process, when the front runs."""
        return next(iter(self._children_named("nginx")), None)

    def workers(self) -> list[int]:
        return children_of(self.master())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def requests_logged(self, offset: int = 0) -> list[dict]:
        """The access log after `offset` characters: one dict per request (method, route, status, ...)."""
        found = []
        for line in self.log()[offset:].splitlines():
            _, marker, payload = line.partition("clip_sagemaker.access: ")
            if marker:
                found.append(json.loads(payload))
        return found

    def wait_ready(self, timeout: float = 90) -> list[int]:
        """Polls /ping until 200; returns every status seen on the way (connection failures, and pings that a
        worker busy loading a large model on a busy machine answers late, are skipped)."""
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                status = requests.get(f"{self.url}/ping", timeout=2).status_code
                seen.append(status)
                if status == 200:
                    return seen
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve was not ready within {timeout} s:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"serve did not exit within {timeout} s:\n{self.log()}") from None

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> Optional[int]:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


class Servers:
    """Starts ./serve with given settings and stops every server it started when closed. A server that
    became ready must then exit 0 (SIGTERM is a clean shutdown); one that was never ready may exit as it
    likes (tests of start-up failures read its status with `wait_exit`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[Server] = []

    def __call__(self, env: dict[str, str], wait_ready: bool = True, timeout: float = 90, cwd: Path = REPO) -> Server:
        """A server with `env` on top of Server's defaults; with `wait_ready`, returned once /ping says 200
        (`statuses_before_ready` holds every /ping status seen on the way)."""
        server = Server(env, self.folder / f"serve-{len(self.started)}.log", cwd)
        server.was_ready = False
        self.started.append(server)
        if wait_ready:
            server.statuses_before_ready = server.wait_ready(timeout)
            server.was_ready = True
        return server

    def close(self) -> None:
        unclean = []
        for server in self.started:
            status = server.stop()
            if server.was_ready and status != 0:
                unclean.append(f"serve {server.url} exited with {status}:\n{server.log()[-5000:]}")
        self.started.clear()
        assert not unclean, "\n".join(unclean)

    def __enter__(self) -> "Servers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
