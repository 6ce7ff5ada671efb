"""Record-oriented requests (JSON Lines and CSV, many records per request, as SageMaker Batch Transform
sends them): each input line becomes one record.

Records come in two kinds:
- item records, `{"id": "sku-1", "image": "..."}` or `{"id": "q-7", "text": "red sofa"}` (exactly one of
  `image` / `text`; every other field is echoed in the answer), and each line of a CSV body (one text or
  image URL per line). They are answered `{...echoed fields, "embedding": [...]}`, and all the item records
  of a request are embedded together, in shared forward passes (`tasks.embed_each`);
- any full request body /invocations takes (the task format or an earlier system's), answered as it would
  be on its own.
A line that cannot be parsed becomes a FailedRecord, answered `{...echoed fields, "error": {...}}` in its
place; the pipeline answers the others as usual.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from . import codecs, protocols, tasks
from .errors import ApiError, invalid
from .fetch import is_url
from .inputs import ImageSource
from .protocols import fields

ITEM_OPTIONS = {"normalize"}


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
