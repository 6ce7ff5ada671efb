"""A multi-model endpoint's routes (SAGEMAKER_MULTI_MODEL=true), SageMaker's custom-container contract:
POST /models (load), GET /models (list, paged), GET /models/{name}, DELETE /models/{name} (unload) and
POST /models/{name}/invoke, which answers exactly what /invocations answers, on that model.

The registry (multi_model.py) does the work; SageMaker passes the caller's TargetModel in
X-Amzn-SageMaker-Target-Model, which is logged (on loads, and as `target_model` in the access log).
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, g, request

from ..multi_model import MAX_PAGE, LoadedModel, ModelRegistry
from ..pipeline import Pipeline
from ..protocols import fields
from ..readiness import EngineSlot
from ..settings import MB
from .health import json_response
from .inference import invoke

log = logging.getLogger(__name__)
TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"


def _listed(model: LoadedModel) -> dict:
    return {"modelName": model.name, "modelUrl": model.url}


def model_routes(pipeline: Pipeline, registry: ModelRegistry) -> Blueprint:
    routes = Blueprint("models", __name__)

    @routes.post("/models")
    def load() -> Response:
        name, url = fields.model_load(pipeline.json_body())
        log.info("loading model %r from %s (TargetModel %s)", name, url, request.headers.get(TARGET_MODEL_HEADER))
        model = registry.load(name, url)
        return json_response({"status": f"model {name!r} loaded", **_listed(model)})

    @routes.get("/models")
    def list_models() -> Response:
        # MMS's parameters: `limit` (at most 100; more is taken as 100) and the `next_page_token` it answered.
        limit = min(MAX_PAGE, fields.query_integer(request.args, "limit", MAX_PAGE, minimum=1))
        start = fields.query_integer(request.args, "next_page_token", 0, minimum=0)
        models, next_start = registry.page(limit, start)
        answer = {"models": [_listed(m) for m in models]}
        if next_start is not None:
            answer["nextPageToken"] = str(next_start)
        return json_response(answer)

    @routes.get("/models/<name>")
    def describe(name: str) -> Response:
        model = registry.find(name)
        return json_response({**_listed(model), "estimatedMemoryMb": model.estimate_bytes // MB,
                              "info": model.slot.get().describe()})

    @routes.delete("/models/<name>")
    def unload(name: str) -> Response:
        registry.unload(name)
        return json_response({"status": f"model {name!r} unloaded", "modelName": name})

    @routes.post("/models/<name>/invoke")
    def invoke_model(name: str) -> Response:
        g.target_model = request.headers.get(TARGET_MODEL_HEADER)
        # The engine itself, not its slot: unloaded meanwhile, the request's work is refused with a 503
        # `model_unloaded` rather than waiting for a loop that is gone.
        g.engine_slot = EngineSlot(registry.find(name).slot.get())
        return invoke(pipeline)

    return routes
