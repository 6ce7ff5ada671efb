"""Request decoding by Content-Type and response encoding by Accept.

JSON goes through orjson, which writes numpy float32 arrays directly (no per-float Python objects).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import orjson

from .errors import ApiError

JSON = "application/json"
_JSON_TYPES = {JSON, "text/json"}
PRODUCIBLE = (JSON,)


def media_type(header: Optional[str]) -> tuple[str, dict[str, str]]:
    """`application/json; charset=utf-8` → ("application/json", {"charset": "utf-8"})."""
    if not header:
        return "", {}
    mime, _, rest = header.partition(";")
    params = {}
    for part in rest.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    return mime.strip().lower(), params


def decode_json(body: bytes, charset: Optional[str] = None) -> Any:
    if not body.strip():
        raise ApiError("the request body is empty; send a JSON document", code="empty_body")
    if charset and charset.lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii", "ascii"):
        try:
            body = body.decode(charset).encode("utf-8")
        except (LookupError, UnicodeDecodeError) as exc:
            raise ApiError(f"the body could not be decoded as {charset}: {exc}", code="malformed_json") from None
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, which Windows tools like to write
        body = body[3:]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"the body is not valid JSON: {exc}", code="malformed_json") from None


def decode_request(body: bytes, content_type: Optional[str]) -> Any:
    mime, params = media_type(content_type)
    # SageMaker always forwards a Content-Type; curl users often omit it, and then JSON is the only guess.
    if mime in _JSON_TYPES or mime.endswith("+json") or mime in ("", "application/x-www-form-urlencoded"):
        return decode_json(body, params.get("charset"))
    raise ApiError(f"Content-Type {content_type!r} is not supported; send {JSON}", code="unsupported_media_type",
                   status=415)


def _accepted(accept: str) -> list[tuple[float, int, str]]:
    ranges = []
    for position, part in enumerate(accept.split(",")):
        mime, params = media_type(part)
        if not mime:
            continue
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        ranges.append((quality, -position, mime))
    return sorted(ranges, reverse=True)


def choose_response_type(accept: Optional[str], producible: tuple[str, ...] = PRODUCIBLE) -> str:
    """The best type we can produce for an Accept header; missing or `*/*` means JSON."""
    if not accept or not accept.strip():
        return producible[0]
    for quality, _, mime in _accepted(accept):
        if quality <= 0:
            continue
        if mime in ("*/*", "application/*"):
            return producible[0]
        if mime in producible:
            return mime
    raise ApiError(f"cannot answer with any type in Accept {accept!r}; available: {', '.join(producible)}",
                   code="not_acceptable", status=406)


def _contiguous(value: Any) -> Any:
    # orjson writes numpy arrays natively only when C-contiguous (slices and transposes are not).
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(payload: Any) -> bytes:
    return orjson.dumps(payload, default=_contiguous, option=orjson.OPT_SERIALIZE_NUMPY)
