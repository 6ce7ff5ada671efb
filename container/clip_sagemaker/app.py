"""The HTTP layer: routes, the request pipeline and error rendering. Imports no torch.

Every request to /invocations flows one way: decode the body (codecs) → detect its format and validate it
(protocols) → run the task on the engine (tasks, engine) → render the format's answer → encode (codecs).
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any, Optional

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import codecs, protocols, tasks
from .errors import ApiError
from .settings import Settings

log = logging.getLogger("clip_sagemaker.access")
REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(codecs.encode_json(payload), status=status, mimetype=codecs.JSON)


def create_app(settings: Settings, slot) -> Flask:
    """`slot` holds the engine (engine.EngineSlot, or a test double with the same `ready()` / `get()`)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    @app.before_request
    def start_timer() -> None:
        g.started = time.monotonic()
        given = request.headers.get(REQUEST_ID_HEADER, "")
        # A client's id is echoed and logged, so only a short run of safe characters is taken from it.
        g.request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def log_request(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        if request.path != "/ping":
            log.info("%s %s %d %.1fms id=%s", request.method, request.path, response.status_code,
                     1000 * (time.monotonic() - g.get("started", time.monotonic())), g.get("request_id"))
        return response

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return _json_response(error.body(), error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.code, "http_error")
        message = error.description
        if error.code == 413:
            code = "body_too_large"
            message = (f"the request body is larger than {settings.max_body_bytes // (1024 * 1024)} MB "
                       f"(MAX_BODY_MB)")
        return _json_response(ApiError(message, code=code).body(), error.code or 500)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s id=%s", request.method, request.path, g.get("request_id"))
        body = ApiError("internal server error; the request id in X-Request-Id identifies it in the logs",
                        code="internal_error").body()
        return _json_response(body, 500)

    @app.get("/ping")
    def ping() -> Response:
        # No inference here: SageMaker times a ping out after 2 s, also while a batch is running.
        if slot.ready():
            return _json_response({"status": "ready"})
        return _json_response({"status": "unavailable"}, 503)

    @app.post("/invocations")
    def invocations() -> Response:
        response_type = codecs.choose_response_type(request.headers.get("Accept"))
        body = codecs.decode_request(request.get_data(cache=False), request.headers.get("Content-Type"))
        call = protocols.detect(body, settings.max_items)
        payload = run_call(call)
        return Response(codecs.encode_json(payload), mimetype=response_type)

    def run_call(call: protocols.Call) -> Any:
        engine = slot.get()
        encoder = engine.for_request(g.started + settings.timeout_s)
        return call.render(tasks.run(call.task, encoder), engine.info)

    return app
