"""The models of a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true): loaded and unloaded by name while the
server runs, each behind its own engine slot, all in one worker process.

SageMaker's multi-model contract: it sends each load once to the container (`POST /models`, the `url` a
directory it unpacked `model.tar.gz` into, the same layout as /opt/ml/model), answers 409 when the name is
loaded already and 507 when the model does not fit, whereupon SageMaker unloads unused models and retries.
So a load is refused before it is tried when its estimated memory (weights file x MEMORY_FACTOR) is above
what is available: the container's memory left (memory.py), capped by MULTI_MODEL_MEMORY_MB less the
estimates of the models already loaded. Unloading stops the model's loop, drops it and gives its memory
back to the system (malloc_trim).

The models share the cores: every engine takes the same CpuPhases, whose forward passes never overlap, so
however many models are loaded no more torch threads run than one model's. Torch-free on import, like
readiness.py: torch is imported in the background at start, and /ping answers 200 once it is, when loads
can start. Knows nothing of HTTP; its refusals are ApiErrors with their statuses.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import memory
from .cpu_phases import CpuPhases
from .errors import ApiError, Unavailable
from .model_source import ModelSourceError, require_model_directory
from .readiness import EngineSlot
from .settings import MB, Settings
from .worker_layout import Layout

log = logging.getLogger(__name__)

# Resident memory a loaded model adds, as a multiple of its weights file; measured with
# local_test/multi_model_memory.py (see docs/hosting-multi-model.md). MULTI_MODEL_MEMORY_FACTOR overrides it.
MEMORY_FACTOR = 1.6
MAX_PAGE = 100  # most models one GET /models answers lists (MMS's ceiling for `limit`)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    url: str
    slot: EngineSlot
    estimate_bytes: int


class ModelRegistry:
    """Also the Pipeline's slot in multi-model mode: ready when loads can start; a route without a model
    name (/invocations) is told to name one."""

    def __init__(self, settings: Settings, layout: Layout, on_failure: Callable[[BaseException], None]):
        self._settings = settings
        self._layout = layout
        self._factor = settings.multi_model_memory_factor or MEMORY_FACTOR
        self._models: dict[str, LoadedModel] = {}
        self._models_lock = threading.Lock()
        # One load at a time: the memory check must see the models loaded before it, not half of one.
        self._loading = threading.Lock()
        self._phases: Optional[CpuPhases] = None
        threading.Thread(target=self._prepare, args=(on_failure,), name="model-registry", daemon=True).start()

    def _prepare(self, on_failure: Callable[[BaseException], None]) -> None:
        try:
            from .model import pick_device  # imports torch: seconds; the first load must not pay for it

            device = pick_device(self._settings.device)
            self._settings = self._settings.replace(device=device)
            self._phases = CpuPhases(enabled=device.startswith("cpu") and self._settings.cpu_phases)
        except BaseException as exc:  # noqa: BLE001 - a worker that cannot load models must stop, not limp on
            on_failure(exc)

    # ---- the Pipeline's slot ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._phases is not None

    def get(self):
        raise ApiError("this endpoint serves several models (SAGEMAKER_MULTI_MODEL=true): invoke one with "
                       "POST /models/{model_name}/invoke (on SageMaker: InvokeEndpoint with TargetModel)",
                       code="model_not_named")

    # ---- the models -------------------------------------------------------------------------------------------

    def find(self, name: str) -> LoadedModel:
        with self._models_lock:
            model = self._models.get(name)
        if model is None:
            raise _not_loaded(name)
        return model

    def page(self, limit: int, start: int) -> tuple[list[LoadedModel], Optional[int]]:
        """Up to `limit` models in name order from position `start`, and where the next page starts
        (None after the last)."""
        with self._models_lock:
            models = [self._models[name] for name in sorted(self._models)]
        end = start + limit
        return models[start:end], (end if end < len(models) else None)

    def load(self, name: str, url: str) -> LoadedModel:
        if not self.ready():
            raise Unavailable("the server is still starting; retry when GET /ping answers 200", code="not_ready")
        with self._loading:
            with self._models_lock:
                if name in self._models:
                    raise ApiError(f"a model named {name!r} is already loaded (from {self._models[name].url}); "
                                   f"unload it first with DELETE /models/{name}", code="model_already_loaded",
                                   status=409)
            weights = _model_weights(Path(url))
            estimate = int(weights.stat().st_size * self._factor)
            self._refuse_unless_it_fits(name, estimate)
            started = time.monotonic()
            model = LoadedModel(name, url, EngineSlot(self._build(name, url)), estimate)
            with self._models_lock:
                self._models[name] = model
        log.info("loaded model %r from %s in %.1f s (estimated %d MB); %d model(s) loaded", name, url,
                 time.monotonic() - started, estimate // MB, len(self._models))
        return model

    def _refuse_unless_it_fits(self, name: str, needed: int) -> None:
        free = memory.available()
        available, source = free.bytes, free.source
        budget = self._settings.multi_model_memory_mb
        if budget is not None:
            with self._models_lock:
                taken = sum(m.estimate_bytes for m in self._models.values())
            if budget * MB - taken < available:
                available = max(0, budget * MB - taken)
                source = (f"MULTI_MODEL_MEMORY_MB={budget} less the {taken // MB} MB estimated for the "
                          f"{len(self._models)} model(s) loaded")
        if needed > available:
            raise ApiError(
                f"model {name!r} needs about {needed // MB} MB (its weights file x {self._factor:g}, "
                f"MULTI_MODEL_MEMORY_FACTOR) and {available // MB} MB are available ({source}); unload a "
                f"model, or raise MULTI_MODEL_MEMORY_MB", code="insufficient_memory", status=507,
                details={"needed_mb": needed // MB, "available_mb": available // MB})

    def _build(self, name: str, url: str):
        from .engine import build_engine
        from .model import ModelLoadError

        # Eager towers (TORCHSCRIPT ignored): torch keeps a frozen trace's weights after its model is dropped,
        # so each load and unload of a ViT-B-32 would leave about 340 MB behind (measured).
        settings = self._settings.replace(model_dir=url, model_dir_explicit=True, model_id=name, torchscript=False)
        try:
            return build_engine(settings, self._layout, self._phases)
        except ModelLoadError as exc:
            if _out_of_memory(exc):
                raise ApiError(f"model {name!r} ran out of memory while loading: {exc}", code="insufficient_memory",
                               status=507) from None
            raise ApiError(f"model {name!r} could not be loaded from {url}: {exc}", code="model_load_failed",
                           field="url") from None

    def unload(self, name: str) -> LoadedModel:
        with self._models_lock:
            model = self._models.pop(name, None)
        if model is None:
            raise _not_loaded(name)
        engine = model.slot.take()
        engine.stop()  # requests still waiting on its loop get a 503 `model_unloaded`
        del engine
        memory.release_freed_memory()
        log.info("unloaded model %r; %d model(s) loaded, worker RSS %d MB", name, len(self._models),
                 memory.rss_bytes() // MB)
        return model


def _not_loaded(name: str) -> ApiError:
    return ApiError(f"no model named {name!r} is loaded", code="model_not_loaded", status=404)


def _model_weights(directory: Path) -> Path:
    if not directory.is_dir():
        raise ApiError(f"url: {directory} is not a directory (SageMaker unpacks the model's .tar.gz into the "
                       f"directory it names)", code="model_url_not_found", field="url", status=404)
    try:
        return require_model_directory(directory, "url")
    except ModelSourceError as exc:
        raise ApiError(str(exc), code="invalid_model_directory", field="url") from None


def _out_of_memory(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, MemoryError) or "can't allocate memory" in str(exc)
