"""POST /invocations: every task, in the task format or any earlier system's (detected from the body), as
JSON, JSON Lines, CSV records or one raw image. `invoke` is also a multi-model endpoint's
/models/{name}/invoke (routes/models.py)."""
from __future__ import annotations

from flask import Blueprint, Response, g, request

from .. import codecs, protocols, tasks
from ..inputs import ImageSource
from ..pipeline import Pipeline
from ..protocols import fields, task_format


def inference_routes(pipeline: Pipeline) -> Blueprint:
    routes = Blueprint("inference", __name__)

    @routes.post("/invocations")
    def invocations() -> Response:
        return invoke(pipeline)

    return routes


def invoke(pipeline: Pipeline) -> Response:
    """An invocation on the request's engine (Pipeline.engine): /invocations, and a multi-model
    endpoint's /models/{name}/invoke."""
    kind = codecs.request_kind(request.headers.get("Content-Type"))
    options = pipeline.options()
    if kind in ("jsonlines", "csv"):
        return pipeline.answer_records(kind, options)
    accept = pipeline.accept()
    if kind == "image":
        g.format = "image"
        image = ImageSource(pipeline.body(batch_request=False), "body")
        normalize = fields.boolean(fields.with_options({}, options, {"normalize"}), "normalize", True)
        # Answered like the task format's embed task with that one image.
        call = protocols.Call(tasks.EmbedTask((tasks.Item(image),), normalize), task_format.embed_renderer(0))
    else:
        call = pipeline.call(pipeline.json_body(), options)
    return pipeline.answer(call, accept)
