"""The task format, this container's own /invocations format: a required `task` field names one of the three tasks.

    {"task": "embed", "texts": [...], "images": [...], "normalize": true}
    {"task": "rank", "queries": [{"image": ...} | {"text": ...}], "candidates": [...], "top_k": 5}
    {"task": "classify", "images": [...], "classes": [[label, id], ...] | [label, ...], "prompt_template": ...,
     "top_k": 3, "margin": 0.02, "logit_scale": 100}

Unknown fields are refused, so that a misspelt option (`normalise`) is an error instead of silently ignored.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from ..errors import ApiError, invalid
from . import fields, sagemaker_clip

EMBED_OPTIONS = {"normalize"}
RANK_OPTIONS = {"top_k"}
FIELDS = {"task", "texts", "images", "queries", "candidates"} | EMBED_OPTIONS | RANK_OPTIONS | sagemaker_clip.KEYS


def _items(body: dict, key: str, limits: fields.Limits) -> tuple[tasks.Item, ...]:
    values = fields.items_list(body, key, limits)
    return tuple(fields.item_object(v, f"{key}[{i}]", limits) for i, v in enumerate(values))


def _embed(body: dict, options: Mapping[str, Any], limits: fields.Limits):
    fields.reject_unknown(body, EMBED_OPTIONS | {"task", "texts", "images"}, "task embed")
    body = fields.with_options(body, options, EMBED_OPTIONS)
    texts = fields.texts(body, "texts", limits, required=False)
    images = fields.images(body, "images", limits, required=False)
    if not texts and not images:
        raise ApiError("task embed needs at least one of texts or images", code="missing_field", field="texts")
    fields.check_total(texts, images, limits)
    task = tasks.EmbedTask(tuple(tasks.Item(v) for v in (*texts, *images)),
                           normalize=fields.boolean(body, "normalize", True))
    return task, embed_renderer(len(texts))


def embed_renderer(n_texts: int):
    """The embed answer for a task whose first `n_texts` items are texts and the rest images."""
    def render(result: tasks.EmbedResult, ctx) -> dict:
        return {"task": "embed", "model": ctx.info.name, "dim": ctx.info.embed_dim,
                "normalized": result.normalized, "text_embeddings": result.vectors[:n_texts],
                "image_embeddings": result.vectors[n_texts:]}
    return render


def _rank(body: dict, options: Mapping[str, Any], limits: fields.Limits):
    fields.reject_unknown(body, RANK_OPTIONS | {"task", "queries", "candidates"}, "task rank")
    body = fields.with_options(body, options, RANK_OPTIONS)
    task = tasks.RankTask(queries=_items(body, "queries", limits),
                          candidates=_items(body, "candidates", limits))
    top_k = fields.integer(body, "top_k", len(task.candidates), 1)

    def render(result: tasks.RankResult, ctx) -> dict:
        order = (-result.probabilities).argsort(axis=1, kind="stable")[:, :top_k]
        return {"task": "rank", "scoring": result.scoring,
                "cosine_similarities": result.cosine_similarities, "probabilities": result.probabilities,
                "rankings": order}

    return task, render


def _render_classification(result: list[tasks.Classification], ctx) -> dict:
    return {"task": "classify", "results": [
        {"label": c.top_labels[0], "classification": c.classification, "confidence": c.confidence,
         "selected": c.selected, "prompts": sagemaker_clip.prompts_triple(c)} for c in result]}


def _classify(body: dict, options: Mapping[str, Any], limits: fields.Limits):
    fields.reject_unknown(body, sagemaker_clip.KEYS | {"task"}, "task classify")
    return sagemaker_clip.parse_classify(body, options, limits), _render_classification


_TASKS = {"embed": _embed, "rank": _rank, "classify": _classify}


def parse(body: dict, options: Mapping[str, Any], limits: fields.Limits):
    name = body.get("task")
    if not isinstance(name, str) or name not in _TASKS:  # a list or object is unhashable: check the type first
        raise invalid("task", f"must be one of {', '.join(_TASKS)}, got {name!r}", code="unknown_task")
    return _TASKS[name](body, options, limits)
