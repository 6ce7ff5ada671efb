"""Errors that say what to do: a refusal that a setting can lift names the setting, a missing model
directory says how to make one, and no internal repr (`<_io.BytesIO object at 0x...>`) reaches a client."""
from __future__ import annotations

import base64
import json

import pytest

from http_helper import post
from images import b64, encode, pattern


def error_of(response, status) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def test_an_image_url_on_this_machine_names_the_setting_that_allows_it(client):
    body = {"task": "embed", "images": ["http://127.0.0.1:9/cat.jpg"]}
    error = error_of(post(client, "/invocations", body), 403)
    assert error["code"] == "image_url_forbidden"
    assert "IMAGE_URL_ALLOWED_HOSTS" in error["message"]


def test_an_image_over_the_pixel_limit_names_max_image_pixels():
    from clip_sagemaker.errors import ApiError
    from clip_sagemaker.inputs import decode_image

    with pytest.raises(ApiError) as caught:
        decode_image(encode(pattern(3), "PNG"), "images[0]", max_pixels=100)
    assert caught.value.status == 413
    assert "MAX_IMAGE_PIXELS" in caught.value.message


@pytest.mark.parametrize("path", ["/embed", "/embeddings", "/rank", "/encode"])
def test_an_earlier_systems_route_refuses_other_content_types_naming_only_json(client, path):
    response = client.post(path, data=b"texts=a", content_type="text/plain")
    error = error_of(response, 415)
    assert "this route takes only application/json" in error["message"]
    assert "send application/jsonlines" not in error["message"] and "image/*" not in error["message"]


def test_json_sent_as_an_image_says_to_send_it_as_json_without_an_internal_repr(client):
    body = json.dumps({"task": "embed", "texts": ["a dog"]}).encode()
    error = error_of(post(client, "/invocations", body, content_type="image/jpeg"), 400)
    assert error["code"] == "invalid_image" and error["field"] == "body"
    assert "Content-Type: application/json" in error["message"]
    assert "0x" not in error["message"] and "BytesIO" not in error["message"]


def test_bytes_that_are_no_image_name_the_formats_that_decode(client):
    not_an_image = base64.b64encode(b"%PDF-1.4" + b"\0" * 40).decode()
    error = error_of(post(client, "/invocations", {"task": "embed", "images": [not_an_image]}), 400)
    assert "JPEG, PNG" in error["message"] and "0x" not in error["message"]


def test_no_object_repr_reaches_a_client_whatever_raises_the_error():
    from clip_sagemaker.errors import ApiError

    error = ApiError("cannot identify image file <_io.BytesIO object at 0x7fe6a1b2c3d0>")
    assert error.body()["error"]["message"] == "cannot identify image file the data"


def test_a_missing_model_directory_says_how_to_make_one(tmp_path):
    from clip_sagemaker.model_source import ModelSourceError, resolve_model_source
    from clip_sagemaker.settings import Settings

    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(Settings(model_dir=str(tmp_path / "model"), model_dir_explicit=True))
    assert "the directory does not exist" in str(caught.value)
    assert "local_test/make_model.sh" in str(caught.value)
