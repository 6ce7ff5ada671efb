"""CLIP-API-service (seed 002; BentoML, docker-clip-api): `POST /rank` and `POST /encode`.

Items are `{"text": ...}`, `{"img_uri": "<http(s) URL>"}` or `{"img_blob": "<base64>"}`; when an item has
several, the original's priority holds (img_uri, then img_blob, then text). `/rank` answers
`{"probabilities", "cosine_similarities"}`, one row per query; `/encode` a list of un-normalised vectors.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from ..errors import invalid
from . import fields

ENCODE_OPTIONS = {"normalize"}
RANK_FIELDS = {"queries", "candidates"}


def _item(value: Any, field: str, limits: fields.Limits) -> tasks.Item:
    if not isinstance(value, dict):
        raise invalid(field, f'must be an object like {{"text": "..."}}, got {fields.type_name(value)}')
    if value.get("img_uri") is not None:
        return tasks.Item(fields.image(value["img_uri"], f"{field}.img_uri"))
    if value.get("img_blob") is not None:
        return tasks.Item(fields.image(value["img_blob"], f"{field}.img_blob"))
    if value.get("text") is not None:
        return tasks.Item(fields.text(value["text"], f"{field}.text", limits))
    raise invalid(field, 'needs one of "text", "img_uri" or "img_blob"', code="missing_field")


def _items(values: list, path: str, limits: fields.Limits) -> tuple[tasks.Item, ...]:
    return tuple(_item(v, f"{path}[{i}]", limits) for i, v in enumerate(values))


def parse_rank(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    body = fields.require_object(body, "POST /rank")
    task = tasks.RankTask(queries=_items(fields.items_list(body, "queries", limits), "queries", limits),
                          candidates=_items(fields.items_list(body, "candidates", limits), "candidates", limits))

    def render(result: tasks.RankResult, ctx) -> dict:
        return {"probabilities": result.probabilities, "cosine_similarities": result.cosine_similarities}

    return task, render


def parse_encode(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    items = fields.as_list(body, "body", limits)
    normalize = fields.boolean(fields.with_options({}, options, ENCODE_OPTIONS), "normalize", False)
    task = tasks.EmbedTask(_items(items, "", limits), normalize=normalize)
    return task, lambda result, ctx: result.vectors
