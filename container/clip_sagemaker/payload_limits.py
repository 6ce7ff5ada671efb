"""How large a request may be: the body limit of each kind of request, and the execution parameters that
Batch Transform asks for (`GET /execution-parameters`), which set the batch requests' limit.

Configuration, derived once from Settings and the worker layout; the HTTP layer enforces it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

from .errors import ApiError
from .settings import MB, SAGEMAKER_PAYLOAD_LIMIT_MB, Settings
from .worker_layout import Layout


@dataclass(frozen=True)
class ExecutionParameters:
    max_concurrent_transforms: int
    max_payload_mb: int

    def as_json(self) -> dict:
        # BatchStrategy is spelt as CreateTransformJob spells it; the SDK's local mode rejects MULTI_RECORD.
        return {"MaxConcurrentTransforms": self.max_concurrent_transforms, "BatchStrategy": "MultiRecord",
                "MaxPayloadInMB": self.max_payload_mb}


def execution_parameters(settings: Settings, layout: Layout) -> ExecutionParameters:
    """What this container asks Batch Transform for; the job's own settings, when given, win.

    A few requests in flight per model copy keep its loop fed while the next payload is decoded; a GPU
    takes bigger payloads (more records per forward pass) and more of them.
    """
    on_gpu = layout.gpus > 0 and not (settings.device or "").startswith("cpu")
    payload = settings.batch_max_payload_mb or (16 if on_gpu else 6)
    payload = min(payload, SAGEMAKER_PAYLOAD_LIMIT_MB)
    concurrent = settings.batch_max_concurrent or layout.workers * (4 if on_gpu else 2)
    concurrent = max(1, min(concurrent, SAGEMAKER_PAYLOAD_LIMIT_MB // payload))
    return ExecutionParameters(max_concurrent_transforms=concurrent, max_payload_mb=payload)


class BodyLimit(NamedTuple):
    bytes: int
    setting: str  # what a client would ask the operator to raise

    def check_announced(self, content_length: Optional[int]) -> None:
        """Refuses a body whose Content-Length is already past the limit, before any of it is read."""
        if content_length is not None and content_length > self.bytes:
            raise self.refuse()

    def refuse(self) -> ApiError:
        return ApiError(f"the request body is larger than {self.bytes / MB:g} MB, the limit of {self.setting}",
                        code="body_too_large", status=413)


def body_limit(settings: Settings, parameters: ExecutionParameters, batch_request: bool) -> BodyLimit:
    """Largest body for a request: batch requests may be as large as the announced MaxPayloadInMB, but
    never smaller than the real-time limit every request gets."""
    announced = parameters.max_payload_mb * MB
    if (batch_request or settings.batch_mode) and announced > settings.max_body_bytes:
        return BodyLimit(announced, "the announced MaxPayloadInMB (BATCH_MAX_PAYLOAD_MB)")
    return BodyLimit(settings.max_body_bytes, "MAX_BODY_MB")
