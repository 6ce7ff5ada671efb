"""OpenCLIP as a Service (seed 000): `POST /embed {"texts": [...], "normalize": true}` → `{"embeddings"}`."""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from . import fields

OPTIONS = {"normalize"}
FIELDS = {"texts"} | OPTIONS


def parse(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    body = fields.with_options(fields.require_object(body, "POST /embed"), options, OPTIONS)
    task = tasks.EmbedTask(tuple(tasks.Item(t) for t in fields.texts(body, "texts", limits)),
                           normalize=fields.boolean(body, "normalize", True))
    return task, lambda result, ctx: {"embeddings": result.vectors}
