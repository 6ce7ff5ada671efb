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
from .hub import offline_when_unreachable
from .model_source import ModelSourceError, resolve_model_source
from .precision import PrecisionError, refuse_fp16_on_cpu
from .worker_layout import plan_layout
from .settings import Settings, SettingsError

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


def main() -> int:
    # The one argument read (others, such as SageMaker's `serve`, are ignored), before anything is read or
    # started: --help must work on a machine where nothing is set up yet.
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(USAGE, end="")
        return 0
    try:
        settings = Settings.from_env()
        FetchPolicy.from_settings(settings)
        source = resolve_model_source(settings)
        layout = plan_layout(settings)
        # Decided here without torch (the master must not map it): on a CPU when no GPU is counted.
        on_cpu = (settings.device or "").startswith("cpu") or (not settings.device and layout.gpus == 0)
        refuse_fp16_on_cpu(settings.precision, on_cpu)
    except (SettingsError, ModelSourceError, PrecisionError) as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"serve: {source.description}; port {settings.port}; {layout.workers} worker(s) x "
          f"{settings.http_threads} HTTP threads, {layout.torch_threads} torch thread(s) each; "
          f"timeout {settings.timeout_s:g} s", flush=True)
    offline = offline_when_unreachable(source, os.environ)  # the workers inherit the environment
    if offline:
        print(f"serve: {offline}", flush=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    # No --chdir: relative paths in the settings (MODEL_DIR=model) mean what they meant to the caller.
    args = [sys.executable, "-m", "gunicorn", "--config", "python:clip_sagemaker.gunicorn_config",
            "clip_sagemaker.wsgi:create_production_app()"]
    os.execv(sys.executable, args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
