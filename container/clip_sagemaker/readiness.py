"""What the HTTP layer holds instead of the engine: empty while the model loads, then the ready engine.

Torch-free on purpose: a worker imports this, starts loading in a background thread (torch is imported
there) and answers /ping with 503 at once, instead of leaving SageMaker's health checks hanging.
"""
from __future__ import annotations

import threading
from typing import Callable

from .errors import Unavailable
from .worker_layout import Layout
from .settings import Settings


class EngineSlot:
    """Holds the engine once it is ready; the HTTP layer asks it for the engine on each request."""

    def __init__(self, engine=None):
        self._engine = engine

    def ready(self) -> bool:
        return self._engine is not None and self._engine.healthy()

    def get(self):
        if self._engine is None:
            raise Unavailable("the model is still loading; retry when GET /ping answers 200", code="not_ready")
        return self._engine

    def fill(self, engine) -> None:
        self._engine = engine

    def take(self):
        """Empties the slot and returns the engine it held (a model being unloaded)."""
        engine, self._engine = self._engine, None
        return engine


def load_in_background(slot: EngineSlot, settings: Settings, layout: Layout,
                       on_failure: Callable[[BaseException], None]) -> threading.Thread:
    def work() -> None:
        try:
            from .engine import build_engine  # imports torch: minutes on a cold disk, seconds when warm

            slot.fill(build_engine(settings, layout))
        except BaseException as exc:  # noqa: BLE001 - any failure to load must stop the server, never limp on
            on_failure(exc)

    thread = threading.Thread(target=work, name="model-loader", daemon=True)
    thread.start()
    return thread
