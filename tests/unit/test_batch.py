"""Batch Transform on /invocations: execution parameters, record-oriented bodies, body limits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from http_helper import post
from images import b64, data_uri, pattern

from clip_sagemaker.payload_limits import body_limit, execution_parameters
from clip_sagemaker.worker_layout import Layout
from clip_sagemaker.settings import MB, Settings

IMAGES = [pattern(s) for s in range(50, 58)]


def jsonl(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def post_lines(client, body: bytes, content_type="application/jsonlines", **headers):
    """The answer lines, parsed, to a POST /invocations that must succeed."""
    response = post(client, "/invocations", body, content_type, **headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


# ---- execution parameters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, expected", [
    (Layout(workers=1, torch_threads=2, gpus=0), (2, 6)),
    (Layout(workers=1, torch_threads=8, gpus=1), (4, 16)),
    (Layout(workers=4, torch_threads=4, gpus=4), (6, 16)),  # 16 in flight would break the 100 MB product
])
def test_execution_parameters_follow_the_machine(layout, expected):
    parameters = execution_parameters(Settings(), layout)
    assert (parameters.max_concurrent_transforms, parameters.max_payload_mb) == expected
    assert parameters.as_json()["BatchStrategy"] == "MultiRecord"


@pytest.mark.parametrize("payload, concurrent", [(1, None), (6, 50), (40, 8), (100, 3), (None, 1000)])
def test_concurrency_times_payload_never_exceeds_100_mb(payload, concurrent):
    settings = Settings(batch_max_payload_mb=payload, batch_max_concurrent=concurrent)
    for layout in (Layout(1, 2, 0), Layout(8, 2, 8)):
        p = execution_parameters(settings, layout)
        assert 1 <= p.max_concurrent_transforms and p.max_concurrent_transforms * p.max_payload_mb <= 100
        if payload:
            assert p.max_payload_mb == payload


def test_execution_parameters_route_answers_what_sagemaker_reads(client):
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.get_json() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MultiRecord",
                                   "MaxPayloadInMB": 6}


def test_batch_requests_get_the_announced_payload_and_others_the_real_time_limit():
    settings = Settings(batch_max_payload_mb=20)
    parameters = execution_parameters(settings, Layout(1, 2, 0))
    assert body_limit(settings, parameters, batch_request=True) == (20 * MB, "the announced MaxPayloadInMB "
                                                                               "(BATCH_MAX_PAYLOAD_MB)")
    assert body_limit(settings, parameters, batch_request=False) == (6 * MB, "MAX_BODY_MB")
    assert body_limit(settings.replace(batch_mode=True), parameters, batch_request=False)[0] == 20 * MB
    # An announced payload below the real-time limit never makes batch requests smaller than others.
    small = Settings(batch_max_payload_mb=1)
    assert body_limit(small, execution_parameters(small, Layout(1, 2, 0)), True) == (6 * MB, "MAX_BODY_MB")


def test_a_large_json_lines_body_is_accepted_where_a_json_body_is_413(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    small = settings.replace(max_body_bytes=1 * MB, batch_max_payload_mb=3, max_items=10_000)
    client = create_app(small, EngineSlot(engine)).test_client()
    texts = ["a long caption " * 8] * 9000  # about 1.2 MB
    response = client.post("/invocations", data=json.dumps({"texts": texts}), content_type="application/json")
    assert response.status_code == 413 and "MAX_BODY_MB" in response.get_json()["error"]["message"]
    lines = jsonl(*({"text": t[:60]} for t in texts[:20])) + b"\n".join([b'{"text": "' + b"x" * 100 + b'"}'] * 11000)
    assert len(lines) > 1 * MB
    response = client.post("/invocations", data=lines, content_type="application/jsonlines")
    assert response.status_code == 200
    assert len(response.get_data().splitlines()) == 20 + 11000
    too_big = client.post("/invocations", data=lines * 3, content_type="application/jsonlines")
    assert too_big.status_code == 413
    assert "3 MB" in too_big.get_json()["error"]["message"] and "BATCH_MAX_PAYLOAD_MB" in too_big.get_json()["error"]["message"]


def test_records_across_many_chunks_keep_their_order_and_their_own_errors(client, reference):
    from clip_sagemaker.pipeline import RECORDS_PER_CHUNK

    count = 2 * RECORDS_PER_CHUNK + 3
    body = jsonl(*({"id": i, "text": f"caption {i % 5}"} if i % 100 else f"broken line {i}" for i in range(count)))
    answers = post_lines(client, body)
    assert len(answers) == count
    vectors = reference.texts([f"caption {i}" for i in range(5)])
    for i, answer in enumerate(answers):
        if i % 100:
            assert answer["id"] == i
            np.testing.assert_allclose(answer["embedding"], vectors[i % 5], atol=1e-5)
        else:
            assert answer["error"]["code"] == "malformed_json"


def test_records_streamed_as_a_json_array_are_one_document(client, reference):
    from clip_sagemaker.pipeline import RECORDS_PER_CHUNK

    body = jsonl(*({"id": i, "text": "red sofa"} for i in range(RECORDS_PER_CHUNK + 1)))
    response = post(client, "/invocations", body, "application/jsonlines", Accept="application/json")
    answers = response.get_json()
    assert [a["id"] for a in answers] == list(range(RECORDS_PER_CHUNK + 1))
    np.testing.assert_allclose(answers[-1]["embedding"], reference.texts(["red sofa"])[0], atol=1e-5)


def test_a_chunked_batch_body_past_the_limit_is_413_before_any_answer(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    client = create_app(settings.replace(max_body_bytes=1 * MB), EngineSlot(engine)).test_client()
    lines = b'{"text": "' + b"x" * 100 + b'"}\n'
    # No Content-Length: the limit can only be found while reading, and must still be the whole answer.
    def post_chunked(data: bytes):
        return client.post("/invocations", data=data, content_type="application/jsonlines",
                           environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True})

    response = post_chunked(lines * 70_000)
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "body_too_large"
    response = post_chunked(lines * 3)
    assert response.status_code == 200 and len(response.get_data().splitlines()) == 3


# ---- item records -----------------------------------------------------------------------------------------

def test_item_records_echo_their_fields_and_line_up_with_the_input(client, reference):
    body = jsonl({"id": "sku-1", "image": b64(IMAGES[0])},
                 {"id": "q-7", "text": "red sofa", "lang": "en"},
                 {"id": "sku-2", "image": "not base64!"},
                 "this line is not JSON",
                 {"id": "sku-3", "image": data_uri(IMAGES[1])},
                 {"id": "q-8", "text": "   "})
    answers = post_lines(client, body)
    assert len(answers) == 6
    assert answers[0]["id"] == "sku-1"
    np.testing.assert_allclose(answers[0]["embedding"], reference.images(IMAGES[:1])[0], atol=1e-5)
    assert answers[1]["id"] == "q-7" and answers[1]["lang"] == "en"
    np.testing.assert_allclose(answers[1]["embedding"], reference.texts(["red sofa"])[0], atol=1e-5)
    assert answers[2]["id"] == "sku-2" and answers[2]["error"]["code"] == "invalid_base64"
    assert "embedding" not in answers[2]
    assert answers[3]["error"]["code"] == "malformed_json"
    np.testing.assert_allclose(answers[4]["embedding"], reference.images(IMAGES[1:2])[0], atol=1e-5)
    assert answers[5]["id"] == "q-8" and answers[5]["error"]["code"] == "empty_text"


def test_item_records_share_forward_passes(client, engine, reference):
    before = engine.loop.batches_run
    body = jsonl(*({"id": i, "image": b64(image)} for i, image in enumerate(IMAGES)),
                 *({"id": f"t{i}", "text": f"caption {i}"} for i in range(8)))
    answers = post_lines(client, body)
    # 8 images and 8 texts with a max batch of 8: one forward pass each, not sixteen.
    assert engine.loop.batches_run - before == 2
    np.testing.assert_allclose([a["embedding"] for a in answers[:8]], reference.images(IMAGES), atol=1e-5)


def test_item_records_can_ask_for_raw_vectors(client, reference):
    answers = post_lines(client, jsonl({"text": "red sofa", "normalize": False}, {"text": "red sofa"}))
    np.testing.assert_allclose(answers[0]["embedding"], reference.texts(["red sofa"], normalize=False)[0], atol=1e-5)
    np.testing.assert_allclose(answers[1]["embedding"], reference.texts(["red sofa"])[0], atol=1e-5)
    header = {"X-Amzn-SageMaker-Custom-Attributes": "normalize=false"}
    answers = post_lines(client, jsonl({"text": "red sofa"}), **header)
    np.testing.assert_allclose(answers[0]["embedding"], reference.texts(["red sofa"], normalize=False)[0], atol=1e-5)


def test_full_requests_and_item_records_mix_in_one_body(client, reference):
    answers = post_lines(client, jsonl({"task": "rank", "queries": [{"text": "a"}],
                                        "candidates": [{"text": "b"}, {"text": "c"}]},
                                       {"id": 1, "text": "a"},
                                       {"images": [b64(IMAGES[2])], "classes": ["cat", "dog"]}))
    assert answers[0]["task"] == "rank" and answers[1]["id"] == 1 and len(answers[2][0]) == 3


# ---- CSV ---------------------------------------------------------------------------------------------------

def test_csv_lines_are_texts_or_image_uris(client, reference):
    body = ("red sofa\n" + '"a chair, green"\n' + data_uri(IMAGES[3]) + "\n\n").encode()
    answers = post_lines(client, body, "text/csv")
    assert len(answers) == 4
    np.testing.assert_allclose(answers[0]["embedding"], reference.texts(["red sofa"])[0], atol=1e-5)
    np.testing.assert_allclose(answers[1]["embedding"], reference.texts(["a chair, green"])[0], atol=1e-5)
    np.testing.assert_allclose(answers[2]["embedding"], reference.images(IMAGES[3:4])[0], atol=1e-5)
    assert answers[3]["error"]["code"] == "empty_text"


def test_csv_can_be_answered_as_csv(client, reference):
    response = client.post("/invocations", data=b"red sofa\n\xff\xfe\n", content_type="text/csv",
                           headers={"Accept": "text/csv"})
    assert response.status_code == 200 and response.content_type.startswith("text/csv")
    first, second = response.get_data(as_text=True).splitlines()
    np.testing.assert_allclose([float(x) for x in first.split(",")], reference.texts(["red sofa"])[0], atol=1e-5)
    assert second.startswith("error,invalid_record,")


def test_csv_answers_are_refused_for_json_requests(client):
    response = client.post("/invocations", data=b'{"texts": ["a"]}', content_type="application/json",
                           headers={"Accept": "text/csv"})
    assert response.status_code == 406
