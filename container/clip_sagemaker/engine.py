"""One model copy behind its model loop: decode and prepare inputs in the caller's thread, encode in batches.

`Engine.for_request` gives the tasks an Encoder bound to that request's deadline; `build_engine` loads the
model the settings name and proves it with a warm-up inference.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from . import metrics
from .cpu_phases import CpuPhases
from .model_loop import LoopStopped, ModelLoop, QueueFull
from .errors import ApiError, Unavailable
from .fetch import FetchPolicy
from .inputs import ImageSource, UrlReader, decode_image, image_bytes, source_kind
from .model import ClipModel, ModelInfo, load_model
from .model_source import resolve_model_source
from .worker_layout import Layout
from .settings import Settings
from .text_cache import TextCache
from .class_weight_cache import ClassWeightCache
from .template_sets import template_set
from .modality import IMAGE, TEXT

log = logging.getLogger(__name__)


def default_batch_size(device: str) -> int:
    # On a CPU, throughput is flat from batch ~8 up while latency grows with the batch; a GPU wants big batches.
    return 128 if device.startswith("cuda") else 16


def default_batch_wait_ms(device: str) -> float:
    # Long enough for answered clients to send their next request; short beside one forward pass
    # (a CPU's ViT-B-32 batch takes hundreds of ms, a GPU's a few).
    return 2.0 if device.startswith("cuda") else 100.0


class Engine:
    def __init__(self, model: ClipModel, settings: Settings, phases: Optional[CpuPhases] = None):
        """`phases`: shared by every engine of a process that holds several models (multi_model.py)."""
        self.model = model
        self.settings = settings
        wait_ms = settings.max_batch_wait_ms
        if wait_ms is None:
            wait_ms = default_batch_wait_ms(model.info.device)
        # On a CPU, image preparation and forward passes take turns on the cores (cpu_phases.py).
        self.phases = phases or CpuPhases(enabled=model.info.device.startswith("cpu") and settings.cpu_phases)
        self.loop = ModelLoop(model.encode, settings.max_batch_size or default_batch_size(model.info.device),
                              settings.max_queue, stuck_after_s=settings.timeout_s,
                              max_wait_s=wait_ms / 1000, phases=self.phases).start()
        self._urls = UrlReader(FetchPolicy.from_settings(settings), settings.image_s3_buckets)
        self.text_cache = TextCache(model.info.name, settings.text_cache_size)
        self.class_weights = ClassWeightCache(model.info.name, settings.class_weight_cache_size)
        # JPEGs decode at a reduced scale that is still at least the model's input size (Pillow's draft mode).
        self._draft_size = max(model.info.image_size) if settings.jpeg_draft else None
        self._image_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="image")

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def describe(self) -> dict:
        """What GET /info shows: the model, how it runs, and the batching and cache state."""
        info, model = self.model.info, self.model
        return {
            "model": info.name, "source": info.source, "random_weights": info.random_weights,
            "embed_dim": info.embed_dim, "device": info.device,
            "precision": info.precision, "precision_reason": info.precision_reason,
            "image_size": list(info.image_size), "context_length": info.context_length,
            "logit_scale": model.logit_scale,
            "logit_bias": model.logit_bias, "scoring": "softmax" if model.logit_bias is None else "sigmoid",
            "max_batch_size": self.loop.max_batch_size, "text_cache": self.text_cache.stats(),
            "class_weight_cache": self.class_weights.stats(),
            "trimmed_text": model.text_tower is not None}

    def healthy(self) -> bool:
        return self.loop.healthy()

    def prepare_images(self, images: Sequence[ImageSource]) -> list:
        """Fetch, decode and preprocess a request's images side by side (I/O and Pillow release the GIL);
        the first image that fails, in request order, fails the request."""
        if len(images) == 1:
            return [self._prepare_image(images[0])]
        return list(self._image_pool.map(self._prepare_image, images))

    def prepare_each_or_error(self, images: Sequence[ImageSource]) -> list:
        """Like prepare_images, but an image that fails gives its ApiError in its place (record requests)."""
        def attempt(source: ImageSource):
            try:
                return self._prepare_image(source)
            except ApiError as error:
                return error
        return list(self._image_pool.map(attempt, images))

    def _prepare_image(self, source: ImageSource):
        try:
            data = image_bytes(source, self._urls)  # fetching waits on the network, not the CPU: not a phase
            with self.phases.preparing():
                image = decode_image(data, source.field, self.settings.max_image_pixels, self._draft_size)
                prepared = self.model.prepare_image(image)
        except ApiError as error:
            # 403 / 413: the fetch policy or a size limit said no; anything else could not be read.
            outcome = "refused" if error.status in (403, 413) else "failed"
            metrics.IMAGES.labels(source=source_kind(source), outcome=outcome).inc()
            raise
        metrics.IMAGES.labels(source=source_kind(source), outcome="ok").inc()
        return prepared

    def for_request(self, deadline: float) -> "RequestEncoder":
        return RequestEncoder(self, deadline)

    def warm_up(self) -> None:
        encoder = self.for_request(time.monotonic() + self.settings.timeout_s)
        encoder.encode_texts(["a photo of a cat"])
        blank = Image.new("RGB", self.model.info.image_size, (127, 127, 127))
        encoder.encode_rows(IMAGE, [self.model.prepare_image(blank)])

    def stop(self) -> None:
        self.loop.stop()
        self._image_pool.shutdown(wait=False, cancel_futures=True)


class RequestEncoder:
    """The tasks' Encoder for one request: every wait is bounded by the request's deadline."""

    def __init__(self, engine: Engine, deadline: float):
        self._engine = engine
        self._deadline = deadline
        self.logit_scale = engine.model.logit_scale
        self.logit_bias = engine.model.logit_bias

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        model = self._engine.model
        if not self._engine.settings.truncate_text:
            self._refuse_overlong(texts)
        return self._engine.text_cache.encode(texts, lambda missing: self.encode_rows(TEXT, list(model.tokenize(missing))))

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray:
        return self.encode_rows(IMAGE, self._engine.prepare_images(images))

    def encode_images_each(self, images: Sequence[ImageSource]) -> list:
        prepared = self._engine.prepare_each_or_error(images)
        good = [rows for rows in prepared if not isinstance(rows, ApiError)]
        vectors = iter(self.encode_rows(IMAGE, good) if good else [])
        return [rows if isinstance(rows, ApiError) else next(vectors) for rows in prepared]

    def token_counts(self, texts: Sequence[str]) -> Optional[list[int]]:
        """What the model reads of each text: past its context, a text is truncated (or was refused)."""
        counts = self._engine.model.token_counts(texts)
        context = self._engine.model.info.context_length
        return None if counts is None else [min(count, context) for count in counts]

    @staticmethod
    def template_set(name: str) -> tuple[str, ...]:
        return template_set(name)

    def class_weights(self, labels: tuple[str, ...], templates: tuple[str, ...],
                      build: Callable[[], np.ndarray]) -> np.ndarray:
        return self._engine.class_weights.get(labels, templates, build)

    def _refuse_overlong(self, texts: Sequence[str]) -> None:
        context = self._engine.model.info.context_length
        for index, count in enumerate(self._engine.model.token_counts(texts) or []):
            if count > context:
                raise ApiError(f"text {index} of this request ({texts[index][:40]!r}...) is {count} tokens, longer "
                               f"than the model's context of {context}; shorten it, or let the server truncate "
                               f"it (TEXT_TRUNCATE=true)", code="text_too_long")

    def encode_rows(self, modality: str, rows: list) -> np.ndarray:
        try:
            futures = self._engine.loop.submit(modality, rows)
            return np.concatenate([f.result(timeout=max(0.0, self._deadline - time.monotonic())) for f in futures])
        except QueueFull as exc:
            raise Unavailable(f"the server is overloaded: {exc} (MAX_QUEUE); retry later", code="overloaded") from None
        except (FutureTimeout, CancelledError):
            for future in futures:
                future.cancel()  # frees the queue slots of work nobody is waiting for any more
            raise Unavailable("the request ran past its deadline "
                              f"({self._engine.settings.timeout_s:g} s, SAGEMAKER_MODEL_SERVER_TIMEOUT)",
                              code="timeout") from None
        except LoopStopped:
            raise Unavailable("the model was unloaded while this request ran", code="model_unloaded") from None


def build_engine(settings: Settings, layout: Layout, phases: Optional[CpuPhases] = None) -> Engine:
    source = resolve_model_source(settings)
    log.info("loading %s", source.description)
    started = time.monotonic()
    model = load_model(source, device=settings.device, precision=settings.precision,
                       torch_threads=layout.torch_threads, trim_text=settings.trim_text,
                       freeze_towers=settings.torchscript)
    engine = Engine(model, settings, phases)
    engine.warm_up()
    metrics.WORKERS_READY.set(1)
    info = model.info
    log.info("model ready in %.1f s: %s on %s (%s: %s), embedding dim %d, image size %s, %d torch threads, batch %d",
             time.monotonic() - started, source.description, info.device, info.precision, info.precision_reason,
             info.embed_dim, info.image_size, layout.torch_threads, engine.loop.max_batch_size)
    return engine
