"""The HTTP application: `create_app` wires the Pipeline into the route blueprints, and owns what every
request shares: its id, its access-log line and the rendering of errors. Imports no torch.

The pipeline itself (decode → protocol → task → render → encode) is in pipeline.py; the routes in routes/.
"""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import codecs, metrics
from .errors import ApiError, internal_error, render
from .pipeline import Pipeline
from .routes.earlier_systems import earlier_system_routes
from .routes.health import health_routes, json_response
from .routes.inference import inference_routes
from .routes.integrations import openai_routes, weaviate_routes
from .routes.models import model_routes
from .settings import Settings

log = logging.getLogger("clip_sagemaker.access")
REQUEST_ID_HEADER = "X-Request-Id"
# Polled every few seconds by the platform (SageMaker, Weaviate, Kubernetes) and by Prometheus: counted in the
# metrics, kept out of the access log, which they would drown.
QUIET_ROUTES = {"/ping", "/metrics", "/.well-known/live", "/.well-known/ready"}
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def create_app(settings: Settings, slot) -> Flask:
    """`slot` holds the engine (readiness.EngineSlot, or a test double with the same `ready()` / `get()`);
    with `settings.multi_model`, it is the multi_model.ModelRegistry, and the /models routes are served."""
    app = Flask(__name__)
    pipeline = Pipeline(settings, slot)
    app.config["MAX_CONTENT_LENGTH"] = pipeline.largest_body().bytes
    app.before_request(_start_request)
    app.after_request(_log_request)
    _register_error_handlers(app, pipeline)
    blueprints = [health_routes(pipeline), inference_routes(pipeline), earlier_system_routes(pipeline),
                  openai_routes(pipeline), weaviate_routes(pipeline)]
    if settings.multi_model:
        blueprints.append(model_routes(pipeline, slot))
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app


def _start_request() -> None:
    g.started = time.monotonic()
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # A client's id is echoed and logged, so only a short run of safe characters is taken from it.
    g.request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _log_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    duration = time.monotonic() - g.get("started", time.monotonic())
    # The route's pattern, not the path: a scanner's made-up paths must not each become a time series.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.REQUESTS.labels(route=route, status=str(response.status_code), format=g.get("format", "none")).inc()
    metrics.REQUEST_SECONDS.labels(route=route).observe(duration)
    if request.path not in QUIET_ROUTES:
        # One JSON line per request; never image data or texts, which may be large or private.
        log.info("%s", codecs.encode_json({
            "request_id": g.get("request_id"), "method": request.method, "route": request.path,
            "status": response.status_code, "items": g.get("items", 0), "error": g.get("error_code"),
            "duration_ms": round(1000 * duration, 1),
            # A multi-model endpoint's caller's TargetModel (routes/models.py); absent elsewhere.
            **({"target_model": g.target_model} if g.get("target_model") else {}),
        }).decode())
    return response


def _error_response(error: ApiError, status: int) -> Response:
    # Routes whose clients read errors in their own shape (OpenAI's, Weaviate's) set g.error_style.
    return json_response(render(error, g.get("error_style")), status)


def _register_error_handlers(app: Flask, pipeline: Pipeline) -> None:
    def api_error(error: ApiError) -> Response:
        g.error_code = error.code
        return _error_response(error, error.status)

    def http_error(error: HTTPException) -> Response:
        g.error_code = f"http_{error.code}"
        if error.code == 413:
            return api_error(pipeline.largest_body().refuse())
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.code, "http_error")
        return _error_response(ApiError(error.description, code=code), error.code or 500)

    def unhandled_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s id=%s", request.method, request.path, g.get("request_id"))
        g.error_code = "internal_error"
        return _error_response(internal_error(), 500)

    app.register_error_handler(ApiError, api_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unhandled_error)
