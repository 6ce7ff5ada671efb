"""This container's own /invocations format: a required `task` field names one of the three tasks.

    {"task": "embed", "texts": [...], "images": [...], "normalize": true}
    {"task": "rank", "queries": [{"image": ...} | {"text": ...}], "candidates": [...], "top_k": 5}
    {"task": "classify", "images": [...], "classes": [[label, id], ...] | [label, ...], "prompt_template": ...,
     "top_k": 3, "margin": 0.02, "logit_scale": 100}

Unknown fields are refused, so that a misspelt option (`normalise`) is an error instead of silently ignored.
"""
from __future__ import annotations

from typing import Any

from .. import tasks
from ..errors import ApiError, invalid
from . import fields, labelled_classes

EMBED_KEYS = {"task", "texts", "images", "normalize"}
RANK_KEYS = {"task", "queries", "candidates", "top_k"}
CLASSIFY_KEYS = labelled_classes.KEYS | {"task"}


def _item(value: Any, field: str) -> tasks.Item:
    if not isinstance(value, dict) or len(value) != 1 or not ({"text", "image"} & set(value)):
        raise invalid(field, 'must be {"text": "..."} or {"image": "<base64 or data URI>"}')
    if "text" in value:
        return tasks.Item(fields.text(value["text"], f"{field}.text"))
    return tasks.Item(fields.image(value["image"], f"{field}.image"))


def _items(body: dict, key: str, max_items: int) -> tuple[tasks.Item, ...]:
    return tuple(_item(v, f"{key}[{i}]") for i, v in enumerate(fields.items_list(body, key, max_items)))


def _embed(body: dict, max_items: int):
    fields.reject_unknown(body, EMBED_KEYS, "task embed")
    task = tasks.EmbedTask(texts=fields.texts(body, "texts", max_items, required=False),
                           images=fields.images(body, "images", max_items, required=False),
                           normalize=fields.boolean(body, "normalize", True))
    if not task.texts and not task.images:
        raise ApiError("task embed needs at least one of texts or images", code="missing_field", field="texts")
    if len(task.texts) + len(task.images) > max_items:
        raise ApiError(f"{len(task.texts) + len(task.images)} texts and images together, above the limit of "
                       f"{max_items} (MAX_ITEMS)", code="too_many_items", status=413)

    def render(result: tasks.EmbedResult, info: Any) -> dict:
        return {"task": "embed", "model": info.name, "dim": info.embed_dim, "normalized": result.normalized,
                "text_embeddings": result.texts if task.texts else [],
                "image_embeddings": result.images if task.images else []}

    return task, render


def _rank(body: dict, max_items: int):
    fields.reject_unknown(body, RANK_KEYS, "task rank")
    task = tasks.RankTask(queries=_items(body, "queries", max_items),
                          candidates=_items(body, "candidates", max_items))
    top_k = fields.integer(body, "top_k", len(task.candidates), 1)

    def render(result: tasks.RankResult, info: Any) -> dict:
        order = (-result.probabilities).argsort(axis=1, kind="stable")[:, :top_k]
        return {"task": "rank", "scoring": result.scoring,
                "cosine_similarities": result.cosine_similarities, "probabilities": result.probabilities,
                "rankings": order}

    return task, render


def _render_classification(result: list[tasks.Classification], info: Any) -> dict:
    return {"task": "classify", "results": [
        {"label": c.top_labels[0], "classification": c.classification, "confidence": c.confidence,
         "selected": c.selected, "prompts": labelled_classes.prompts_triple(c)} for c in result]}


def _classify(body: dict, max_items: int):
    fields.reject_unknown(body, CLASSIFY_KEYS, "task classify")
    return labelled_classes.parse_classify(body, max_items), _render_classification


_TASKS = {"embed": _embed, "rank": _rank, "classify": _classify}


def parse(body: dict, max_items: int):
    name = body.get("task")
    if name not in _TASKS:
        raise invalid("task", f"must be one of {', '.join(_TASKS)}, got {name!r}", code="unknown_task")
    return _TASKS[name](body, max_items)
