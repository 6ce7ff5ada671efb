"""The production composition root: gunicorn calls `create_production_app()` in each worker process."""
from __future__ import annotations

import logging
import os
import sys

from .app import create_app
from .multi_model import ModelRegistry
from .readiness import EngineSlot, load_in_background
from .worker_layout import plan_layout
from .settings import WORKER_SLOT_ENV, Settings

log = logging.getLogger("clip_sagemaker")
# gunicorn's arbiter stops the whole server (instead of respawning) when a worker exits with this code.
WORKER_BOOT_ERROR = 3


def configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stdout, level=level.upper(),
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s", force=True)


def _stop_server(exc: BaseException) -> None:
    log.critical("FATAL: the model could not be loaded, stopping the server: %s", exc)
    logging.shutdown()
    os._exit(WORKER_BOOT_ERROR)


def create_production_app():
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    layout = plan_layout(settings)
    # "cuda" without an index means "the GPUs": spread the workers over them, one each.
    if settings.device in (None, "cuda") and layout.gpus > 1:
        slot_index = int(os.environ.get(WORKER_SLOT_ENV, "0"))
        settings = settings.replace(device=f"cuda:{slot_index % layout.gpus}")
    if settings.multi_model:
        return create_app(settings, ModelRegistry(settings, layout, on_failure=_stop_server))
    slot = EngineSlot()
    load_in_background(slot, settings, layout, on_failure=_stop_server)
    return create_app(settings, slot)
