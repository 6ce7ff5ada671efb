"""Request decoding by Content-Type and response encoding by Accept, and the custom-attributes header.

Request bodies are one JSON document, JSON Lines (one request per line), or one raw image. Answers are
JSON, JSON Lines or a NumPy `.npy` array (what the SageMaker SDK's NumpyDeserializer reads). JSON goes
through orjson, which writes numpy float32 arrays directly (no per-float Python objects).
"""
from __future__ import annotations

import csv
import io
import re
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import orjson
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from .errors import ApiError

JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
CSV = "text/csv"
_JSON_TYPES = {JSON, "text/json"}
_JSONLINES_TYPES = {JSONLINES, "application/x-jsonlines", "application/jsonl", "application/x-ndjson",
                    "application/ndjson"}
# file-path/raw-bytes is the SageMaker SDK DataSerializer's default: a file's bytes, here an image's.
_IMAGE_TYPES = {"application/x-image", "application/octet-stream", "file-path/raw-bytes"}
PRODUCIBLE = (JSON, JSONLINES, NPY)


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
        except (LookupError, UnicodeError) as exc:  # UnicodeError: also UTF-7's lone surrogates on re-encoding
            raise ApiError(f"the body could not be decoded as {charset}: {exc}", code="malformed_json") from None
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, which Windows tools like to write
        body = body[3:]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"the body is not valid JSON: {exc}", code="malformed_json") from None


def is_json(content_type: Optional[str]) -> bool:
    mime, _ = media_type(content_type)
    # SageMaker always forwards a Content-Type; curl users often omit it or send curl's form default.
    return mime in _JSON_TYPES or mime.endswith("+json") or mime in ("", "application/x-www-form-urlencoded")


def request_kind(content_type: Optional[str]) -> str:
    """"json", "jsonlines" or "image", from the Content-Type; 415 for anything else."""
    mime, _ = media_type(content_type)
    if is_json(content_type):
        return "json"
    if mime in _JSONLINES_TYPES:
        return "jsonlines"
    if mime == CSV:
        return "csv"
    if mime.startswith("image/") or mime in _IMAGE_TYPES:
        return "image"
    raise ApiError(f"Content-Type {content_type!r} is not supported; send {JSON}, {JSONLINES}, {CSV} or an "
                   f"image (image/*, {', '.join(sorted(_IMAGE_TYPES))})", code="unsupported_media_type", status=415)


def decode_request(body: bytes, content_type: Optional[str]) -> Any:
    """A JSON request body → its document (only for request_kind "json")."""
    return decode_json(body, media_type(content_type)[1].get("charset"))


def iter_lines(read: Callable[[int], bytes], block_bytes: int = 1 << 20) -> Iterator[bytes]:
    """JSON Lines → one record per line, read `block_bytes` at a time from `read` (a request's input stream),
    so that a large body is never held whole; a final newline ends the last record rather than adding one."""
    tail = b""
    while True:
        block = read(block_bytes)
        if not block:
            break
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        yield from (line.rstrip(b"\r") for line in lines)
    if tail.strip():
        yield tail.rstrip(b"\r")


def parse_custom_attributes(header: Optional[str]) -> dict[str, Any]:
    """`normalize=false,top_k=5` (also `;`-separated) → {"normalize": False, "top_k": 5}.

    SageMaker passes X-Amzn-SageMaker-Custom-Attributes through unchanged; entries that are not key=value
    pairs are someone else's (tracing tags, say) and are ignored.
    """
    options: dict[str, Any] = {}
    for part in re.split(r"[,;]", header or ""):
        key, eq, raw = part.partition("=")
        if eq and key.strip():
            options[key.strip()] = _typed(raw.strip())
    return options


def _typed(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _client_position(mime: str, in_client_order: list[str]) -> int:
    """Where the client listed the most specific range that matches `mime` (exact, then type/*, then */*)."""
    for media_range in (mime, f"{mime.split('/')[0]}/*", "*/*"):
        if media_range in in_client_order:
            return in_client_order.index(media_range)
    return len(in_client_order)


def _answer_names(mime: str, in_client_order: list[str]) -> list[str]:
    """The names a client asks for a type by: JSON Lines also by any alias the client names explicitly."""
    if mime != JSONLINES:
        return [mime]
    return [mime] + [alias for alias in sorted(_JSONLINES_TYPES - {mime}) if alias in in_client_order]


def choose_response_type(accept: Optional[str], producible: tuple[str, ...] = PRODUCIBLE) -> str:
    """The best type we can produce for an Accept header; missing or `*/*` means the first producible.

    werkzeug's parser weighs each type by its most specific matching range (`application/json;q=0, */*`
    refuses JSON); among types of equal quality the client's order wins, then ours.
    """
    if not accept or not accept.strip():
        return producible[0]
    parts = [media_type(part) for part in accept.split(",")]
    in_client_order = [mime for mime, _ in parts]
    # Parameters other than q (charset=utf-8) say nothing about which type we may answer with.
    ranges = parse_accept_header(", ".join(f"{mime};q={params['q']}" if "q" in params else mime
                                           for mime, params in parts if mime), MIMEAccept)
    accepted = []
    for ours, mime in enumerate(producible):
        for name in _answer_names(mime, in_client_order):
            quality = ranges.quality(name)
            if quality > 0:
                # Sorted best first: highest quality, then the client's order, then ours.
                accepted.append((-quality, _client_position(name, in_client_order), ours, mime))
    if not accepted:
        raise ApiError(f"cannot answer with any type in Accept {accept!r}; available: {', '.join(producible)}",
                       code="not_acceptable", status=406)
    return min(accepted)[3]


def _contiguous(value: Any) -> Any:
    # orjson writes numpy arrays natively only when C-contiguous (slices and transposes are not).
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(payload: Any) -> bytes:
    return orjson.dumps(payload, default=_contiguous, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_json_lines(payloads: list[Any]) -> bytes:
    # No newline after the last line: Batch Transform's AssembleWith=Line adds one after each response, and
    # a second would put a blank line into the output between every two requests.
    return b"\n".join(encode_json(p) for p in payloads)


def encode_answer_stream(chunks: Iterable[list[Any]], accept: str) -> Iterator[bytes]:
    """Record answers, arriving a chunk at a time, as one JSON Lines, CSV or JSON array body, piece by piece:
    the same bytes the whole list would encode to, without ever holding it."""
    encode_chunk = {JSONLINES: encode_json_lines, CSV: encode_csv_embeddings,
                    JSON: lambda answers: b",".join(encode_json(a) for a in answers)}[accept]
    separator = b"," if accept == JSON else b"\n"
    if accept == JSON:
        yield b"["
    first = True
    for answers in chunks:
        if answers:
            yield encode_chunk(answers) if first else separator + encode_chunk(answers)
            first = False
    if accept == JSON:
        yield b"]"


def encode_csv_embeddings(answers: list[dict]) -> bytes:
    """One CSV line per answer: the embedding's numbers, or `error,<code>,<message>` for a failed record."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # the last newline is dropped below, as for JSON Lines
    for answer in answers:
        if "embedding" in answer:
            writer.writerow(np.asarray(answer["embedding"], dtype=np.float32).tolist())
        else:
            error = answer.get("error", {})
            writer.writerow(["error", error.get("code", ""), error.get("message", "")])
    return buffer.getvalue().removesuffix("\n").encode()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
