"""The HTTP layer: routes, the request pipeline and error rendering. Imports no torch.

Every request flows one way: decode the body (codecs) → detect its format and validate it (protocols) →
run the task on the engine (tasks, engine) → render the format's answer → encode it for Accept (codecs).
"""
from __future__ import annotations

import importlib.resources
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import batch, codecs, protocols, tasks
from .errors import ApiError, internal_error
from .inputs import ImageSource
from .protocols import fields, general
from .resources import plan_layout
from .settings import MB, Settings

log = logging.getLogger("clip_sagemaker.access")
REQUEST_ID_HEADER = "X-Request-Id"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
OPENAPI_FILE = "openapi.json"  # the OpenAPI 3.1 description of every route, next to this module


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(codecs.encode_json(payload), status=status, mimetype=codecs.JSON)


def create_app(settings: Settings, slot) -> Flask:
    """`slot` holds the engine (readiness.EngineSlot, or a test double with the same `ready()` / `get()`)."""
    app = Flask(__name__)
    parameters = batch.execution_parameters(settings, plan_layout(settings))
    # The largest body any request may have; each route then holds its own kind to its own limit.
    limits = fields.Limits(max_items=settings.max_items, max_text_chars=settings.max_text_chars)
    app.config["MAX_CONTENT_LENGTH"] = batch.body_limit(settings, parameters, batch_request=True)[0]
    # Records of one JSON Lines request run side by side, so that the model loop batches them together.
    records_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="record")
    openapi_document = importlib.resources.files(__package__).joinpath(OPENAPI_FILE).read_bytes()

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
            # One JSON line per request; never image data or texts, which may be large or private.
            log.info("%s", codecs.encode_json({
                "request_id": g.get("request_id"), "method": request.method, "route": request.path,
                "status": response.status_code, "items": g.get("items", 0),
                "error": g.get("error_code"),
                "duration_ms": round(1000 * (time.monotonic() - g.get("started", time.monotonic())), 1),
            }).decode())
        return response

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        g.error_code = error.code
        return _json_response(error.body(), error.status)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        g.error_code = f"http_{error.code}"
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.code, "http_error")
        message = error.description
        if error.code == 413:
            return api_error(_too_large(*batch.body_limit(settings, parameters, batch_request=True)))
        return _json_response(ApiError(message, code=code).body(), error.code or 500)

    @app.errorhandler(Exception)
    def unhandled_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s id=%s", request.method, request.path, g.get("request_id"))
        g.error_code = "internal_error"
        return _json_response(internal_error().body(), 500)

    # ---- health and model information -------------------------------------------------------------------

    @app.get("/ping")
    def ping() -> Response:
        # No inference here: SageMaker times a ping out after 2 s, also while a batch is running.
        if slot.ready():
            return _json_response({"status": "ready"})
        return _json_response({"status": "unavailable"}, 503)

    @app.get("/")
    def root() -> Response:
        """Seed 000's health check."""
        if slot.ready():
            return _json_response({"status": "ok"})
        return _json_response({"status": "unavailable"}, 503)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        """Batch Transform asks this once before the first invocation; the job's own settings win."""
        return _json_response(parameters.as_json())

    @app.get("/info")
    def info() -> Response:
        engine = slot.get()
        model = engine.info
        return _json_response({
            "model": model.name, "source": model.source, "embed_dim": model.embed_dim, "device": model.device,
            "precision": model.precision, "image_size": list(model.image_size),
            "context_length": model.context_length, "logit_scale": engine.model.logit_scale,
            "logit_bias": engine.model.logit_bias,
            "scoring": "softmax" if engine.model.logit_bias is None else "sigmoid",
            "max_batch_size": engine.loop.max_batch_size, "text_cache": engine.text_cache.stats(),
            "trimmed_text": engine.model.text_tower is not None})

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(openapi_document, mimetype=codecs.JSON)

    # ---- inference ----------------------------------------------------------------------------------------

    @app.post("/invocations")
    def invocations() -> Response:
        kind = codecs.request_kind(request.headers.get("Content-Type"))
        options = codecs.parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        if kind in ("jsonlines", "csv"):
            return _records(kind, options)
        accept = codecs.choose_response_type(request.headers.get("Accept"))
        if kind == "image":
            image = ImageSource(_body(batch_request=False), "body")
            normalize = fields.boolean(fields.with_options({}, options, {"normalize"}), "normalize", True)
            # Answered like the general format's embed task with that one image.
            call = protocols.Call(tasks.EmbedTask((tasks.Item(image),), normalize), general.embed_renderer(0))
        else:
            call = protocols.detect(_json_body(), options, limits)
        return _answer(call, accept)

    def seed_route(format_name: str):
        def handler() -> Response:
            accept = codecs.choose_response_type(request.headers.get("Accept"), (codecs.JSON, codecs.NPY))
            options = codecs.parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
            return _answer(protocols.parse_as(format_name, _json_body(), options, limits), accept)
        handler.__name__ = f"seed_{format_name}"
        return handler

    app.post("/embed")(seed_route("embed"))            # seed 000
    app.post("/embeddings")(seed_route("embeddings"))  # seed 001
    app.post("/rank")(seed_route("rank"))              # seed 002
    app.post("/encode")(seed_route("encode"))          # seed 002

    # ---- the pipeline -------------------------------------------------------------------------------------

    def _json_body() -> Any:
        if codecs.request_kind(request.headers.get("Content-Type")) != "json":
            raise ApiError(f"this route takes {codecs.JSON}", code="unsupported_media_type", status=415)
        return codecs.decode_request(_body(batch_request=False), request.headers.get("Content-Type"))

    def _run(call: protocols.Call) -> tuple[tasks.Result, protocols.Context]:
        g.items = tasks.item_count(call.task)
        engine = slot.get()
        started = g.started
        result = tasks.run(call.task, engine.for_request(started + settings.timeout_s))
        return result, protocols.Context(engine.info, started)

    def _answer(call: protocols.Call, accept: str) -> Response:
        result, context = _run(call)
        if accept == codecs.NPY:
            return Response(codecs.encode_npy(protocols.as_array(result)), mimetype=codecs.NPY)
        payload = call.render(result, context)
        if accept == codecs.JSONLINES:
            return Response(codecs.encode_json_lines([payload]), mimetype=codecs.JSONLINES)
        return Response(codecs.encode_json(payload), mimetype=codecs.JSON)

    def _records(kind: str, options: dict) -> Response:
        """JSON Lines or CSV: one answer per input line, in order; a failing record answers an error line."""
        producible = (codecs.JSONLINES, codecs.JSON) + ((codecs.CSV,) if kind == "csv" else ())
        accept = codecs.choose_response_type(request.headers.get("Accept"), producible)
        lines = codecs.split_lines(_body(batch_request=True))
        g.items = len(lines)
        engine = slot.get()  # not ready is the whole request's answer (503), not every record's
        if kind == "csv":
            records = [batch.csv_record(line, options, limits) for line in lines]
        else:
            records = [batch.json_record(line, options, limits) for line in lines]
        answers = batch.answer_records(records, engine, g.started, g.started + settings.timeout_s, records_pool)
        if accept == codecs.CSV:
            return Response(codecs.encode_csv_embeddings(answers), mimetype=codecs.CSV)
        if accept == codecs.JSON:
            return Response(codecs.encode_json(answers), mimetype=codecs.JSON)
        return Response(codecs.encode_json_lines(answers), mimetype=codecs.JSONLINES)

    def _body(batch_request: bool) -> bytes:
        limit, setting = batch.body_limit(settings, parameters, batch_request)
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit, setting)
        body = request.get_data(cache=False)
        if len(body) > limit:
            raise _too_large(limit, setting)
        return body

    return app


def _too_large(limit: int, setting: str) -> ApiError:
    return ApiError(f"the request body is larger than {limit / MB:g} MB, the limit of {setting}",
                    code="body_too_large", status=413)
