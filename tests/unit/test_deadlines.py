"""Health means "can answer", and deadlines: what /ping says while the model is stuck past the timeout,
and what a request whose deadline passes while it waits gets. The Flask test client over an engine whose
forward passes wait for the test; every wait is bounded. (The real ./serve under load, overload and a
killed worker: tests/integration/test_resilience.py.)"""
from __future__ import annotations

import threading
import time

import numpy as np

from http_helper import post


def close(got, want) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, atol=1e-4)


class _GatedModel:
    """The tiny model, whose forward passes (encode) wait for `gate`; `calls` holds the rows each one got."""

    def __init__(self, model, gate: threading.Event, calls: list[int]):
        self._model, self._gate, self._calls = model, gate, calls

    def encode(self, modality, rows):
        self._calls.append(len(rows))
        if not self._gate.wait(30):
            raise RuntimeError("the test never released the model")
        return self._model.encode(modality, rows)

    def __getattr__(self, name):
        return getattr(self._model, name)


def _blocking_engine(engine, settings, **changes):
    """An engine over the tiny model whose forward passes wait for the returned Event; also returns the
    number of rows each forward pass got."""
    from clip_sagemaker.engine import Engine

    gate = threading.Event()
    calls: list[int] = []
    blocked = Engine(_GatedModel(engine.model, gate, calls), settings.replace(**changes))
    return blocked, gate, calls


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_ping_is_503_while_the_model_is_stuck_past_the_timeout_and_200_again_after(settings, engine, reference):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    stuck, gate, calls = _blocking_engine(engine, settings, timeout_s=0.5, max_queue=1)
    app = create_app(settings.replace(timeout_s=0.5), EngineSlot(stuck))
    client = app.test_client()
    try:
        assert client.get("/ping").status_code == 200

        answered = {}
        first = threading.Thread(target=lambda: answered.update(
            response=post(app.test_client(), "/invocations", {"task": "embed", "texts": ["stuck in the model"]})))
        started = time.monotonic()
        first.start()
        first.join(timeout=10)
        assert error_code_of(answered["response"], 503) == "timeout"
        assert 0.4 < time.monotonic() - started < 5  # at its deadline, not when the model comes back

        assert _wait_for(lambda: client.get("/ping").status_code == 503, 3)
        assert client.get("/").status_code == 503  # seed 000's health check says the same
        # The next request waits in the queue behind the stuck batch, and gets its own timeout.
        waiting = post(client, "/invocations", {"task": "embed", "texts": ["waits behind it"]})
        assert error_code_of(waiting, 503) == "timeout"
        assert client.get("/ping").status_code == 503

        gate.set()
        assert _wait_for(lambda: client.get("/ping").status_code == 200, 5)
        # The loop skips the timed-out request's job, which frees its queue slot (MAX_QUEUE=1 here) ...
        assert _wait_for(lambda: stuck.loop._queue.qsize() == 0, 5)
        # ... so a later request is answered, and right.
        response = post(client, "/invocations", {"task": "embed", "texts": ["a photo of a cat"]})
        assert response.status_code == 200, response.get_data(as_text=True)
        close(response.get_json()["text_embeddings"], reference.texts(["a photo of a cat"]))
        assert calls == [1, 1]  # the stuck text, then the cat: the one that timed out in the queue never ran
    finally:
        gate.set()
        stuck.stop()


def error_code_of(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    return response.get_json()["error"]["code"]


def test_a_request_whose_deadline_passes_while_waiting_is_cancelled_and_never_encoded(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    blocked, gate, calls = _blocking_engine(engine, settings, timeout_s=30)
    try:
        # Our own job occupies the model, so that the request's job can only wait in the queue.
        occupying = blocked.loop.submit("text", list(engine.model.tokenize(["occupying the model"])))
        assert _wait_for(lambda: calls == [1], 5)
        client = create_app(settings.replace(timeout_s=0.001), EngineSlot(blocked)).test_client()
        started = time.monotonic()
        response = post(client, "/invocations", {"task": "embed", "texts": ["this text is never encoded"]})
        assert error_code_of(response, 503) == "timeout"
        assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in response.get_json()["error"]["message"]
        assert time.monotonic() - started < 2

        gate.set()
        occupying[0].result(timeout=10)
        # A job queued after the cancelled one: once it is done, the loop has gone past the cancelled job.
        blocked.loop.submit("text", list(engine.model.tokenize(["after it"])))[0].result(timeout=10)
        assert calls == [1, 1]  # the occupying job and the one after it; the timed-out request's never ran
    finally:
        gate.set()
        blocked.stop()
