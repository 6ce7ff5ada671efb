"""`serve` with the front: runs gunicorn and nginx side by side, stops both on SIGTERM, and dies with either.

Order matters at both ends. At start, gunicorn first (it binds its socket before any worker loads the
model), nginx once the socket exists, so that nginx never answers a request it cannot pass on. At SIGTERM
(SageMaker and `docker stop` send it, then SIGKILL 30 s later): nginx first, gracefully (SIGQUIT: it stops
accepting, finishes every request in flight, including those still uploading), then gunicorn (SIGTERM, its
graceful stop), so that every accepted request is answered. When either dies on its own, the other is
stopped and `serve` exits non-zero: a container half alive would answer /ping from nginx forever, or keep
a model that no client can reach; exiting lets SageMaker or `docker run --restart` replace it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional

from .front import FrontFiles

# SageMaker sends SIGKILL 30 s after SIGTERM: nginx's requests get most of that, gunicorn the rest.
NGINX_GRACE_S = 20.0
TOTAL_GRACE_S = 28.0
# When one process died on its own, the other has no one to answer: stop it quickly.
FAILURE_GRACE_S = 5.0
SOCKET_WAIT_S = 120.0
POLL_S = 0.05


def _say(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def _wait(process: subprocess.Popen, seconds: float) -> bool:
    try:
        process.wait(timeout=max(0.0, seconds))
        return True
    except subprocess.TimeoutExpired:
        return False


def _start(command: list[str]) -> subprocess.Popen:
    # A process group of its own: when its leader dies, whatever it leaves behind (nginx's workers go on
    # serving the port after their master is killed) can still be found and stopped.
    return subprocess.Popen(command, start_new_session=True)


def _stop(process: subprocess.Popen, first_signal: int, seconds: float) -> None:
    """Sends `first_signal`, then SIGKILL if the process is still there after `seconds`; then removes any
    process its group still holds."""
    if process.poll() is None:
        process.send_signal(first_signal)
        if not _wait(process, seconds):
            process.kill()
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Supervisor:
    def __init__(self, gunicorn: list[str], nginx: list[str], files: FrontFiles):
        self.gunicorn_cmd = gunicorn
        self.nginx_cmd = nginx
        self.files = files
        self.gunicorn: Optional[subprocess.Popen] = None
        self.nginx: Optional[subprocess.Popen] = None
        self.stopping = False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.gunicorn = _start(self.gunicorn_cmd)
        if not self._wait_for_socket():
            return self._shut_down()
        self.nginx = _start(self.nginx_cmd)
        while not self.stopping and self.gunicorn.poll() is None and self.nginx.poll() is None:
            time.sleep(POLL_S)
        return self._shut_down()

    def _wait_for_socket(self) -> bool:
        deadline = time.monotonic() + SOCKET_WAIT_S
        while not self.files.socket.exists():
            if self.stopping or self.gunicorn.poll() is not None:
                return False
            if time.monotonic() > deadline:
                _say(f"gunicorn did not open {self.files.socket} within {SOCKET_WAIT_S:g} s")
                return False
            time.sleep(POLL_S)
        return True

    def _shut_down(self) -> int:
        died = [(name, p) for name, p in (("gunicorn", self.gunicorn), ("nginx", self.nginx))
                if p is not None and p.poll() is not None]
        if self.stopping and not died:
            return self._graceful_stop()
        for name, process in died:
            _say(f"{name} exited with status {process.returncode}; stopping the other process and exiting")
        if self.nginx is not None:
            _stop(self.nginx, signal.SIGTERM, FAILURE_GRACE_S)
        _stop(self.gunicorn, signal.SIGTERM, FAILURE_GRACE_S)
        if self.stopping and all(p.returncode == 0 for _, p in died):
            return 0  # both were stopped by the same signal (a Ctrl-C reaches the whole process group)
        return next((p.returncode for _, p in died if p.returncode > 0), 1)

    def _graceful_stop(self) -> int:
        started = time.monotonic()
        if self.nginx is not None:
            _stop(self.nginx, signal.SIGQUIT, NGINX_GRACE_S)
        _stop(self.gunicorn, signal.SIGTERM, TOTAL_GRACE_S - (time.monotonic() - started))
        return 0 if self.gunicorn.returncode == 0 else (self.gunicorn.returncode or 1)
