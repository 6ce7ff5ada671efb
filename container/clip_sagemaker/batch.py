"""SageMaker Batch Transform: the execution parameters the container announces, body limits per request
kind, and record-oriented requests (JSON Lines and CSV, many records per request).

Records come in two kinds:
- item records, `{"id": "sku-1", "image": "..."}` or `{"id": "q-7", "text": "red sofa"}` (exactly one of
  `image` / `text`; every other field is echoed in the answer), and each line of a CSV body (one text or
  image URL per line). They are answered `{...echoed fields, "embedding": [...]}`, and all the item records
  of a request are encoded together, in shared forward passes;
- any full request body /invocations takes (general format or an earlier system's), answered as it would
  be on its own.
Every input line gets exactly one answer line, in order; a record that fails answers
`{...echoed fields, "error": {...}}` in its place, and the others still get their results.
"""
from __future__ import annotations

import csv
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np

from . import codecs, protocols, tasks
from .errors import ApiError, internal_error, invalid
from .fetch import is_url
from .inputs import ImageSource
from .protocols import fields
from .resources import Layout
from .settings import MB, Settings

log = logging.getLogger(__name__)

SAGEMAKER_PAYLOAD_LIMIT_MB = 100  # MaxPayloadInMB's ceiling, and of MaxConcurrentTransforms x MaxPayloadInMB
ITEM_OPTIONS = {"normalize"}


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


def body_limit(settings: Settings, parameters: ExecutionParameters, batch_request: bool) -> tuple[int, str]:
    """Largest body for a request, and the setting it comes from: batch requests may be as large as the
    announced MaxPayloadInMB, but never smaller than the real-time limit every request gets."""
    announced = parameters.max_payload_mb * MB
    if (batch_request or settings.batch_mode) and announced > settings.max_body_bytes:
        return announced, "the announced MaxPayloadInMB (BATCH_MAX_PAYLOAD_MB)"
    return settings.max_body_bytes, "MAX_BODY_MB"


# ---- records -------------------------------------------------------------------------------------------------

@dataclass
class ItemRecord:
    item: tasks.Item
    echo: dict = field(default_factory=dict)
    normalize: bool = True


@dataclass
class FailedRecord:
    error: ApiError
    echo: dict = field(default_factory=dict)


Record = Union[ItemRecord, protocols.Call, FailedRecord]


def _echo_of(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("text", "image", "normalize")}


# orjson writes at most 255 levels of nesting: an echoed field nested deeper would fail the whole answer.
MAX_ECHO_DEPTH = 250


def _nested_deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]  # iterative: the parser allows 1024 levels, more than Python's recursion limit
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _is_item(doc: Any) -> bool:
    return isinstance(doc, dict) and "task" not in doc and (("text" in doc) != ("image" in doc))


def json_record(line: bytes, options: Mapping[str, Any], limits: fields.Limits) -> Record:
    doc: Any = None
    try:
        if not line.strip():
            raise ApiError("this line is empty; each line must hold one JSON request or record", code="empty_body")
        doc = codecs.decode_json(line)
        if not _is_item(doc):
            return protocols.detect(doc, options, limits)
        for key, echoed in _echo_of(doc).items():
            if _nested_deeper_than(echoed, MAX_ECHO_DEPTH):
                return FailedRecord(invalid(key, f"is nested more than {MAX_ECHO_DEPTH} levels deep, too deep to "
                                                 f"echo in the answer"))
        body = fields.with_options(doc, options, ITEM_OPTIONS)
        value = fields.text(doc["text"], "text", limits) if "text" in doc else fields.image(doc["image"], "image")
        return ItemRecord(tasks.Item(value), _echo_of(doc), fields.boolean(body, "normalize", True))
    except ApiError as error:
        # Only item records echo their fields: a full request body may be megabytes of images.
        return FailedRecord(error, _echo_of(doc) if _is_item(doc) else {})


def csv_record(line: bytes, options: Mapping[str, Any], limits: fields.Limits) -> Record:
    """A CSV line is one text or one image (http(s)/s3 URL or data: URI); quotes are CSV's."""
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return FailedRecord(ApiError("the line is not UTF-8 text", code="invalid_record", field="line"))
    value = next(csv.reader([text]), [""])[0] if text.startswith('"') else text
    normalize = fields.boolean(fields.with_options({}, options, ITEM_OPTIONS), "normalize", True)
    try:
        if is_url(value) or value.startswith("data:"):
            return ItemRecord(tasks.Item(ImageSource(value, "line")), normalize=normalize)
        return ItemRecord(tasks.Item(fields.text(value, "line", limits)), normalize=normalize)
    except ApiError as error:
        return FailedRecord(error)


def answer_records(records: list[Record], engine, started: float, deadline: float, pool: Executor) -> list[Any]:
    """One answer per record, in order. Item records share forward passes; full requests run side by side."""
    answers: list[Any] = [None] * len(records)
    encoder = engine.for_request(deadline)
    items = [(i, r) for i, r in enumerate(records) if isinstance(r, ItemRecord)]
    calls = [(i, r) for i, r in enumerate(records) if isinstance(r, protocols.Call)]
    pending = [(i, pool.submit(_run_call, call, engine, started, deadline)) for i, call in calls]
    for i, vector_or_error in zip([i for i, _ in items], _encode_items([r for _, r in items], engine, encoder)):
        record = records[i]
        if isinstance(vector_or_error, ApiError):
            answers[i] = {**record.echo, **vector_or_error.body()}
        else:
            vector = tasks.l2_normalize(vector_or_error) if record.normalize else vector_or_error
            answers[i] = {**record.echo, "embedding": vector}
    for i, record in enumerate(records):
        if isinstance(record, FailedRecord):
            answers[i] = {**record.echo, **record.error.body()}
    for i, future in pending:
        answers[i] = future.result()
    return answers


def _encode_items(records: list[ItemRecord], engine, encoder) -> list[Union[np.ndarray, ApiError]]:
    """Embeds every item record; an image that cannot be fetched or decoded fails only its own record."""
    results: list[Union[np.ndarray, ApiError, None]] = [None] * len(records)
    texts = [(i, r.item.value) for i, r in enumerate(records) if r.item.is_text]
    images = [(i, r.item.value) for i, r in enumerate(records) if not r.item.is_text]
    try:
        if texts:
            for (i, _), vector in zip(texts, encoder.encode_texts([t for _, t in texts])):
                results[i] = vector
        prepared = engine.prepare_each([source for _, source in images])
        good = [(i, rows) for (i, _), rows in zip(images, prepared) if not isinstance(rows, ApiError)]
        for (i, _), rows in zip(images, prepared):
            if isinstance(rows, ApiError):
                results[i] = rows
        if good:
            vectors = encoder.encode_rows(tasks.IMAGE, [rows for _, rows in good])
            for (i, _), vector in zip(good, vectors):
                results[i] = vector
    except ApiError as error:  # overloaded or past the deadline: every record still waiting shares the answer
        results = [error if r is None else r for r in results]
    return results


def _run_call(call: protocols.Call, engine, started: float, deadline: float) -> Any:
    try:
        result = tasks.run(call.task, engine.for_request(deadline))
        return call.render(result, protocols.Context(engine.info, started))
    except ApiError as error:
        return error.body()
    except Exception:  # noqa: BLE001 - a bug on one record must not cost the others their answers
        log.exception("a batch record failed")
        return internal_error().body()
