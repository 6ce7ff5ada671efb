"""The routes of the tools this container drops into, each answering errors in its clients' shape:

- OpenAI's embeddings API: `POST /v1/embeddings`, `POST /embeddings` with a body that has `input` (where
  OpenAI's clients post when their base URL has no `/v1`; seed 001's body keeps its meaning there),
  `GET /v1/models` and `GET /v1/models/<id>`;
- Weaviate's multi2vec-clip inference API, for Weaviate's `CLIP_INFERENCE_API`: `GET /.well-known/live`,
  `GET /.well-known/ready`, `GET /meta` and `POST /vectorize`.
"""
from __future__ import annotations

import time

from flask import Blueprint, Response, g

from .. import codecs
from ..errors import OPENAI_STYLE, WEAVIATE_STYLE, ApiError, Unavailable
from ..pipeline import Pipeline
from .health import json_response

OPENAI_FORMAT = "openai_embeddings"
OWNER = "clip-sagemaker"


def _use_openai_errors() -> None:
    g.error_style = OPENAI_STYLE


def openai_routes(pipeline: Pipeline) -> Blueprint:
    routes = Blueprint("openai", __name__)
    routes.before_request(_use_openai_errors)  # blueprint hooks run for its own routes only
    created = int(time.time())  # OpenAI's model objects carry a creation time: the server's start

    def model_object(info) -> dict:
        return {"id": info.name, "object": "model", "created": created, "owned_by": OWNER}

    @routes.post("/v1/embeddings")
    def v1_embeddings() -> Response:
        return answer_openai(pipeline, pipeline.json_body())

    @routes.get("/v1/models")
    def models() -> Response:
        return json_response({"object": "list", "data": [model_object(pipeline.slot.get().info)]})

    @routes.get("/v1/models/<path:model_id>")
    def model(model_id: str) -> Response:
        info = pipeline.slot.get().info
        # A model loaded from a directory is named by its path (/opt/ml/model), whose leading slash the URL
        # /v1/models//opt/ml/model loses: Werkzeug redirects it to the path with single slashes.
        if model_id.strip("/") != info.name.strip("/"):
            raise ApiError(f"model {model_id!r} is not served here; this container serves {info.name!r} (any "
                           f"model name is accepted in embeddings requests)", code="model_not_found",
                           field="model", status=404)
        return json_response(model_object(info))

    return routes


def answer_openai(pipeline: Pipeline, body) -> Response:
    _use_openai_errors()
    accept = pipeline.accept((codecs.JSON,))
    return pipeline.answer(pipeline.call(body, pipeline.options(), OPENAI_FORMAT), accept)


def weaviate_routes(pipeline: Pipeline) -> Blueprint:
    routes = Blueprint("weaviate", __name__)
    routes.before_request(lambda: setattr(g, "error_style", WEAVIATE_STYLE))

    @routes.get("/.well-known/live")
    def live() -> Response:
        return Response(status=204)

    @routes.get("/.well-known/ready")
    def ready() -> Response:
        if pipeline.slot.ready():
            return Response(status=204)
        raise Unavailable("not ready: the model is loading, or its model loop has stopped (as GET /ping tells)",
                          code="not_ready")

    @routes.get("/meta")
    def meta() -> Response:
        return json_response(pipeline.slot.get().describe())

    @routes.post("/vectorize")
    def vectorize() -> Response:
        # Weaviate's module sends neither Accept nor Content-Type: both mean JSON.
        accept = pipeline.accept((codecs.JSON,))
        call = pipeline.call(pipeline.json_body(), {}, "weaviate_vectorize")
        return pipeline.answer(call, accept)

    return routes
