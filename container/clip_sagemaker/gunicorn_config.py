"""gunicorn's configuration, derived from Settings: `gunicorn -c python:clip_sagemaker.gunicorn_config`.

One worker process per device by default, each with HTTP threads and one model loop that batches across
them; the model is loaded inside the worker (after fork), because CUDA cannot be initialised before a fork
and torch's thread pools do not survive one.
"""
from __future__ import annotations

import os

from prometheus_client import multiprocess

from clip_sagemaker import metrics_folder
from clip_sagemaker.worker_layout import plan_layout
from clip_sagemaker.settings import GUNICORN_BIND_ENV, WORKER_SLOT_ENV, Settings

_settings = Settings.from_env()
_layout = plan_layout(_settings)

# Behind the front (front.py) the launcher hands gunicorn a unix socket; without it gunicorn takes the port.
bind = os.environ.get(GUNICORN_BIND_ENV) or f"0.0.0.0:{_settings.port}"
workers = _layout.workers
worker_class = "gthread"
threads = _settings.http_threads
# gthread workers heartbeat from their main loop, so this only kills a worker that is truly hung; the
# request deadline itself is enforced by the engine (a 503 "timeout" answer), a little before this.
timeout = int(_settings.timeout_s) + 30
# SageMaker sends SIGKILL 30 s after SIGTERM: finish in-flight requests well within that.
graceful_timeout = 25
keepalive = 75
limit_request_line = 8190
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
control_socket_disable = True
proc_name = "clip-sagemaker"


def pre_fork(server, worker):
    # Each worker gets the lowest free slot, so that a replaced worker takes over its predecessor's GPU.
    taken = {getattr(w, "clip_slot", None) for w in server.WORKERS.values()}
    worker.clip_slot = next(i for i in range(len(taken) + 1) if i not in taken)


def post_fork(server, worker):
    os.environ[WORKER_SLOT_ENV] = str(worker.clip_slot)


def child_exit(server, worker):
    # A dead worker's gauges (queue depth, ready) must stop counting; its counters stay in the totals.
    if _settings.metrics_dir:
        multiprocess.mark_process_dead(worker.pid, _settings.metrics_dir)


def on_exit(server):
    if _settings.metrics_dir:
        metrics_folder.remove_if_default(_settings.metrics_dir, os.getpid())
