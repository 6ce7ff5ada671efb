"""OpenAI's embeddings API through the Flask test client on the tiny model: `/v1/embeddings`, `/embeddings`
and `/invocations` with a body that has `input`; answers in OpenAI's shape with open_clip's normalised
vectors (as floats or base64 float32), usage counted by the tokenizer, `GET /v1/models`, and errors in our
body plus OpenAI's `type` and `param`. The official `openai` client drives the real server in
tests/integration/test_integrations.py."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from http_helper import get, post
from images import b64, data_uri, pattern

TEXTS = ["a photo of a cat", "two dogs playing in the snow"]
IMAGES = [pattern(20), pattern(21)]


def vectors_of(body: dict) -> np.ndarray:
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    assert all(d["object"] == "embedding" for d in body["data"])
    return np.array([d["embedding"] for d in body["data"]])


def openai_error(response, status: int, code: str, param) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embeddings", "/invocations"])
def test_texts_are_embedded_as_open_clip_does_on_every_route(client, reference, route):
    response = post(client, route, {"model": "text-embedding-ada-002", "input": TEXTS})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    np.testing.assert_allclose(vectors_of(body), reference.texts(TEXTS), atol=1e-5)
    assert body["model"] == client.get("/info").get_json()["model"]  # the served model, not the client's


def test_usage_counts_the_tokens_the_model_reads(client, reference):
    body = post(client, "/v1/embeddings", {"input": TEXTS}).get_json()
    tokens = sum(len(reference.tokenizer.encode(t)) + 2 for t in TEXTS)  # + start and end of text
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_usage_of_an_overlong_text_is_the_context_it_was_truncated_to(client):
    body = post(client, "/v1/embeddings", {"input": "cat " * 200}).get_json()
    assert body["usage"]["prompt_tokens"] == 77


def test_one_string_is_one_embedding(client, reference):
    body = post(client, "/v1/embeddings", {"input": TEXTS[0]}).get_json()
    np.testing.assert_allclose(vectors_of(body), reference.texts(TEXTS[:1]), atol=1e-5)


def test_base64_is_little_endian_float32_of_the_same_vectors(client):
    floats = vectors_of(post(client, "/v1/embeddings", {"input": TEXTS}).get_json())
    body = post(client, "/v1/embeddings", {"input": TEXTS, "encoding_format": "base64"}).get_json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    np.testing.assert_array_equal(decoded, floats.astype(np.float32))


def test_strings_are_images_with_modality_image(client, reference):
    sent = [b64(IMAGES[0]), data_uri(IMAGES[1])]
    body = post(client, "/v1/embeddings", {"input": sent, "modality": "image"}).get_json()
    np.testing.assert_allclose(vectors_of(body), reference.images(IMAGES), atol=1e-5)
    assert body["usage"]["prompt_tokens"] == 0  # images have no tokens


def test_objects_mix_texts_and_images_in_order(client, reference):
    body = post(client, "/v1/embeddings", {"input": [{"image": b64(IMAGES[0])}, {"text": TEXTS[0]}]}).get_json()
    vectors = vectors_of(body)
    np.testing.assert_allclose(vectors[0], reference.images(IMAGES[:1])[0], atol=1e-5)
    np.testing.assert_allclose(vectors[1], reference.texts(TEXTS[:1])[0], atol=1e-5)


def test_dimensions_equal_to_the_models_are_served(client):
    dim = client.get("/info").get_json()["embed_dim"]
    response = post(client, "/v1/embeddings", {"input": TEXTS, "dimensions": dim, "user": "u-1"})
    assert vectors_of(response.get_json()).shape == (2, dim)


@pytest.mark.parametrize("dimensions", [8, 64])
def test_other_dimensions_are_refused_saying_why(client, dimensions):
    error = openai_error(post(client, "/v1/embeddings", {"input": TEXTS, "dimensions": dimensions}),
                         400, "unsupported_dimensions", "dimensions")
    assert "Matryoshka" in error["message"] and "32" in error["message"]


def test_other_dimensions_are_refused_before_any_text_is_embedded(client):
    misses = client.get("/info").get_json()["text_cache"]["misses"]
    post(client, "/v1/embeddings", {"input": ["a text no test embeds before"], "dimensions": 8})
    assert client.get("/info").get_json()["text_cache"]["misses"] == misses


@pytest.mark.parametrize("token_ids, param", [([1, 2, 3], "input"), ([[1, 2], [3]], "input[0]")])
def test_token_ids_are_refused_naming_the_client_setting(client, token_ids, param):
    error = openai_error(post(client, "/v1/embeddings", {"input": token_ids, "model": "text-embedding-ada-002"}),
                         400, "token_ids_unsupported", param)
    assert "check_embedding_ctx_length=False" in error["message"]


@pytest.mark.parametrize("body, code, param", [
    ({"input": []}, "empty_list", "input"),
    ({"input": ""}, "empty_text", "input"),
    ({"input": None}, "missing_field", "input"),
    ({"input": ["ok", 3.5]}, "invalid_field", "input[1]"),
    ({"input": [{"text": "a", "image": "b"}]}, "invalid_field", "input[0]"),
    ({"input": ["a"], "encoding_format": "int8"}, "invalid_field", "encoding_format"),
    ({"input": ["a"], "modality": "audio"}, "invalid_field", "modality"),
    ({"input": ["a"], "model": 3}, "invalid_field", "model"),
    ({"input": ["a"], "dimensions": "32"}, "invalid_field", "dimensions"),
    ({"input": ["a"], "encoding_fromat": "float"}, "unknown_field", "encoding_fromat"),
    ({"input": ["not an image!"], "modality": "image"}, "invalid_base64", "input[0]"),
])
def test_client_mistakes_get_openai_errors_naming_the_param(client, body, code, param):
    openai_error(post(client, "/v1/embeddings", body), 400, code, param)


def test_a_body_that_is_not_json_gets_an_openai_error(client):
    openai_error(post(client, "/v1/embeddings", b"{", "application/json"), 400, "malformed_json", None)


def test_seed_001_bodies_keep_their_meaning_and_errors_on_embeddings(client, reference):
    body = post(client, "/embeddings", {"text": TEXTS[0], "normalize": True}).get_json()
    np.testing.assert_allclose(body["embeddings"], reference.texts(TEXTS[:1]), atol=1e-5)
    error = post(client, "/embeddings", {"text": 3}).get_json()["error"]
    assert "type" not in error and error["field"] == "text"


def test_models_lists_the_served_model_in_openais_shape(client):
    name = client.get("/info").get_json()["model"]
    body = get(client, "/v1/models").get_json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [name]
    assert body["data"][0]["object"] == "model" and isinstance(body["data"][0]["created"], int)
    # The tiny model is named by its directory's path: /v1/models//tmp/... redirects to /v1/models/tmp/...
    assert client.get(f"/v1/models/{name}", follow_redirects=True).get_json() == body["data"][0]


def test_an_unknown_model_id_is_a_404_in_openais_shape(client):
    openai_error(get(client, "/v1/models/text-embedding-3-small"), 404, "model_not_found", "model")


def test_while_loading_the_openai_routes_answer_503_in_openais_shape(settings):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot
    loading = create_app(settings, EngineSlot()).test_client()
    openai_error(post(loading, "/v1/embeddings", {"input": "a"}), 503, "not_ready", None)
    openai_error(get(loading, "/v1/models"), 503, "not_ready", None)


def test_json_lines_records_of_openai_bodies_are_answered_each_on_its_own(client, reference):
    lines = [{"input": TEXTS[0]}, {"input": TEXTS[1], "dimensions": 8}, {"input": [TEXTS[1]]}]
    response = post(client, "/invocations", "\n".join(map(json.dumps, lines)).encode(), "application/jsonlines")
    answers = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    np.testing.assert_allclose(vectors_of(answers[0]), reference.texts(TEXTS[:1]), atol=1e-5)
    assert answers[1]["error"]["code"] == "unsupported_dimensions"  # refused by itself, before any work
    np.testing.assert_allclose(vectors_of(answers[2]), reference.texts(TEXTS[1:]), atol=1e-5)
