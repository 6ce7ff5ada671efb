"""OpenAI's embeddings API: `POST /v1/embeddings`, `/embeddings` and `/invocations` with a body that has `input`.

    {"model": "...", "input": "..." | ["...", ...] | [{"text": "..."} | {"image": "..."}, ...],
     "encoding_format": "float" | "base64", "modality": "text" | "image", "dimensions": 512, "user": "..."}

Strings are texts, or images with `"modality": "image"` (Infinity's convention, which OpenAI's clients send
through `extra_body`); objects carry their own modality (Jina's convention), so one request may mix both.
Any `model` is accepted (clients send their own defaults) and the answer names the served model. The answer
is OpenAI's list of L2-normalised embeddings, as float lists or as base64 of little-endian float32 (what the
official `openai` client asks for by default), with `usage` counting the texts' tokens as the model reads them.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping

import numpy as np

from .. import tasks
from ..errors import ApiError, invalid
from . import fields

KEYS = {"model", "input", "encoding_format", "modality", "dimensions", "user"}
ENCODING_FORMATS = ("float", "base64")
MODALITIES = ("text", "image")
TOKEN_IDS_HINT = ("token ids (tiktoken's) mean nothing to a CLIP tokenizer: send the texts themselves (LangChain's "
                  "OpenAIEmbeddings sends token ids unless it is given check_embedding_ctx_length=False)")


def _choice(body: dict, key: str, choices: tuple[str, ...]) -> str:
    value = body.get(key)
    if value is None:
        return choices[0]
    if value not in choices:  # `in` on a tuple of strings is safe for lists and objects too
        raise invalid(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r:.40}")
    return value


def _optional_string(body: dict, key: str) -> None:
    if body.get(key) is not None and not isinstance(body[key], str):
        raise invalid(key, f"must be a string, got {fields.type_name(body[key])}")


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _item(value: Any, field: str, modality: str, limits: fields.Limits) -> tasks.Item:
    if isinstance(value, str):
        if modality == "image":
            return tasks.Item(fields.image(value, field))
        return tasks.Item(fields.text(value, field, limits))
    if isinstance(value, dict):
        return fields.item_object(value, field, limits)
    if _is_token_ids(value) or (isinstance(value, list) and value and all(map(_is_token_ids, value))):
        raise invalid(field, TOKEN_IDS_HINT, code="token_ids_unsupported")
    raise invalid(field, f'must be a string or an object like {{"text": "..."}}, got {fields.type_name(value)}')


def _items(body: dict, modality: str, limits: fields.Limits) -> tuple[tasks.Item, ...]:
    value = body.get("input")
    if isinstance(value, str):
        return (_item(value, "input", modality, limits),)
    values = fields.as_list(value, "input", limits)
    if all(map(_is_token_ids, values)):
        raise invalid("input", TOKEN_IDS_HINT, code="token_ids_unsupported")
    return tuple(_item(v, f"input[{i}]", modality, limits) for i, v in enumerate(values))


def parse(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    body = fields.require_object(body, "OpenAI's embeddings API")
    fields.reject_unknown(body, KEYS, "OpenAI's embeddings API")
    _optional_string(body, "model")
    _optional_string(body, "user")
    encoding = _choice(body, "encoding_format", ENCODING_FORMATS)
    items = _items(body, _choice(body, "modality", MODALITIES), limits)
    dimensions = fields.integer(body, "dimensions", None, 1)

    def check(info) -> None:
        if dimensions is not None and dimensions != info.embed_dim:
            raise ApiError(f"dimensions: the model's embeddings have {info.embed_dim} dimensions; CLIP embeddings "
                           f"are not trained to be shortened (they are not Matryoshka embeddings), so {dimensions} "
                           f"cannot be served; leave dimensions out or send {info.embed_dim}",
                           code="unsupported_dimensions", field="dimensions")

    def render(result: tasks.EmbedResult, ctx) -> dict:
        tokens = result.text_tokens or 0
        return {"object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
                         for i, vector in enumerate(result.vectors)],
                "model": ctx.info.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return tasks.EmbedTask(items, normalize=True, count_tokens=True), render, check


def _encoded(vector: np.ndarray, encoding: str):
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector
