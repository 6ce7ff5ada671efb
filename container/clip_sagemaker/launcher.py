"""What `serve` runs (its arguments are ignored: SageMaker passes the word `serve`): checks the settings and
the model source, then serves, in one of two shapes:

- with the front (front.py; FRONT=auto and nginx installed, or FRONT=on): nginx takes the port and gunicorn
  listens on a unix socket in a run directory under /tmp; this process stays as their supervisor
  (supervisor.py), forwarding SageMaker's SIGTERM and exiting when either dies;
- without it: this process becomes gunicorn (exec), whose master then receives SIGTERM itself.

A setting or model source that cannot work stops here, before any worker starts, with one clear line and a
non-zero exit.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import metrics_folder
from .fetch import FetchPolicy
from .front import FrontFiles, front_wanted, nginx_command, write_config
from .hub import offline_when_unreachable
from .model_source import ModelSource, ModelSourceError, resolve_model_source
from .precision import PrecisionError, refuse_fp16_on_cpu
from .supervisor import Supervisor
from .worker_layout import Layout, MemoryBudget, MemoryFitError, memory_budget, plan_layout
from .settings import GUNICORN_BIND_ENV, MB, Settings, SettingsError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
USAGE = """Usage: ./serve [--help]     (SageMaker runs `docker run IMAGE serve`; other arguments are ignored)

Starts the inference server on port 8080 (SAGEMAKER_BIND_TO_PORT); it is ready when GET /ping answers 200.
Everything is set by environment variables; the ones that matter most:

  MODEL_DIR=DIR             serve the model directory DIR (default /opt/ml/model; make one with
                            local_test/make_model.sh or python -m clip_sagemaker.model_files)
  MODEL_NAME, MODEL_PRETRAINED
                            the open_clip architecture and pretrained tag (default ViT-B-32 with
                            laion2b_s34b_b79k, downloaded from the Hugging Face Hub: needs network);
                            MODEL_PRETRAINED=/path/to/checkpoint.safetensors, or none for random weights
  CLIP_MODEL=hf-hub:ORG/NAME
                            a model on the Hugging Face Hub (HF_HUB_OFFLINE=1 loads it from the cache)
  DEVICE, PRECISION         cpu / cuda / cuda:1; fp32 / bf16 / fp16 (default: chosen for the hardware)
  SAGEMAKER_MODEL_SERVER_WORKERS, SERVER_THREADS, SAGEMAKER_MODEL_SERVER_TIMEOUT
                            worker processes, HTTP threads per worker, seconds per request
  IMAGE_URL_ALLOWED_HOSTS   image hosts exempt from the URL fetcher's address checks

Every variable, with its default: docs/configuration.md. Starting without network: docs/deployment.md.
"""


@dataclass(frozen=True)
class Plan:
    """What `serve` decided before anything starts."""
    settings: Settings
    source: Optional[ModelSource]  # None: a multi-model endpoint, which starts with no model
    memory: MemoryBudget
    layout: Layout
    nginx: Optional[str]  # the front's binary, or None to let gunicorn take the port
    metrics_dir: str


def plan() -> Plan:
    """Every setting checked and every decision taken, or the error that stops `serve`."""
    settings = Settings.from_env()
    FetchPolicy.from_settings(settings)
    # A multi-model endpoint starts with no model: SageMaker loads them over POST /models.
    source = None if settings.multi_model else resolve_model_source(settings)
    memory = memory_budget(settings)
    if source is not None:
        memory.require_one()
    layout = plan_layout(settings, memory=memory)
    # Decided here without torch (the master must not map it): on a CPU when no GPU is counted.
    on_cpu = (settings.device or "").startswith("cpu") or (not settings.device and layout.gpus == 0)
    refuse_fp16_on_cpu(settings.precision, on_cpu)
    nginx = front_wanted(settings)
    # Before any worker forks, so that every worker writes its metrics where a scrape of any one reads them.
    # Named after this process: gunicorn's master when it execs, else the supervisor, which removes it.
    folder = metrics_folder.prepare_dir(settings.metrics_dir, os.getpid())
    return Plan(settings, source, memory, layout, nginx, folder)


def main() -> int:
    # The one argument read (others, such as SageMaker's `serve`, are ignored), before anything is read or
    # started: --help must work on a machine where nothing is set up yet.
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(USAGE, end="")
        return 0
    try:
        chosen = plan()
    except (SettingsError, ModelSourceError, PrecisionError, MemoryFitError, OSError) as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    _announce(chosen)
    os.environ[metrics_folder.MULTIPROCESS_DIR_ENV] = chosen.metrics_dir
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    # No --chdir: relative paths in the settings (MODEL_DIR=model) mean what they meant to the caller.
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", "python:clip_sagemaker.gunicorn_config",
                "clip_sagemaker.wsgi:create_production_app()"]
    if chosen.nginx is None:
        os.execv(sys.executable, gunicorn)
        return 0  # not reached: this process is gunicorn now
    return _supervise(chosen, gunicorn)


def _announce(chosen: Plan) -> None:
    settings, layout = chosen.settings, chosen.layout
    described = chosen.source.description if chosen.source else \
        "multi-model endpoint (models are loaded over POST /models)"
    front = "nginx in front" if chosen.nginx else "no front (FRONT=off or nginx not installed)"
    print(f"serve: {described}; port {settings.port}, {front}; {layout.workers} worker(s) x "
          f"{settings.http_threads} HTTP threads, {layout.torch_threads} torch thread(s) each; "
          f"timeout {settings.timeout_s:g} s{_memory_note(chosen.memory)}", flush=True)
    # The workers inherit the environment. A multi-model endpoint's models come from S3, never from the Hub.
    offline = offline_when_unreachable(chosen.source, os.environ) if chosen.source else None
    if offline:
        print(f"serve: {offline}", flush=True)


def _supervise(chosen: Plan, gunicorn: list[str]) -> int:
    files = FrontFiles.create()
    try:
        write_config(chosen.settings, chosen.layout, files)
        os.environ[GUNICORN_BIND_ENV] = f"unix:{files.socket}"
        return Supervisor(gunicorn, nginx_command(chosen.nginx, files), files).run()
    finally:
        shutil.rmtree(files.run_dir, ignore_errors=True)
        metrics_folder.remove_if_default(chosen.metrics_dir, os.getpid())


def _memory_note(memory: MemoryBudget) -> str:
    if memory.available_bytes is None:
        return ""
    needed = "" if memory.worker_bytes is None else f", about {memory.worker_bytes // MB} MiB per worker"
    return f"; memory {memory.available_bytes // MB} MiB ({memory.limited_by}){needed}"


if __name__ == "__main__":
    sys.exit(main())
