"""Health, model information and metrics: /ping, /, /execution-parameters, /info, /openapi.json and /metrics.

Nothing here runs inference: SageMaker times a ping out after 2 s, also while a batch is running.
"""
from __future__ import annotations

import importlib.resources

from flask import Blueprint, Response, request

from .. import codecs, metrics
from ..pipeline import Pipeline

OPENAPI_FILE = "openapi.json"  # the OpenAPI 3.1 description of every route, in the package


def json_response(payload, status: int = 200) -> Response:
    return Response(codecs.encode_json(payload), status=status, mimetype=codecs.JSON)


def health_routes(pipeline: Pipeline) -> Blueprint:
    routes = Blueprint("health", __name__)
    openapi_document = importlib.resources.files("clip_sagemaker").joinpath(OPENAPI_FILE).read_bytes()
    slot = pipeline.slot

    @routes.get("/ping")
    def ping() -> Response:
        if slot.ready():
            return json_response({"status": "ready"})
        return json_response({"status": "unavailable"}, 503)

    @routes.get("/")
    def root() -> Response:
        """OpenCLIP as a Service's health check."""
        if slot.ready():
            return json_response({"status": "ok"})
        return json_response({"status": "unavailable"}, 503)

    @routes.get("/execution-parameters")
    def execution_parameters() -> Response:
        """Batch Transform asks this once before the first invocation; the job's own settings win."""
        return json_response(pipeline.parameters.as_json())

    @routes.get("/info")
    def info() -> Response:
        return json_response(slot.get().describe())

    @routes.get("/openapi.json")
    def openapi() -> Response:
        return Response(openapi_document, mimetype=codecs.JSON)

    @routes.get("/metrics")
    def prometheus_metrics() -> Response:
        """Every worker's counts (multiprocess mode), also while the model loads."""
        body, content_type = metrics.exposition(pipeline.settings.metrics_dir, request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    return routes
