"""Every environment variable the container reads, and the frozen Settings object built from them.

`ENVIRONMENT` declares each variable's name once, as data: `from_env` refuses to read a name that is not
declared there, docs/configuration.md's table is tested against it, and the benchmark derives the server's
environment from it. Nothing else in the package reads os.environ for configuration: tests build Settings
directly, and the production entry points call Settings.from_env() once. A leaf: it imports nothing of ours.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping, Optional

DEFAULT_MODEL_DIR = "/opt/ml/model"
# Where the Docker image keeps a model baked in at build time (`--build-arg MODEL_DIR_IN_CONTEXT=...`).
DEFAULT_BAKED_MODEL_DIR = "/opt/baked-model"
DEFAULT_MODEL_NAME = "ViT-B-32"
DEFAULT_MODEL_PRETRAINED = "laion2b_s34b_b79k"
MB = 1024 * 1024
# Batch Transform's ceiling for MaxPayloadInMB, and for MaxConcurrentTransforms x MaxPayloadInMB.
SAGEMAKER_PAYLOAD_LIMIT_MB = 100
# Asynchronous endpoints: a request body of up to 1 GB (an S3 object), up to an hour per request.
ASYNC_PAYLOAD_LIMIT_MB = 1024
ASYNC_TIMEOUT_S = 3600.0
# gunicorn's post_fork hook tells each worker its slot (which GPU it takes) through this variable.
WORKER_SLOT_ENV = "CLIP_WORKER_SLOT"
# Where gunicorn listens when the front (nginx) takes the port: the launcher sets it, gunicorn's config reads it.
GUNICORN_BIND_ENV = "CLIP_GUNICORN_BIND"

# Every variable a user may set, in the order docs/configuration.md lists them.
ENVIRONMENT: tuple[str, ...] = (
    # where the model comes from
    "MODEL_DIR", "BAKED_MODEL_DIR", "CLIP_MODEL", "MODEL_NAME", "MODEL_PRETRAINED", "MODEL_ID",
    # where and how it runs
    "DEVICE", "PRECISION", "TORCH_NUM_THREADS", "MEMORY_LIMIT_MB",
    # the HTTP server
    "SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_MODEL_SERVER_WORKERS", "SERVER_THREADS", "SAGEMAKER_MODEL_SERVER_TIMEOUT",
    "SAGEMAKER_BATCH", "ASYNC_INFERENCE", "LOG_LEVEL", "FRONT", "CLIENT_TIMEOUT", "PROMETHEUS_MULTIPROC_DIR",
    # the model loop and the work around it
    "MAX_BATCH_SIZE", "MAX_BATCH_WAIT_MS", "MAX_QUEUE", "TEXT_CACHE_SIZE", "CLASS_WEIGHT_CACHE_SIZE", "TEXT_TRIM",
    "JPEG_DRAFT", "TORCHSCRIPT", "CPU_PHASES",
    # request limits and Batch Transform
    "MAX_BODY_MB", "BATCH_MAX_PAYLOAD_MB", "BATCH_MAX_CONCURRENT_TRANSFORMS", "SAGEMAKER_MAX_PAYLOAD_IN_MB",
    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "MAX_ITEMS", "MAX_TEXT_CHARS", "MAX_CLASSIFY_PROMPTS", "TEXT_TRUNCATE",
    "MAX_IMAGE_PIXELS",
    # images given by URL or in S3
    "IMAGE_URL_ALLOWED_HOSTS", "MAX_IMAGE_MB", "IMAGE_FETCH_TIMEOUT", "IMAGE_S3_BUCKETS",
    # multi-model endpoints
    "SAGEMAKER_MULTI_MODEL", "MULTI_MODEL_MEMORY_MB", "MULTI_MODEL_MEMORY_FACTOR",
)
_DECLARED = frozenset(ENVIRONMENT)


class SettingsError(ValueError):
    """An environment variable holds a value the container cannot use."""


def _text(env: Mapping[str, str], name: str) -> Optional[str]:
    if name not in _DECLARED:
        raise KeyError(f"{name} is read but not declared in settings.ENVIRONMENT")
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: Optional[int], minimum: int = 1) -> Optional[int]:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a whole number") from None
    if number < minimum:
        raise SettingsError(f"{name}={value!r} must be at least {minimum}")
    return number


def _float(env: Mapping[str, str], name: str, default: Optional[float], minimum: float = 0.0) -> Optional[float]:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number") from None
    if number < minimum:
        raise SettingsError(f"{name}={value!r} must be at least {minimum}")
    return number


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _text(env, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean (use true or false)")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> Optional[str]:
    value = _text(env, name)
    if value is None:
        return None
    if value.lower() not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value.lower()


def _front(env: Mapping[str, str]) -> str:
    value = _text(env, "FRONT")
    if value is None or value.lower() == "auto":
        return "auto"
    # Booleans as everywhere else, so that FRONT=true and FRONT=0 mean what they say.
    try:
        return "on" if _bool(env, "FRONT", True) else "off"
    except SettingsError:
        raise SettingsError(f"FRONT={value!r} must be auto, on or off") from None


@dataclass(frozen=True)
class Settings:
    # Where the model comes from (see model_source.py for the precedence).
    model_dir: str = DEFAULT_MODEL_DIR
    model_dir_explicit: bool = False
    baked_model_dir: str = DEFAULT_BAKED_MODEL_DIR
    baked_model_dir_explicit: bool = False
    model_name: str = DEFAULT_MODEL_NAME
    model_pretrained: str = DEFAULT_MODEL_PRETRAINED
    clip_model: Optional[str] = None
    model_id: Optional[str] = None
    # Where and how it runs. None means "decide from the hardware".
    device: Optional[str] = None
    precision: Optional[str] = None
    torch_threads: Optional[int] = None
    memory_limit_mb: Optional[int] = None  # None: the cgroup's limit, if any
    # HTTP server.
    port: int = 8080
    workers: Optional[int] = None
    http_threads: int = 32
    timeout_s: float = 60.0
    batch_mode: bool = False
    async_mode: bool = False
    log_level: str = "info"
    # The buffering front (front.py): "on", "off", or "auto" (on when nginx is installed).
    front: str = "auto"
    client_timeout_s: float = 60.0
    metrics_dir: Optional[str] = None  # the launcher decides (metrics.prepare_dir) and exports it to the workers
    # Model loop and the work around it.
    max_batch_size: Optional[int] = None
    max_batch_wait_ms: Optional[float] = None
    max_queue: int = 1024
    text_cache_size: int = 10_000
    class_weight_cache_size: int = 10_000
    trim_text: bool = True
    jpeg_draft: bool = True
    torchscript: bool = True
    cpu_phases: bool = True
    # Request limits. Batch requests (JSON Lines, CSV, or any request under SAGEMAKER_BATCH) may be as large
    # as the MaxPayloadInMB the container announces; others keep SageMaker's real-time 6 MB.
    max_body_bytes: int = 6 * MB
    batch_max_payload_mb: Optional[int] = None
    batch_max_concurrent: Optional[int] = None
    max_items: int = 256
    max_text_chars: int = 10_000
    max_classify_prompts: int = 4096
    truncate_text: bool = True
    max_image_pixels: int = 40_000_000
    # Images given by URL.
    image_url_allowed_hosts: str = ""
    max_image_bytes: int = 25 * MB
    image_fetch_timeout_s: float = 30.0
    image_s3_buckets: tuple[str, ...] = ()
    # Multi-model endpoints (multi_model.py): no model at start, models loaded and unloaded over /models.
    multi_model: bool = False
    multi_model_memory_mb: Optional[int] = None
    multi_model_memory_factor: Optional[float] = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        batch_mode = _bool(env, "SAGEMAKER_BATCH", False)
        async_mode = _bool(env, "ASYNC_INFERENCE", False)
        model_dir = _text(env, "MODEL_DIR")
        baked_model_dir = _text(env, "BAKED_MODEL_DIR")
        precision = _choice(env, "PRECISION", ("fp32", "fp16", "bf16"))
        settings = cls(
            model_dir=model_dir or DEFAULT_MODEL_DIR,
            model_dir_explicit=model_dir is not None,
            baked_model_dir=baked_model_dir or DEFAULT_BAKED_MODEL_DIR,
            baked_model_dir_explicit=baked_model_dir is not None,
            model_name=_text(env, "MODEL_NAME") or DEFAULT_MODEL_NAME,
            model_pretrained=_text(env, "MODEL_PRETRAINED") or DEFAULT_MODEL_PRETRAINED,
            clip_model=_text(env, "CLIP_MODEL"),
            model_id=_text(env, "MODEL_ID"),
            device=(_text(env, "DEVICE") or "").lower() or None,
            precision=precision,
            torch_threads=_int(env, "TORCH_NUM_THREADS", None),
            memory_limit_mb=_int(env, "MEMORY_LIMIT_MB", None),
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080),
            workers=_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", None),
            http_threads=_int(env, "SERVER_THREADS", 32),
            # Batch Transform allows up to an hour per invocation (600 s by default), asynchronous endpoints an
            # hour; real-time endpoints cut off at 60 s.
            timeout_s=_float(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT",
                             ASYNC_TIMEOUT_S if async_mode else 600.0 if batch_mode else 60.0, 1.0),
            batch_mode=batch_mode,
            async_mode=async_mode,
            log_level=_choice(env, "LOG_LEVEL", ("debug", "info", "warning", "error", "critical")) or "info",
            front=_front(env),
            client_timeout_s=_float(env, "CLIENT_TIMEOUT", 60.0, 1.0),
            metrics_dir=_text(env, "PROMETHEUS_MULTIPROC_DIR"),
            max_batch_size=_int(env, "MAX_BATCH_SIZE", None),
            max_batch_wait_ms=_float(env, "MAX_BATCH_WAIT_MS", None),
            max_queue=_int(env, "MAX_QUEUE", 1024),
            text_cache_size=_int(env, "TEXT_CACHE_SIZE", 10_000, minimum=0),
            class_weight_cache_size=_int(env, "CLASS_WEIGHT_CACHE_SIZE", 10_000, minimum=0),
            trim_text=_bool(env, "TEXT_TRIM", True),
            jpeg_draft=_bool(env, "JPEG_DRAFT", True),
            torchscript=_bool(env, "TORCHSCRIPT", True),
            cpu_phases=_bool(env, "CPU_PHASES", True),
            max_body_bytes=_int(env, "MAX_BODY_MB", ASYNC_PAYLOAD_LIMIT_MB if async_mode else 6) * MB,
            # The job's own settings (SageMaker passes them as SAGEMAKER_*) win over the container's defaults.
            batch_max_payload_mb=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", None)
            or _int(env, "BATCH_MAX_PAYLOAD_MB", None),
            batch_max_concurrent=_int(env, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", None)
            or _int(env, "BATCH_MAX_CONCURRENT_TRANSFORMS", None),
            max_items=_int(env, "MAX_ITEMS", 256),
            max_text_chars=_int(env, "MAX_TEXT_CHARS", 10_000),
            max_classify_prompts=_int(env, "MAX_CLASSIFY_PROMPTS", 4096),
            truncate_text=_bool(env, "TEXT_TRUNCATE", True),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 40_000_000),
            image_url_allowed_hosts=_text(env, "IMAGE_URL_ALLOWED_HOSTS") or "",
            max_image_bytes=_int(env, "MAX_IMAGE_MB", 25) * MB,
            image_fetch_timeout_s=_float(env, "IMAGE_FETCH_TIMEOUT", 30.0, 1.0),
            image_s3_buckets=tuple((_text(env, "IMAGE_S3_BUCKETS") or "").replace(",", " ").split()),
            multi_model=_bool(env, "SAGEMAKER_MULTI_MODEL", False),
            multi_model_memory_mb=_int(env, "MULTI_MODEL_MEMORY_MB", None),
            multi_model_memory_factor=_float(env, "MULTI_MODEL_MEMORY_FACTOR", None, 1.0),
        )
        if (settings.batch_max_payload_mb or 0) > SAGEMAKER_PAYLOAD_LIMIT_MB:
            raise SettingsError(f"a MaxPayloadInMB of {settings.batch_max_payload_mb} is above Batch Transform's "
                                f"limit of {SAGEMAKER_PAYLOAD_LIMIT_MB} (BATCH_MAX_PAYLOAD_MB / "
                                f"SAGEMAKER_MAX_PAYLOAD_IN_MB)")
        return settings

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)
