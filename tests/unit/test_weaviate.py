"""Weaviate's multi2vec-clip inference API through the Flask test client on the tiny model: the health
routes answer 204 with empty bodies (ready only when /ping is 200), /meta describes the model, /vectorize
answers open_clip's normalised vectors for bodies as Weaviate's module sends them (no Content-Type, null
lists, empty texts), and every error is `{"error": "<message>"}`. tests/integration/test_integrations.py
drives the real server the way the module does."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from images import b64, pattern

IMAGES = [pattern(30), pattern(31)]
TEXTS = ["This is plane", "Boeing 737"]


def vectorize(client, body, **kwargs):
    # As Weaviate's Go client sends it: the JSON document, and no Content-Type or Accept header.
    return client.post("/vectorize", data=json.dumps(body).encode(), **kwargs)


def weaviate_error(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def test_live_and_ready_answer_204_with_an_empty_body(client):
    for path in ("/.well-known/live", "/.well-known/ready"):
        response = client.get(path)
        assert (response.status_code, response.data) == (204, b"")


def test_while_loading_ready_is_503_and_live_is_204(settings):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot
    loading = create_app(settings, EngineSlot()).test_client()
    assert loading.get("/ping").status_code == 503
    assert "not ready" in weaviate_error(loading.get("/.well-known/ready"), 503)
    assert loading.get("/.well-known/live").status_code == 204
    weaviate_error(vectorize(loading, {"texts": ["a"]}), 503)
    weaviate_error(loading.get("/meta"), 503)


def test_meta_describes_the_model_as_info_does(client):
    meta = client.get("/meta").get_json()
    assert meta == client.get("/info").get_json() | {"text_cache": meta["text_cache"]}  # cache counters move
    assert meta["embed_dim"] == 32


def test_vectorize_gives_open_clips_normalised_vectors_in_order(client, reference):
    body = vectorize(client, {"texts": TEXTS, "images": [b64(i) for i in IMAGES]}).get_json()
    np.testing.assert_allclose(body["textVectors"], reference.texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(body["imageVectors"], reference.images(IMAGES), atol=1e-5)


@pytest.mark.parametrize("images", [[], None])
def test_either_list_may_be_empty_or_null(client, reference, images):
    body = vectorize(client, {"texts": TEXTS[:1], "images": images}).get_json()
    assert body["imageVectors"] == []
    np.testing.assert_allclose(body["textVectors"], reference.texts(TEXTS[:1]), atol=1e-5)
    body = vectorize(client, {"texts": images, "images": [b64(IMAGES[0])]}).get_json()
    assert body["textVectors"] == [] and len(body["imageVectors"]) == 1


def test_nothing_to_vectorize_is_answered_without_the_model(client):
    assert vectorize(client, {"texts": [], "images": []}).get_json() == {"textVectors": [], "imageVectors": []}


def test_an_empty_text_property_is_embedded_as_clip_embeds_it(client, reference):
    body = vectorize(client, {"texts": [""], "images": []}).get_json()
    np.testing.assert_allclose(body["textVectors"], reference.texts([""]), atol=1e-5)


@pytest.mark.parametrize("body, status, says", [
    ({"texts": ["a"], "images": ["not base64!"]}, 400, "images[0]"),
    ({"texts": "a"}, 400, "texts: must be a list"),
    ({"texts": [3]}, 400, "texts[0]: must be a string"),
    ({"texts": ["a"], "imgs": []}, 400, "unknown field(s) imgs"),
    (["a"], 400, "must be a JSON object"),
    ({"texts": ["a"] * 300}, 413, "MAX_ITEMS"),
])
def test_mistakes_are_answered_as_weaviate_reads_errors(client, body, status, says):
    assert says in weaviate_error(vectorize(client, body), status)


def test_a_body_that_is_not_json_is_a_weaviate_error(client):
    assert "JSON" in weaviate_error(client.post("/vectorize", data=b"{"), 400)


def test_health_checks_stay_out_of_the_access_log_and_vectorize_is_in_it(client, caplog):
    with caplog.at_level(logging.INFO, logger="clip_sagemaker.access"):
        client.get("/.well-known/ready")
        client.get("/.well-known/live")
        vectorize(client, {"texts": ["a"]})
    routes = [json.loads(r.getMessage())["route"] for r in caplog.records if r.name == "clip_sagemaker.access"]
    assert routes == ["/vectorize"]
