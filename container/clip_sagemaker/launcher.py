"""What `serve` runs (its arguments are ignored: SageMaker passes the word `serve`): checks the settings and the model source, then becomes gunicorn (exec).

Exec, not a child process: gunicorn's master then receives SageMaker's SIGTERM itself and drains in-flight
requests before exiting. A setting or model source that cannot work stops here, before any worker starts,
with one clear line and a non-zero exit.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .fetch import FetchPolicy
from .model_source import ModelSourceError, resolve_model_source
from .precision import PrecisionError, refuse_fp16_on_cpu
from .worker_layout import MemoryBudget, MemoryFitError, memory_budget, plan_layout
from .settings import MB, Settings, SettingsError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    try:
        settings = Settings.from_env()
        FetchPolicy.from_settings(settings)
        source = resolve_model_source(settings)
        memory = memory_budget(settings)
        memory.require_one()
        layout = plan_layout(settings, memory=memory)
        # Decided here without torch (the master must not map it): on a CPU when no GPU is counted.
        on_cpu = (settings.device or "").startswith("cpu") or (not settings.device and layout.gpus == 0)
        refuse_fp16_on_cpu(settings.precision, on_cpu)
    except (SettingsError, ModelSourceError, PrecisionError, MemoryFitError) as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"serve: {source.description}; port {settings.port}; {layout.workers} worker(s) x "
          f"{settings.http_threads} HTTP threads, {layout.torch_threads} torch thread(s) each; "
          f"timeout {settings.timeout_s:g} s{_memory_note(memory)}", flush=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    # No --chdir: relative paths in the settings (MODEL_DIR=model) mean what they meant to the caller.
    args = [sys.executable, "-m", "gunicorn", "--config", "python:clip_sagemaker.gunicorn_config",
            "clip_sagemaker.wsgi:create_production_app()"]
    os.execv(sys.executable, args)
    return 0  # not reached


def _memory_note(memory: MemoryBudget) -> str:
    if memory.available_bytes is None:
        return ""
    needed = "" if memory.worker_bytes is None else f", about {memory.worker_bytes // MB} MiB per worker"
    return f"; memory {memory.available_bytes // MB} MiB ({memory.limited_by}){needed}"


if __name__ == "__main__":
    sys.exit(main())
