"""Integration: the real ./serve (gunicorn, worker, model loop) on a loopback port, checked against open_clip."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from http_helper import post
from images import b64, pattern
from server import REPO, skip_if_a_default_model_dir_holds_a_model

IMAGES = [pattern(seed) for seed in range(10, 13)]
TEXTS = ["a photo of a cat", "a diagram", "two dogs playing"]
LABELS = ["cat", "dog", "red square", "car", "tree", "a bowl of soup"]


@pytest.fixture(scope="module")
def server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir)})


def invoke(server, body):
    """POST /invocations with a JSON body; every answer of the real server is JSON."""
    response = post(server, "/invocations", body)
    assert response.headers["Content-Type"].startswith("application/json")
    return response


def test_serve_becomes_ready_after_answering_503_while_loading(server):
    assert server.statuses_before_ready[-1] == 200
    # The worker answers at once while torch and the model load in the background.
    assert 503 in server.statuses_before_ready
    assert "model ready" in server.log()


def test_served_embeddings_equal_open_clip(server, reference):
    body = invoke(server, {"task": "embed", "texts": TEXTS, "images": [b64(i) for i in IMAGES]}).json()
    np.testing.assert_allclose(body["text_embeddings"], reference.texts(TEXTS), atol=1e-4)
    np.testing.assert_allclose(body["image_embeddings"], reference.images(IMAGES), atol=1e-4)


def test_served_ranking_equals_open_clip(server, reference):
    body = invoke(server, {"task": "rank", "queries": [{"image": b64(i)} for i in IMAGES],
                           "candidates": [{"text": t} for t in TEXTS]}).json()
    cosine, probabilities = reference.rank(reference.images(IMAGES), reference.texts(TEXTS))
    np.testing.assert_allclose(body["cosine_similarities"], cosine, atol=1e-4)
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-4)


def test_served_seed003_classification_equals_open_clip(server, reference):
    classes = [[label, int(i == 2)] for i, label in enumerate(LABELS)]
    answers = invoke(server, {"images": [b64(i) for i in IMAGES], "classes": classes}).json()
    expected = reference.classify_probabilities(IMAGES, LABELS)
    for answer, probabilities in zip(answers, expected):
        order = np.argsort(-probabilities)[:3]
        np.testing.assert_allclose(answer["prompts"][2], probabilities[order], atol=1e-4)
        assert answer["prompts"][1] == [LABELS[i] for i in order]
        assert answer["confidence"] == pytest.approx(probabilities.max(), abs=1e-4)


def test_served_general_classification_equals_open_clip(server, reference):
    body = invoke(server, {"task": "classify", "images": [b64(IMAGES[0])], "classes": LABELS}).json()
    expected = reference.classify_probabilities(IMAGES[:1], LABELS)[0]
    assert body["results"][0]["label"] == LABELS[int(np.argmax(expected))]
    assert body["results"][0]["classification"] is None
    assert body["results"][0]["confidence"] == pytest.approx(expected.max(), abs=1e-4)


def test_concurrent_requests_each_get_their_own_rows(server, reference):
    images = [pattern(seed) for seed in range(20, 36)]
    expected = reference.images(images)
    results: dict[int, list] = {}

    def one(i):
        results[i] = invoke(server, {"task": "embed", "images": [b64(images[i])]}).json()["image_embeddings"][0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    np.testing.assert_allclose([results[i] for i in range(len(images))], expected, atol=1e-4)


def test_client_errors_are_json_4xx_from_the_real_server(server):
    response = post(server, "/invocations", b"{not json", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"
    response = invoke(server, {"task": "embed", "images": [b64(IMAGES[0]), "AAAA"]})
    assert response.status_code == 400 and response.json()["error"]["field"] == "images[1]"


def test_sigterm_lets_an_in_flight_request_finish(serve, tiny_model_dir):
    srv = serve({"MODEL_DIR": str(tiny_model_dir)})
    body = ('{"task": "embed", "texts": ["a photo of a cat"]}').encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        head = (f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head + body[:10])  # the request is now in flight, its body half sent
        time.sleep(0.5)
        srv.terminate()
        time.sleep(1.0)
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"text_embeddings"' in answer
    assert srv.wait_exit() == 0


def test_explicit_model_dir_without_a_model_stops_serve_with_a_clear_message(serve, tmp_path):
    srv = serve({"MODEL_DIR": str(tmp_path / "missing")}, wait_ready=False)
    assert srv.wait_exit() != 0
    assert f"MODEL_DIR={tmp_path / 'missing'} does not hold an open_clip model" in srv.log()


def test_corrupt_weights_stop_serve_instead_of_serving_random_weights(serve, tiny_model_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"\x00" * 1000)
    srv = serve({"MODEL_DIR": str(broken)}, wait_ready=False)
    assert srv.wait_exit() != 0
    log = srv.log()
    assert "FATAL: the model could not be loaded" in log and str(broken) in log
    assert "model ready" not in log


def test_unknown_architecture_stops_serve_naming_it(serve):
    skip_if_a_default_model_dir_holds_a_model()
    srv = serve({"MODEL_NAME": "ViT-Nope-99", "MODEL_PRETRAINED": "none"}, wait_ready=False)
    assert srv.wait_exit() != 0
    assert "FATAL" in srv.log() and "ViT-Nope-99" in srv.log()


def test_random_weights_are_served_only_when_asked_and_said_loudly(serve):
    skip_if_a_default_model_dir_holds_a_model()
    srv = serve({"MODEL_NAME": "ViT-B-32", "MODEL_PRETRAINED": "none"})
    assert "SERVING RANDOM WEIGHTS" in srv.log()
    body = invoke(srv, {"task": "embed", "texts": ["a cat"]}).json()
    assert body["dim"] == 512 and len(body["text_embeddings"][0]) == 512


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any("libtorch" in line for line in maps)


def test_the_master_never_loads_torch_so_workers_fork_without_its_thread_pools(server):
    # torch's OpenMP pools do not survive a fork: the master stays torch-free and each worker loads its own.
    master = server.master()
    workers = server.workers()
    assert workers, "no gunicorn worker found"
    assert not _maps_torch(master) and not _maps_torch(server.process.pid)  # nor does serve's supervisor
    assert all(_maps_torch(w) for w in workers)


def test_a_relative_model_dir_means_what_it_meant_where_serve_was_started(serve, tiny_model_dir, reference):
    srv = serve({"MODEL_DIR": os.path.relpath(tiny_model_dir, REPO)})
    body = invoke(srv, {"task": "embed", "texts": ["a red car"]}).json()
    np.testing.assert_allclose(body["text_embeddings"], reference.texts(["a red car"]), atol=1e-4)
