"""What `serve` runs (its arguments are ignored: SageMaker passes the word `serve`): checks the settings and the model source, then becomes gunicorn (exec).

Exec, not a child process: gunicorn's master then receives SageMaker's SIGTERM itself and drains in-flight
requests before exiting. A setting or model source that cannot work stops here, before any worker starts,
with one clear line and a non-zero exit.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import metrics_folder
from .fetch import FetchPolicy
from .model_source import ModelSourceError, resolve_model_source
from .precision import PrecisionError, refuse_fp16_on_cpu
from .worker_layout import plan_layout
from .settings import Settings, SettingsError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    try:
        settings = Settings.from_env()
        FetchPolicy.from_settings(settings)
        source = resolve_model_source(settings)
        layout = plan_layout(settings)
        # Decided here without torch (the master must not map it): on a CPU when no GPU is counted.
        on_cpu = (settings.device or "").startswith("cpu") or (not settings.device and layout.gpus == 0)
        refuse_fp16_on_cpu(settings.precision, on_cpu)
        # Before any worker forks, so that every worker writes its metrics where a scrape of any one reads them.
        folder = metrics_folder.prepare_dir(settings.metrics_dir, os.getpid())  # exec keeps the pid: gunicorn's
        os.environ[metrics_folder.MULTIPROCESS_DIR_ENV] = folder
    except (SettingsError, ModelSourceError, PrecisionError, OSError) as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"serve: {source.description}; port {settings.port}; {layout.workers} worker(s) x "
          f"{settings.http_threads} HTTP threads, {layout.torch_threads} torch thread(s) each; "
          f"timeout {settings.timeout_s:g} s", flush=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    # No --chdir: relative paths in the settings (MODEL_DIR=model) mean what they meant to the caller.
    args = [sys.executable, "-m", "gunicorn", "--config", "python:clip_sagemaker.gunicorn_config",
            "clip_sagemaker.wsgi:create_production_app()"]
    os.execv(sys.executable, args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
