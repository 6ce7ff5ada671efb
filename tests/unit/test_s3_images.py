"""Images from s3:// URLs, against an S3-compatible server (moto) on 127.0.0.1."""
from __future__ import annotations

import json

import numpy as np
import pytest

from images import encode, pattern

from clip_sagemaker.errors import ApiError
from clip_sagemaker.fetch import FetchPolicy
from clip_sagemaker.s3_images import S3ImageReader

CAT = encode(pattern(61))
DOG = encode(pattern(62))


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(s3_endpoint, monkeypatch):
    """Points boto3 at the local server; fixed dummy credentials keep botocore from looking anywhere else
    (such as the instance metadata address) for real ones."""
    import boto3

    for name, value in {"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    if "catalog" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="catalog")
        client.put_object(Bucket="catalog", Key="images/cat.png", Body=CAT)
        client.put_object(Bucket="catalog", Key="images/dog with space.png", Body=DOG)
        client.put_object(Bucket="catalog", Key="big.bin", Body=b"\0" * 5000)
    return client


def test_reads_an_object_from_s3(s3):
    reader = S3ImageReader(FetchPolicy())
    assert reader.read("s3://catalog/images/cat.png", "images[0]") == CAT
    assert reader.read("s3://catalog/images/dog%20with%20space.png", "images[1]") == DOG


@pytest.mark.parametrize("url, status, code", [
    ("s3://catalog/images/missing.png", 400, "image_fetch_failed"),
    ("s3://no-such-bucket/x.png", 400, "image_fetch_failed"),
    ("s3://catalog/", 400, "invalid_field"),
    ("s3://catalog/big.bin", 413, "image_too_large"),
])
def test_s3_failures_are_client_errors_naming_the_field(s3, url, status, code):
    reader = S3ImageReader(FetchPolicy(max_bytes=4096))
    with pytest.raises(ApiError) as caught:
        reader.read(url, "records[3].image")
    assert (caught.value.status, caught.value.code, caught.value.field) == (status, code, "records[3].image")


def test_buckets_outside_the_allow_list_are_refused_before_any_request(s3):
    reader = S3ImageReader(FetchPolicy(), allowed_buckets=("other-bucket",))
    with pytest.raises(ApiError) as caught:
        reader.read("s3://catalog/images/cat.png", "image")
    assert caught.value.status == 403 and "IMAGE_S3_BUCKETS" in caught.value.message
    assert reader._client is None  # never even created a client


def test_s3_images_in_requests_and_batch_records(s3, settings, engine, reference):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.engine import Engine
    from clip_sagemaker.readiness import EngineSlot

    s3_engine = Engine(engine.model, settings)
    try:
        client = create_app(settings, EngineSlot(s3_engine)).test_client()
        answer = client.post("/invocations", json={"task": "embed", "images": ["s3://catalog/images/cat.png"]})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        np.testing.assert_allclose(answer.get_json()["image_embeddings"], reference.images([CAT]), atol=1e-5)
        lines = "\n".join(json.dumps(r) for r in [{"id": "a", "image": "s3://catalog/images/cat.png"},
                                                   {"id": "b", "image": "s3://catalog/nope.png"},
                                                   {"id": "c", "image": "s3://catalog/images/dog%20with%20space.png"}])
        response = client.post("/invocations", data=lines, content_type="application/jsonlines")
        answers = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
        assert [a["id"] for a in answers] == ["a", "b", "c"]
        assert answers[1]["error"]["code"] == "image_fetch_failed"
        np.testing.assert_allclose([answers[0]["embedding"], answers[2]["embedding"]],
                                   reference.images([CAT, DOG]), atol=1e-5)
    finally:
        s3_engine.stop()
