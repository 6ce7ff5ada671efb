"""OpenCLIP-API (seed 001): `POST /embeddings {"text": "...", "image": "<base64>"}`, either or both.

Answers `{"model", "device", "embeddings": [text vector?, image vector?], "duration"}`: the text's vector
first, then the image's; un-normalised, as the original returned them (`normalize: true` asks otherwise).
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from ..errors import ApiError
from . import fields

OPTIONS = {"normalize"}
FIELDS = {"text", "image"} | OPTIONS


def parse(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    body = fields.with_options(fields.require_object(body, "POST /embeddings"), options, OPTIONS)
    items = []
    if body.get("text") is not None:
        items.append(tasks.Item(fields.text(body["text"], "text", limits)))
    if body.get("image") is not None:
        items.append(tasks.Item(fields.image(body["image"], "image")))
    if not items:
        raise ApiError("send a text, an image, or both", code="missing_field", field="text")
    task = tasks.EmbedTask(tuple(items), normalize=fields.boolean(body, "normalize", False))

    def render(result: tasks.EmbedResult, ctx) -> dict:
        return {"model": ctx.info.name, "device": ctx.info.device.split(":")[0], "embeddings": result.vectors,
                "duration": ctx.duration()}

    return task, render
