"""Integration: the tools this container drops into, as their own clients drive the real ./serve.

- The official `openai` Python client (base URL with and without /v1): texts, one string, images through
  `extra_body={"modality": "image"}`, float and base64 (the client's default), errors it raises, the model
  list; the vectors are open_clip's, normalised.
- Weaviate's multi2vec-clip module, replayed as its Go client does it: poll /.well-known/ready with a
  500 ms timeout until 204, read /meta as a JSON object, POST /vectorize with no Content-Type, and read
  an error as `{"error": "<message>"}` when the status is above 399.
"""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import openai
import pytest
import requests

from images import b64, pattern

TEXTS = ["a photo of a cat", "a diagram", "two dogs playing"]
IMAGES = [pattern(seed) for seed in (50, 51)]
MODEL_ID = "tiny-clip"


@pytest.fixture(scope="module")
def server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir), "MODEL_ID": MODEL_ID})


@pytest.fixture(scope="module", params=["/v1", ""])
def openai_client(server, request):
    """The client as users configure it: base URL with /v1 (→ /v1/embeddings) or without (→ /embeddings)."""
    with openai.OpenAI(base_url=server.url + request.param, api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data])


def test_openai_client_embeds_texts_as_open_clip_does(openai_client, reference):
    response = openai_client.embeddings.create(model="text-embedding-ada-002", input=TEXTS, encoding_format="float")
    np.testing.assert_allclose(vectors(response), reference.texts(TEXTS), atol=1e-5)
    assert response.model == MODEL_ID
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(
        len(reference.tokenizer.encode(t)) + 2 for t in TEXTS)


def test_openai_clients_default_base64_decodes_to_the_same_vectors(openai_client, reference):
    raw = openai_client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=TEXTS)
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"  # the client's own default
    np.testing.assert_allclose(vectors(raw.parse()), reference.texts(TEXTS), atol=1e-5)


def test_openai_client_embeds_one_string(openai_client, reference):
    response = openai_client.embeddings.create(model="clip", input=TEXTS[0])
    np.testing.assert_allclose(vectors(response), reference.texts(TEXTS[:1]), atol=1e-5)


def test_openai_client_embeds_images_with_modality_in_extra_body(openai_client, reference):
    response = openai_client.embeddings.create(model="clip", input=[b64(i) for i in IMAGES],
                                               extra_body={"modality": "image"}, encoding_format="float")
    np.testing.assert_allclose(vectors(response), reference.images(IMAGES), atol=1e-5)
    assert response.usage.prompt_tokens == 0


def test_openai_client_raises_our_errors_with_type_param_and_code(openai_client):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.embeddings.create(model="clip", input=[[1, 2, 3]])
    assert (raised.value.code, raised.value.param, raised.value.type) == (
        "token_ids_unsupported", "input[0]", "invalid_request_error")
    assert "check_embedding_ctx_length=False" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.embeddings.create(model="clip", input=TEXTS, dimensions=16)
    assert (raised.value.code, raised.value.param) == ("unsupported_dimensions", "dimensions")


def test_openai_client_lists_and_retrieves_the_served_model(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == [MODEL_ID]
        assert client.models.retrieve(MODEL_ID).owned_by == "clip-sagemaker"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("text-embedding-3-large")


# ---- Weaviate's module -------------------------------------------------------------------------------------

def weaviate_wait_for_startup(url: str, deadline_s: float = 30) -> None:
    """WaitForStartup: GET /.well-known/ready, each within 500 ms, until the status is below 300."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/.well-known/ready", timeout=0.5).status_code <= 299:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError("not ready")


def weaviate_vectorize(url: str, texts: list[str], images: list[str]) -> tuple[list, list]:
    """Vectorize: the JSON body as bytes (Go's client sets no Content-Type), errors read from `error`."""
    response = requests.post(f"{url}/vectorize", data=json.dumps({"texts": texts, "images": images}).encode(),
                             timeout=60)
    assert "Content-Type" not in response.request.headers
    body = response.json()
    if response.status_code > 399:
        raise RuntimeError(f"fail with status {response.status_code}: {body['error']}")
    return body["textVectors"], body["imageVectors"]


def test_weaviate_module_vectorizes_texts_and_images(server, reference):
    weaviate_wait_for_startup(server.url)
    live = requests.get(f"{server.url}/.well-known/live", timeout=2)
    assert (live.status_code, live.content) == (204, b"")
    meta = requests.get(f"{server.url}/meta", timeout=2).json()
    assert isinstance(meta, dict) and meta["model"] == MODEL_ID
    text_vectors, image_vectors = weaviate_vectorize(server.url, TEXTS, [b64(i) for i in IMAGES])
    np.testing.assert_allclose(text_vectors, reference.texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(image_vectors, reference.images(IMAGES), atol=1e-5)
    text_vectors, image_vectors = weaviate_vectorize(server.url, [], [b64(IMAGES[0])])  # VectorizeImage
    assert text_vectors == [] and len(image_vectors) == 1


def test_weaviate_module_reads_our_error_message(server):
    broken = base64.b64encode(b"not an image at all").decode()
    with pytest.raises(RuntimeError, match=r"fail with status 400: images\[0\]"):
        weaviate_vectorize(server.url, ["a text"], [broken])
