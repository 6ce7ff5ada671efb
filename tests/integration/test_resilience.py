"""Overload and faults: every request gets a clear answer, nothing is lost, nobody gets another's answer.

The real ./serve on 127.0.0.1 under a mixed load of good and bad requests, under a burst that overfills its
queue, and with its worker killed. (What /ping says while the model is stuck, and what a request whose
deadline passes gets, are unit tests: tests/unit/test_deadlines.py.) Every loop here is bounded in count
and in time.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import threading
import time
import uuid

import numpy as np
import pytest
import requests

from http_helper import get, post
from images import b64, pattern
from server import Server

TEXTS = [f"a photo of thing number {i}" for i in range(40)]
IMAGES = [pattern(seed) for seed in range(100, 116)]
IMAGE_B64 = [b64(image) for image in IMAGES]
LABELS = ["cat", "dog", "red square", "car", "tree", "a bowl of soup"]
CLASSES = [[label, int(i == 2)] for i, label in enumerate(LABELS)]


@pytest.fixture(scope="module")
def expected(reference):
    """open_clip's own answers for every input the load uses, computed once."""
    return {"texts": dict(zip(TEXTS, reference.texts(TEXTS))),
            "images": reference.images(IMAGES),
            "classify": reference.classify_probabilities(IMAGES, LABELS)}


@pytest.fixture(scope="module")
def server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir), "SERVER_THREADS": "16"})


def close(got, want) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, atol=1e-4)


def error_code(response) -> str:
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error["code"]


# ---- a mixed load of good and bad requests --------------------------------------------------------------

def _good_and_bad_requests(expected, count: int, seed: int) -> list[tuple[str, dict, callable]]:
    """(kind, keyword arguments for requests.post, a check of the answer) for each request, shuffled."""
    rng = random.Random(seed)

    def embed_texts():
        chosen = rng.sample(TEXTS, 2)

        def check(r):
            assert r.status_code == 200, r.text[:300]
            close(r.json()["text_embeddings"], [expected["texts"][t] for t in chosen])
        return {"json": {"task": "embed", "texts": chosen}}, check

    def embed_image():
        i = rng.randrange(len(IMAGES))

        def check(r):
            assert r.status_code == 200, r.text[:300]
            close(r.json()["image_embeddings"], expected["images"][i:i + 1])
        return {"json": {"task": "embed", "images": [IMAGE_B64[i]]}}, check

    def seed003():
        i = rng.randrange(len(IMAGES))

        def check(r):
            assert r.status_code == 200, r.text[:300]
            answer, probabilities = r.json()[0], expected["classify"][i]
            close(answer["prompts"][2], np.sort(probabilities)[::-1][:3])
            close(answer["confidence"], probabilities.max())
        return {"json": {"images": [IMAGE_B64[i]], "classes": CLASSES}}, check

    def json_lines():
        records = [("t", rng.choice(TEXTS)), ("i", rng.randrange(len(IMAGES))), ("t", rng.choice(TEXTS))]
        ids = [f"r-{uuid.uuid4().hex[:8]}" for _ in records]
        lines = [{"id": rid, "text": v} if kind == "t" else {"id": rid, "image": IMAGE_B64[v]}
                 for rid, (kind, v) in zip(ids, records)]

        def check(r):
            assert r.status_code == 200, r.text[:300]
            answers = [json.loads(line) for line in r.text.split("\n")]
            assert [a["id"] for a in answers] == ids
            for answer, (kind, v) in zip(answers, records):
                close(answer["embedding"], expected["texts"][v] if kind == "t" else expected["images"][v])
        body = "\n".join(json.dumps(line) for line in lines).encode()
        return {"data": body, "headers": {"Content-Type": "application/jsonlines"}}, check

    def bad(status, code, **kwargs):
        def check(r):
            assert r.status_code == status, r.text[:300]
            assert error_code(r) == code
        return kwargs, check

    makers = {
        "embed_texts": embed_texts, "embed_image": embed_image, "seed003": seed003, "json_lines": json_lines,
        "malformed_json": lambda: bad(400, "malformed_json", data=b'{"task": "embed", "texts": [',
                                      headers={"Content-Type": "application/json"}),
        "undecodable_image": lambda: bad(400, "invalid_image", json={"task": "embed", "images": ["aGVsbG8gd29ybGQ="]}),
        "unknown_task": lambda: bad(400, "unknown_task", json={"task": "translate", "texts": ["a"]}),
        "empty_texts": lambda: bad(400, "empty_list", json={"texts": []}),
        "wrong_content_type": lambda: bad(415, "unsupported_media_type", data=b"a cat",
                                          headers={"Content-Type": "text/plain"}),
    }
    kinds = ["embed_texts", "embed_image", "seed003", "json_lines"] * 2 + list(makers)[4:]
    out = []
    for _ in range(count):
        kind = rng.choice(kinds)
        kwargs, check = makers[kind]()
        out.append((kind, kwargs, check))
    return out


def _send_all(url: str, work: list, threads: int, deadline_s: float) -> list:
    """Sends every request from `threads` client threads (one keep-alive session each); one outcome each:
    (kind, request id, status or None, seconds, error message or None)."""
    local = threading.local()
    stop_at = time.monotonic() + deadline_s

    def one(item):
        kind, kwargs, check = item
        if time.monotonic() > stop_at:
            return kind, None, None, 0.0, "not sent: the test ran out of time"
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        request_id = uuid.uuid4().hex
        headers = {**kwargs.get("headers", {}), "X-Request-Id": request_id}
        started = time.monotonic()
        try:
            response = session.post(f"{url}/invocations", timeout=30,
                                    **{**kwargs, "headers": headers})
        except requests.RequestException as exc:
            return kind, request_id, None, time.monotonic() - started, f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        try:
            check(response)
        except AssertionError as exc:
            return kind, request_id, response.status_code, elapsed, f"wrong answer: {exc}"
        return kind, request_id, response.status_code, elapsed, None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, work, timeout=deadline_s + 60))


def _logged(server: Server, request_ids: set[str], offset: int, timeout: float = 10) -> dict[str, list[int]]:
    """Statuses the access log holds for these request ids (waits, bounded, for the last lines to land)."""
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, list[int]] = {}
        for line in server.requests_logged(offset):
            if line["request_id"] in request_ids:
                seen.setdefault(line["request_id"], []).append(line["status"])
        if len(seen) == len(request_ids) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def test_a_mixed_load_of_good_and_bad_requests_gets_every_answer_right(server, expected):
    work = _good_and_bad_requests(expected, count=600, seed=11)
    offset = len(server.log())
    started = time.monotonic()
    outcomes = _send_all(server.url, work, threads=32, deadline_s=120)
    took = time.monotonic() - started

    failures = [o for o in outcomes if o[4] is not None]
    assert not failures, f"{len(failures)} of {len(outcomes)} failed, e.g. {failures[:5]}"
    assert all(status < 500 for _, _, status, _, _ in outcomes)
    kinds = {kind for kind, *_ in outcomes}
    assert kinds == {"embed_texts", "embed_image", "seed003", "json_lines", "malformed_json", "undecodable_image",
                     "unknown_task", "empty_texts", "wrong_content_type"}
    # Nothing lost on the server's side either: every request was logged once, with the status the client saw.
    statuses = {rid: status for _, rid, status, _, _ in outcomes}
    logged = _logged(server, set(statuses), offset)
    assert logged == {rid: [status] for rid, status in statuses.items()}
    print(f"600 requests from 32 threads in {took:.1f} s")


# ---- overload -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_queue_server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir), "MAX_QUEUE": "1", "MAX_BATCH_SIZE": "1",
                         "SERVER_THREADS": "32"})


def test_a_burst_past_the_queue_is_refused_at_once_and_nothing_is_lost(tiny_queue_server, reference):
    server = tiny_queue_server
    burst = 48
    # Texts never sent before, so that the text cache cannot answer for the model.
    asked = [[f"burst {n} text {k}" for k in range(8 if n % 2 == 0 else 1)] for n in range(burst)]
    want = {text: vector for text, vector in zip(
        [t for texts in asked for t in texts], reference.texts([t for texts in asked for t in texts]))}
    barrier = threading.Barrier(burst, timeout=30)
    offset = len(server.log())

    def one(texts):
        barrier.wait()
        started = time.monotonic()
        response = post(server, "/invocations", {"task": "embed", "texts": texts}, timeout=60)
        return texts, response, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        answers = list(pool.map(one, asked, timeout=120))  # an exception here would be an answer lost

    assert len(answers) == burst
    refused = [(r, s) for _, r, s in answers if r.status_code == 503]
    served = [(texts, r) for texts, r, _ in answers if r.status_code != 503]
    assert refused, "the burst never filled the queue"
    for response, seconds in refused:
        assert error_code(response) == "overloaded"
        assert seconds < 10  # answered at once, not after waiting for the model or the 60 s timeout
    for texts, response in served:
        assert response.status_code == 200, response.text[:300]
        close(response.json()["text_embeddings"], [want[t] for t in texts])
    logged = [line for line in server.requests_logged(offset) if line["route"] == "/invocations"]
    deadline = time.monotonic() + 10
    while len(logged) < burst and time.monotonic() < deadline:
        time.sleep(0.2)
        logged = [line for line in server.requests_logged(offset) if line["route"] == "/invocations"]
    assert sorted(line["status"] for line in logged) == sorted(r.status_code for _, r, _ in answers)
    print(f"burst of {burst}: {len(served)} served, {len(refused)} refused")

    # Afterwards the server answers normally.
    response = post(server, "/invocations", {"task": "embed", "texts": ["after the burst"]})
    assert response.status_code == 200
    close(response.json()["text_embeddings"], reference.texts(["after the burst"]))
    assert get(server, "/ping", timeout=5).status_code == 200


# ---- a killed worker ------------------------------------------------------------------------------------

def test_a_killed_worker_is_replaced_and_the_server_recovers_by_itself(server, expected):
    master = server.master()
    workers = server.workers()
    assert len(workers) == 1, workers
    old_worker = workers[0]
    stop = threading.Event()
    outcomes: list[tuple[float, str]] = []  # (when, "ok" | "503 not_ready" | an error)
    lock = threading.Lock()

    def light_load(seed):
        rng = random.Random(seed)
        session = requests.Session()
        for _ in range(2000):  # bounded; stopped by the event long before
            if stop.is_set():
                return
            text = rng.choice(TEXTS)
            try:
                response = session.post(f"{server.url}/invocations", json={"task": "embed", "texts": [text]},
                                        timeout=10)
                if response.status_code == 200:
                    close(response.json()["text_embeddings"], [expected["texts"][text]])
                    outcome = "ok"
                else:
                    outcome = f"{response.status_code} {error_code(response)}"
            except requests.RequestException as exc:
                outcome = f"connection: {type(exc).__name__}"
            except AssertionError as exc:
                outcome = f"wrong answer: {exc}"
            with lock:
                outcomes.append((time.monotonic(), outcome))
            time.sleep(0.02)

    def oks_since(moment):
        with lock:
            return sum(1 for when, outcome in outcomes if when > moment and outcome == "ok")

    def wait_for(condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what} within {timeout} s:\n{server.log()[-3000:]}"
            time.sleep(0.05)

    clients = [threading.Thread(target=light_load, args=(seed,), daemon=True) for seed in range(3)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: oks_since(0) >= 10, 30, "no answers under the light load")
        killed_at = time.monotonic()
        os.kill(old_worker, signal.SIGKILL)
        wait_for(lambda: old_worker not in server.workers() and len(server.workers()) == 1, 30,
                 "gunicorn did not replace the killed worker")
        new_worker = server.workers()[0]
        statuses = server.wait_ready(timeout=90)  # /ping comes back to 200 by itself
        recovered_at = time.monotonic()
        wait_for(lambda: oks_since(recovered_at + 1.0) >= 10, 30, "no answers after the recovery")
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)

    assert new_worker != old_worker
    assert server.master() == master and server.process.poll() is None  # the master and serve lived on
    assert statuses[-1] == 200
    with lock:
        during = [outcome for when, outcome in outcomes if killed_at <= when]
        before = [outcome for when, outcome in outcomes if when < killed_at]
        after = [outcome for when, outcome in outcomes if when > recovered_at + 1.0]
    assert set(before) == {"ok"}, before
    # Requests in flight at the kill may fail to connect; any answer that did come was right, or "not ready".
    assert all(o == "ok" or o == "503 not_ready" or o.startswith("connection:") for o in during), during
    assert after and set(after) == {"ok"}, after
