"""The earlier systems' own routes, each taking only its own format: OpenCLIP as a Service's POST /embed,
OpenCLIP-API's POST /embeddings, CLIP-API-service's POST /rank and POST /encode.

/embeddings is shared with OpenAI's clients: a body with `input` is theirs (routes/integrations.py)."""
from __future__ import annotations

from flask import Blueprint, Response

from .. import codecs
from ..pipeline import Pipeline
from .integrations import answer_openai

# route → the protocols format it takes
ROUTES = {"/embed": "embed", "/embeddings": "embeddings", "/rank": "rank", "/encode": "encode"}


def earlier_system_routes(pipeline: Pipeline) -> Blueprint:
    routes = Blueprint("earlier_systems", __name__)

    def route_for(format_name: str):
        def handler() -> Response:
            body = pipeline.json_body()
            if format_name == "embeddings" and isinstance(body, dict) and "input" in body:
                return answer_openai(pipeline, body)
            accept = pipeline.accept((codecs.JSON, codecs.NPY))
            call = pipeline.call(body, pipeline.options(), format_name)
            return pipeline.answer(call, accept)
        handler.__name__ = f"earlier_{format_name}"
        return handler

    for path, format_name in ROUTES.items():
        routes.post(path)(route_for(format_name))
    return routes
