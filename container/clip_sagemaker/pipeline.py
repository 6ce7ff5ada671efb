"""The request pipeline every route runs: read the body within its limit → decode it (codecs) → detect and
validate its format (protocols) → run the task on the engine (tasks) → render the format's answer → encode
it for Accept (codecs). Record-oriented bodies (JSON Lines, CSV) run the same steps per record.

Part of the HTTP layer: it reads Flask's request and imports no torch.
"""
from __future__ import annotations

import itertools
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Optional

from flask import Response, g, request

from . import codecs, protocols, records, tasks
from .errors import ApiError, internal_error
from .payload_limits import BodyLimit, body_limit, execution_parameters
from .protocols import fields
from .settings import Settings
from .worker_layout import plan_layout

log = logging.getLogger(__name__)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# Records answered together: enough to fill several forward passes, few enough that a chunk's records and
# answers stay a few MB whatever the body's size.
RECORDS_PER_CHUNK = 256
# Bodies up to this size are held in memory, larger ones in a temporary file while they are answered.
SPOOL_BYTES = 8 * 1024 * 1024
BLOCK_BYTES = 1024 * 1024


def _chunks(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    iterator = iter(lines)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class Pipeline:
    """`slot` holds the engine (readiness.EngineSlot, or a test double with the same `ready()` / `get()`)."""

    def __init__(self, settings: Settings, slot):
        self.settings = settings
        self.slot = slot
        self.parameters = execution_parameters(settings, plan_layout(settings))
        self.limits = fields.Limits(max_items=settings.max_items, max_text_chars=settings.max_text_chars,
                                    max_classify_prompts=settings.max_classify_prompts)
        # Full-request records of one JSON Lines body run side by side, so that the model loop batches them.
        self._records_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="record")

    # ---- reading the request ----------------------------------------------------------------------------------

    def largest_body(self) -> BodyLimit:
        """The largest body any request may have; each kind of request then has its own limit."""
        return body_limit(self.settings, self.parameters, batch_request=True)

    def body(self, batch_request: bool) -> bytes:
        limit = body_limit(self.settings, self.parameters, batch_request)
        limit.check_announced(request.content_length)
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

    def call(self, body: Any, options: Mapping[str, Any], format_name: Optional[str] = None) -> protocols.Call:
        """The request in its format: the route's own, or the one detected from the body (noted for the
        metrics before parsing, so that a refused body is counted under its format too)."""
        g.format = format_name or protocols.format_of(body)
        return protocols.parse_as(g.format, body, options, self.limits)

    @staticmethod
    def options() -> dict:
        return codecs.parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))

    @staticmethod
    def accept(producible: tuple[str, ...] = codecs.PRODUCIBLE) -> str:
        return codecs.choose_response_type(request.headers.get("Accept"), producible)

    # ---- answering ----------------------------------------------------------------------------------------------

    def engine(self):
        """The engine this request runs on: its model's (g.engine_slot, set by a multi-model endpoint's
        invoke route), else the one the pipeline was built with."""
        return g.get("engine_slot", self.slot).get()

    def _run(self, call: protocols.Call, started: float, engine) -> tuple[tasks.Result, protocols.Context]:
        call.check(engine.info)
        result = tasks.run(call.task, engine.for_request(started + self.settings.timeout_s))
        return result, protocols.Context(engine.info, started)

    def answer(self, call: protocols.Call, accept: str) -> Response:
        g.items = tasks.item_count(call.task)
        result, context = self._run(call, g.started, self.engine())
        if accept == codecs.NPY:
            return Response(codecs.encode_npy(protocols.as_array(result)), mimetype=codecs.NPY)
        payload = call.render(result, context)
        if accept == codecs.JSONLINES:
            return Response(codecs.encode_json_lines([payload]), mimetype=codecs.JSONLINES)
        return Response(codecs.encode_json(payload), mimetype=codecs.JSON)

    def answer_records(self, kind: str, options: Mapping[str, Any]) -> Response:
        """JSON Lines or CSV: one answer per input line, in order; a failing record answers an error line.

        The body is spooled whole (within its limit), then read back, answered and sent a chunk of records at a
        time (a streamed response), so that an asynchronous endpoint's 1 GB body costs a chunk's worth of
        memory, not several times its size. Every whole-request failure (too large, not acceptable, not ready)
        is decided before the first byte is sent; after it, failures are the failing records' own lines."""
        accept = self.accept((codecs.JSONLINES, codecs.JSON) + ((codecs.CSV,) if kind == "csv" else ()))
        g.format = kind
        engine = self.engine()  # not ready is the whole request's answer (503), not every record's
        body = self._spooled_body()
        parse = records.csv_record if kind == "csv" else records.json_record
        g.items = None  # counted only as the answer streams: logged at its end
        chunks = self._answer_chunks(body, lambda line: parse(line, options, self.limits), engine, g.started,
                                     g.request_id)
        return Response(codecs.encode_answer_stream(chunks, accept), mimetype=accept)

    def _answer_chunks(self, body: BinaryIO, parse: Callable[[bytes], records.Record], engine, started: float,
                       request_id: str) -> Iterator[list[Any]]:
        """The answers of each chunk of records, in order; the body is closed when the answer ends."""
        count = 0
        with body:
            for chunk in _chunks(codecs.iter_lines(body.read, BLOCK_BYTES), RECORDS_PER_CHUNK):
                count += len(chunk)
                try:
                    answered = self._answer_each([parse(line) for line in chunk], engine, started)
                except Exception:  # noqa: BLE001 - the status is sent: a bug must still leave one line per record
                    log.exception("request %s: a chunk of records failed", request_id)
                    answered = [internal_error().body()] * len(chunk)
                yield answered
        log.info("request %s: %d records answered in %.1f s", request_id, count, time.monotonic() - started)

    def _spooled_body(self) -> BinaryIO:
        """A batch request's whole body, read within its limit before anything is answered.

        Read whole first, so that a body past the limit is a 413 even without a Content-Length, and so that
        a client that sends all of its body before it reads the answer (most do) never waits on an answer
        that waits on the rest of the body; spooled to a temporary file past SPOOL_BYTES, so that memory
        holds only the chunk being answered."""
        limit = self.largest_body()
        limit.check_announced(request.content_length)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        while block := request.stream.read(BLOCK_BYTES):
            spool.write(block)
            if spool.tell() > limit.bytes:
                spool.close()
                raise limit.refuse()
        spool.seek(0)
        return spool

    def _answer_each(self, batch: list[records.Record], engine, started: float) -> list[Any]:
        """Item records share forward passes (tasks.embed_each); full requests run side by side."""
        answers: list[Any] = [None] * len(batch)
        calls = [(i, r) for i, r in enumerate(batch) if isinstance(r, protocols.Call)]
        pending = [(i, self._records_pool.submit(self._render_or_error, call, started, engine)) for i, call in calls]
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

    def _render_or_error(self, call: protocols.Call, started: float, engine) -> Any:
        try:
            return call.render(*self._run(call, started, engine))
        except ApiError as error:
            return error.body()
        except Exception:  # noqa: BLE001 - a bug on one record must not cost the others their answers
            log.exception("a record failed")
            return internal_error().body()
