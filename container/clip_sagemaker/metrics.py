"""Prometheus metrics: every metric's definition, in the one module that the HTTP layer (app.py) and the
model layer (model loop, engine, caches) record into, and the text GET /metrics answers with.

gunicorn's workers are separate processes. In prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
which the launcher points at a fresh folder before gunicorn forks: metrics_folder.py) each process keeps its
values in memory-mapped files there, and a scrape answered by any one worker adds up every worker's;
gunicorn_config.py marks a dead worker's files so that its gauges stop counting. Without that folder (unit
tests, one process) the values live in this process's own registry. Recording is a lock-guarded add to a
mapped file: one per request, per image and per batch, never per row. Imports neither Flask nor torch.
"""
from __future__ import annotations

from typing import Optional

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

REQUESTS = Counter("clip_requests", "HTTP requests answered, by route (the route's pattern; unmatched for a "
                   "path no route serves), status and request format (none where no body was read)",
                   ["route", "status", "format"])
REQUEST_SECONDS = Histogram("clip_request_duration_seconds", "Time from a request's start to its answer, by route",
                            ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                                120, 600))
BATCH_ROWS = Histogram("clip_batch_rows", "Rows (texts or images) in each forward pass of the model loop",
                       ["modality"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
MODEL_BUSY_SECONDS = Counter("clip_model_busy_seconds", "Time the model loop spent in forward passes",
                             ["modality"])
QUEUE_DEPTH = Gauge("clip_queue_depth", "Jobs waiting for the model loop (summed over live workers)",
                    multiprocess_mode="livesum")
WORKERS_READY = Gauge("clip_workers_ready", "Workers whose model is loaded (summed over live workers)",
                      multiprocess_mode="livesum")
TEXT_CACHE = Counter("clip_text_cache_lookups", "Texts looked up in the text embedding cache, by result",
                     ["result"])
CLASS_WEIGHT_CACHE = Counter("clip_class_weight_cache_lookups",
                             "Label sets looked up in the class-weight cache, by result", ["result"])
IMAGES = Counter("clip_images", "Images read from requests, by source (inline: base64 or data URI; url; s3; "
                 "body: a raw image body) and outcome (ok; refused: a limit or the fetch policy; failed: "
                 "could not be fetched or decoded)", ["source", "outcome"])


def count_lookups(counter: Counter, hits: int, misses: int) -> None:
    if hits:
        counter.labels(result="hit").inc(hits)
    if misses:
        counter.labels(result="miss").inc(misses)


def exposition(multiprocess_dir: Optional[str], accept: Optional[str]) -> tuple[bytes, str]:
    """The metrics in the text format the scraper's Accept asks for (OpenMetrics or Prometheus text)."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
