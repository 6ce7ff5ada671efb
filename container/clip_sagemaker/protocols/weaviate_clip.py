"""Weaviate's multi2vec-clip inference API: `POST /vectorize {"texts": [...], "images": ["<base64>", ...]}`
→ `{"textVectors": [[...]], "imageVectors": [[...]]}`, L2-normalised.

Weaviate's module sends both lists on every call (a Go nil slice arrives as null: read as empty) and a
text property's value as it is, an empty string included: CLIP embeds that as it embeds any text.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from . import fields

KEYS = {"texts", "images"}


def parse(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    body = fields.require_object(body, "POST /vectorize")
    fields.reject_unknown(body, KEYS, "POST /vectorize")
    texts = fields.texts(body, "texts", limits, required=False, allow_empty=True)
    images = fields.images(body, "images", limits, required=False)
    fields.check_total(texts, images, limits)
    task = tasks.EmbedTask(tuple(tasks.Item(v) for v in (*texts, *images)), normalize=True)

    def render(result: tasks.EmbedResult, ctx) -> dict:
        return {"textVectors": result.vectors[:len(texts)], "imageVectors": result.vectors[len(texts):]}

    return task, render
