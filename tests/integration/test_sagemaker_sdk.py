"""Integration: the SageMaker Python SDK's own serializers and deserializers against the real ./serve.

Each case serializes with an SDK serializer, POSTs the bytes to /invocations with the serializer's
CONTENT_TYPE and the deserializer's ACCEPT[0] (what `Predictor.predict` and SageMaker send), and hands the
answer to the SDK deserializer as a botocore StreamingBody with the server's Content-Type (what
`sagemaker-runtime.invoke_endpoint` gives it in production). Numbers are checked against open_clip.
"""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest

from http_helper import post
from images import b64, encode, pattern

IMAGES = [pattern(seed) for seed in range(40, 43)]
TEXTS = ["a photo of a cat", "two dogs playing", "un café crème"]  # one non-ASCII: bodies go as UTF-8
LABELS = ["cat", "dog", "red square", "car", "tree", "a bowl of soup"]


@pytest.fixture(scope="module")
def sdk(sagemaker_sdk_env):
    """The SDK, imported with telemetry opted out."""
    import botocore.response
    from sagemaker import deserializers, serializers
    return SimpleNamespace(serializers=serializers, deserializers=deserializers,
                           StreamingBody=botocore.response.StreamingBody)


@pytest.fixture(scope="module")
def server(serve_module, tiny_model_dir):
    return serve_module({"MODEL_DIR": str(tiny_model_dir)})


def round_trip(sdk, server, serializer, deserializer, data, expect_status=200):
    """serializer → POST /invocations → deserializer, the way the SDK and SageMaker Runtime do it."""
    body = serializer.serialize(data)
    if isinstance(body, str):  # boto3 sends a str Body as UTF-8 (requests would send latin-1)
        body = body.encode("utf-8")
    response = post(server, "/invocations", body, serializer.CONTENT_TYPE, Accept=deserializer.ACCEPT[0])
    assert response.status_code == expect_status, response.text
    content = response.content
    stream = sdk.StreamingBody(io.BytesIO(content), len(content))
    return deserializer.deserialize(stream, response.headers["Content-Type"]), response


def general_embed():
    return {"task": "embed", "texts": TEXTS, "images": [b64(i) for i in IMAGES]}


def test_json_serializer_and_json_deserializer(sdk, server, reference):
    answer, response = round_trip(sdk, server, sdk.serializers.JSONSerializer(),
                                  sdk.deserializers.JSONDeserializer(), general_embed())
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(answer, dict) and answer["task"] == "embed" and answer["dim"] == 32
    np.testing.assert_allclose(answer["text_embeddings"], reference.texts(TEXTS), atol=1e-4)
    np.testing.assert_allclose(answer["image_embeddings"], reference.images(IMAGES), atol=1e-4)


def test_json_serializer_and_numpy_deserializer(sdk, server, reference):
    deserializer = sdk.deserializers.NumpyDeserializer()
    assert deserializer.ACCEPT[0] == "application/x-npy"
    array, response = round_trip(sdk, server, sdk.serializers.JSONSerializer(), deserializer, general_embed())
    # NumpyDeserializer matches the Content-Type exactly: a parameter (`; charset=...`) would make it refuse.
    assert response.headers["Content-Type"] == "application/x-npy"
    assert isinstance(array, np.ndarray) and array.dtype == np.float32
    assert array.shape == (len(TEXTS) + len(IMAGES), 32)
    np.testing.assert_allclose(array[:len(TEXTS)], reference.texts(TEXTS), atol=1e-4)
    np.testing.assert_allclose(array[len(TEXTS):], reference.images(IMAGES), atol=1e-4)


def test_numpy_deserializer_reads_a_ranking_as_its_probability_matrix(sdk, server, reference):
    queries, candidates = TEXTS[:2], ["a cat", "a bowl of soup"]
    body = {"task": "rank", "queries": [{"text": t} for t in queries], "candidates": [{"text": t} for t in candidates]}
    array, _ = round_trip(sdk, server, sdk.serializers.JSONSerializer(), sdk.deserializers.NumpyDeserializer(),
                          body)
    _, probabilities = reference.rank(reference.texts(queries), reference.texts(candidates))
    assert array.shape == (2, 2)
    np.testing.assert_allclose(array, probabilities, atol=1e-4)


def test_json_lines_serializer_and_deserializer_keep_order_and_errors_in_place(sdk, server, reference):
    records = [general_embed(), {"texts": ["a red car", "jeans"]}, {"texts": []}, {"texts": ["a diagram"]}]
    answers, response = round_trip(sdk, server, sdk.serializers.JSONLinesSerializer(),
                                   sdk.deserializers.JSONLinesDeserializer(), records)
    assert response.headers["Content-Type"] == "application/jsonlines"
    assert isinstance(answers, list) and len(answers) == len(records)
    np.testing.assert_allclose(answers[0]["text_embeddings"], reference.texts(TEXTS), atol=1e-4)
    np.testing.assert_allclose(answers[0]["image_embeddings"], reference.images(IMAGES), atol=1e-4)
    np.testing.assert_allclose(answers[1]["embeddings"], reference.texts(["a red car", "jeans"]), atol=1e-4)
    assert set(answers[2]) == {"error"}
    assert answers[2]["error"]["code"] == "empty_list" and answers[2]["error"]["field"] == "texts"
    np.testing.assert_allclose(answers[3]["embeddings"], reference.texts(["a diagram"]), atol=1e-4)


def test_identity_serializer_sends_a_raw_png(sdk, server, reference):
    png = encode(IMAGES[0], "PNG")
    answer, _ = round_trip(sdk, server, sdk.serializers.IdentitySerializer(content_type="image/png"),
                           sdk.deserializers.JSONDeserializer(), png)
    assert answer["text_embeddings"] == []
    np.testing.assert_allclose(answer["image_embeddings"], reference.images([png]), atol=1e-4)


def test_data_serializer_sends_an_image_file_and_numpy_deserializer_reads_its_vector(sdk, server, reference,
                                                                                      tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(encode(IMAGES[1], "PNG"))
    array, _ = round_trip(sdk, server, sdk.serializers.DataSerializer(content_type="image/png"),
                          sdk.deserializers.NumpyDeserializer(), str(path))
    assert array.shape == (1, 32)
    np.testing.assert_allclose(array, reference.images([IMAGES[1]]), atol=1e-4)


def test_data_serializer_default_content_type_is_read_as_an_image(sdk, server, reference, tmp_path):
    """DataSerializer's default CONTENT_TYPE is the SDK's own "file-path/raw-bytes": a file's raw bytes,
    which for this container can only be an image."""
    serializer = sdk.serializers.DataSerializer()
    assert serializer.CONTENT_TYPE == "file-path/raw-bytes"
    path = tmp_path / "image.png"
    path.write_bytes(encode(IMAGES[1], "PNG"))
    answer, _ = round_trip(sdk, server, serializer, sdk.deserializers.JSONDeserializer(), str(path))
    np.testing.assert_allclose(answer["image_embeddings"], reference.images([IMAGES[1]]), atol=1e-4)


def test_seed003_classification_with_json_serializer_and_deserializer(sdk, server, reference):
    classes = [[label, int(i == 2)] for i, label in enumerate(LABELS)]
    answers, _ = round_trip(sdk, server, sdk.serializers.JSONSerializer(), sdk.deserializers.JSONDeserializer(),
                            {"images": [b64(i) for i in IMAGES], "classes": classes})
    expected = reference.classify_probabilities(IMAGES, LABELS)
    assert isinstance(answers, list) and len(answers) == len(IMAGES)
    for answer, probabilities in zip(answers, expected):
        assert {"classification", "confidence", "prompts"} <= set(answer)
        assert answer["confidence"] == pytest.approx(probabilities.max(), abs=1e-4)
        assert answer["prompts"][1][0] == LABELS[int(np.argmax(probabilities))]


# ---- Predictor.predict end to end ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_session(sdk, server):
    """The SDK's LocalSession, whose runtime client POSTs to <docker host>:<local.serving_port>/invocations
    with the SDK's own header mapping (CustomAttributes → X-Amzn-SageMaker-Custom-Attributes). The docker
    host lookup (it runs `docker info`) is replaced by loopback; no Docker, no AWS call."""
    import boto3
    from sagemaker.local import LocalSession, local_session as local_session_module
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_session_module, "get_docker_host", lambda: "127.0.0.1")
        session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
        session.config = {"local": {"serving_port": server.port}}
        yield session


def predictor(local_session, serializer, deserializer):
    from sagemaker.predictor import Predictor
    return Predictor("clip-sagemaker-test", sagemaker_session=local_session, serializer=serializer,
                     deserializer=deserializer)


def test_predictor_predict_with_custom_attributes(sdk, local_session, reference):
    clip = predictor(local_session, sdk.serializers.JSONSerializer(), sdk.deserializers.JSONDeserializer())
    body = {"task": "embed", "texts": TEXTS}
    default = clip.predict(body)
    assert default["normalized"] is True
    np.testing.assert_allclose(default["text_embeddings"], reference.texts(TEXTS), atol=1e-4)
    raw = clip.predict(body, custom_attributes="normalize=false")
    assert raw["normalized"] is False
    np.testing.assert_allclose(raw["text_embeddings"], reference.texts(TEXTS, normalize=False), atol=1e-4)
    assert not np.allclose(raw["text_embeddings"], default["text_embeddings"], atol=1e-3)


def test_predictor_predict_raw_image_as_npy(sdk, local_session, reference):
    clip = predictor(local_session, sdk.serializers.IdentitySerializer(content_type="image/png"),
                     sdk.deserializers.NumpyDeserializer())
    png = encode(IMAGES[2], "PNG")
    array = clip.predict(png)
    assert array.shape == (1, 32)
    np.testing.assert_allclose(array, reference.images([png]), atol=1e-4)
