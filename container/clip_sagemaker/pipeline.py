"""The request pipeline every route runs: read the body within its limit → decode it (codecs) → detect and
validate its format (protocols) → run the task on the engine (tasks) → render the format's answer → encode
it for Accept (codecs). Record-oriented bodies (JSON Lines, CSV) run the same steps per record.

Part of the HTTP layer: it reads Flask's request and imports no torch.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from flask import Response, g, request

from . import codecs, protocols, records, tasks
from .errors import ApiError, internal_error
from .payload_limits import BodyLimit, body_limit, execution_parameters
from .protocols import fields
from .settings import Settings
from .worker_layout import plan_layout

log = logging.getLogger(__name__)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


class Pipeline:
    """`slot` holds the engine (readiness.EngineSlot, or a test double with the same `ready()` / `get()`)."""

    def __init__(self, settings: Settings, slot):
        self.settings = settings
        self.slot = slot
        self.parameters = execution_parameters(settings, plan_layout(settings))
        self.limits = fields.Limits(max_items=settings.max_items, max_text_chars=settings.max_text_chars)
        # Full-request records of one JSON Lines body run side by side, so that the model loop batches them.
        self._records_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="record")

    # ---- reading the request ----------------------------------------------------------------------------------

    def largest_body(self) -> BodyLimit:
        """The largest body any request may have; each kind of request then has its own limit."""
        return body_limit(self.settings, self.parameters, batch_request=True)

    def body(self, batch_request: bool) -> bytes:
        limit = body_limit(self.settings, self.parameters, batch_request)
        if request.content_length is not None and request.content_length > limit.bytes:
            raise limit.refuse()
        body = request.get_data(cache=False)
        if len(body) > limit.bytes:
            raise limit.refuse()
        return body

    def json_body(self) -> Any:
        content_type = request.headers.get("Content-Type")
        if not codecs.is_json(content_type):
            raise ApiError(f"Content-Type {content_type!r} is not supported: this route takes only {codecs.JSON} "
                           f"(POST /invocations also takes JSON Lines, CSV and images)",
                           code="unsupported_media_type", status=415)
        return codecs.decode_request(self.body(batch_request=False), request.headers.get("Content-Type"))

    @staticmethod
    def options() -> dict:
        return codecs.parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))

    @staticmethod
    def accept(producible: tuple[str, ...] = codecs.PRODUCIBLE) -> str:
        return codecs.choose_response_type(request.headers.get("Accept"), producible)

    # ---- answering ----------------------------------------------------------------------------------------------

    def _run(self, call: protocols.Call, started: float) -> tuple[tasks.Result, protocols.Context]:
        engine = self.slot.get()
        result = tasks.run(call.task, engine.for_request(started + self.settings.timeout_s))
        return result, protocols.Context(engine.info, started)

    def answer(self, call: protocols.Call, accept: str) -> Response:
        g.items = tasks.item_count(call.task)
        result, context = self._run(call, g.started)
        if accept == codecs.NPY:
            return Response(codecs.encode_npy(protocols.as_array(result)), mimetype=codecs.NPY)
        payload = call.render(result, context)
        if accept == codecs.JSONLINES:
            return Response(codecs.encode_json_lines([payload]), mimetype=codecs.JSONLINES)
        return Response(codecs.encode_json(payload), mimetype=codecs.JSON)

    def answer_records(self, kind: str, options: Mapping[str, Any]) -> Response:
        """JSON Lines or CSV: one answer per input line, in order; a failing record answers an error line."""
        accept = self.accept((codecs.JSONLINES, codecs.JSON) + ((codecs.CSV,) if kind == "csv" else ()))
        lines = codecs.split_lines(self.body(batch_request=True))
        g.items = len(lines)
        engine = self.slot.get()  # not ready is the whole request's answer (503), not every record's
        parse = records.csv_record if kind == "csv" else records.json_record
        answers = self._answer_each([parse(line, options, self.limits) for line in lines], engine, g.started)
        if accept == codecs.CSV:
            return Response(codecs.encode_csv_embeddings(answers), mimetype=codecs.CSV)
        if accept == codecs.JSON:
            return Response(codecs.encode_json(answers), mimetype=codecs.JSON)
        return Response(codecs.encode_json_lines(answers), mimetype=codecs.JSONLINES)

    def _answer_each(self, batch: list[records.Record], engine, started: float) -> list[Any]:
        """Item records share forward passes (tasks.embed_each); full requests run side by side."""
        answers: list[Any] = [None] * len(batch)
        calls = [(i, r) for i, r in enumerate(batch) if isinstance(r, protocols.Call)]
        pending = [(i, self._records_pool.submit(self._render_or_error, call, started)) for i, call in calls]
        items = [(i, r) for i, r in enumerate(batch) if isinstance(r, records.ItemRecord)]
        encoder = engine.for_request(started + self.settings.timeout_s)
        vectors = tasks.embed_each([r.item for _, r in items], [r.normalize for _, r in items], encoder)
        for (i, record), vector in zip(items, vectors):
            answers[i] = {**record.echo, **(vector.body() if isinstance(vector, ApiError) else {"embedding": vector})}
        for i, record in enumerate(batch):
            if isinstance(record, records.FailedRecord):
                answers[i] = {**record.echo, **record.error.body()}
        for i, future in pending:
            answers[i] = future.result()
        return answers

    def _render_or_error(self, call: protocols.Call, started: float) -> Any:
        try:
            return call.render(*self._run(call, started))
        except ApiError as error:
            return error.body()
        except Exception:  # noqa: BLE001 - a bug on one record must not cost the others their answers
            log.exception("a record failed")
            return internal_error().body()
