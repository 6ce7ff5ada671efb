"""A multi-model endpoint's model-management API (multi_model.py, routes/models.py), through the Flask test
client the way SageMaker calls it: loads by name from a directory, 409 for a name already loaded, 404 and
400 for a missing or invalid directory, 507 past the memory limit, paged listing, unload, and invoke
answering exactly what /invocations answers for that model."""
from __future__ import annotations

import io
import json
import shutil
import time

import numpy as np
import pytest

from http_helper import get, post
from images import b64, encode, pattern
from reference import cosine


def _registry_app(settings, **changes):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.multi_model import ModelRegistry
    from clip_sagemaker.worker_layout import Layout

    mm_settings = settings.replace(multi_model=True, model_dir_explicit=False, **changes)
    registry = ModelRegistry(mm_settings, Layout(workers=1, torch_threads=1, gpus=0), on_failure=pytest.fail)
    deadline = time.monotonic() + 30
    while not registry.ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    return create_app(mm_settings, registry), registry


@pytest.fixture()
def mm(settings):
    """A multi-model app and its registry; every model still loaded is unloaded after the test."""
    app, registry = _registry_app(settings)
    yield app.test_client(), registry
    for model in registry.page(100, 0)[0]:
        registry.unload(model.name)


def load(client, name, url):
    return post(client, "/models", {"model_name": name, "url": str(url)})


def test_ping_is_ready_with_no_model_and_invocations_asks_for_a_model_name(mm):
    client, _ = mm
    assert get(client, "/ping").status_code == 200
    assert get(client, "/models").get_json() == {"models": []}
    response = post(client, "/invocations", {"task": "embed", "texts": ["a dog"]})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "model_not_named"


def test_each_loaded_model_answers_with_its_own_weights(mm, tiny_model_dir, tiny_siglip_dir, reference,
                                                         siglip_reference):
    client, _ = mm
    assert load(client, "clip", tiny_model_dir).status_code == 200
    assert load(client, "siglip", tiny_siglip_dir).status_code == 200
    for name, ref in (("clip", reference), ("siglip", siglip_reference)):
        answer = post(client, f"/models/{name}/invoke", {"task": "embed", "texts": ["a red car"]}).get_json()
        assert answer["model"] == name
        assert cosine(answer["text_embeddings"][0], ref.texts(["a red car"])[0]) > 0.9999


@pytest.mark.parametrize("content_type, body, accept", [
    ("application/json", {"task": "embed", "texts": ["a dog", "a cat"]}, None),
    ("application/json", {"task": "rank", "queries": [{"text": "a dog"}], "candidates": [{"text": "a"}, {"text": "b"}]},
     None),
    ("application/json", {"texts": ["a photo of a dog"]}, "application/x-npy"),
    ("application/json", {"task": "embed", "texts": ["a dog"]}, "application/jsonlines"),
    ("application/jsonlines", b'{"text": "a dog"}\n{"text": "a cat"}\n', None),
    ("text/csv", b"a dog\na cat\n", "text/csv"),
    ("image/png", encode(pattern(3)), None),
])
def test_invoke_answers_exactly_what_invocations_answers_for_that_model(mm, client, tiny_model_dir,
                                                                        content_type, body, accept):
    mm_client, _ = mm
    load(mm_client, "m", tiny_model_dir)
    direct = post(client, "/invocations", body, content_type, Accept=accept)
    invoked = post(mm_client, "/models/m/invoke", body, content_type, Accept=accept,
                   **{"X-Amzn-SageMaker-Target-Model": "m.tar.gz"})
    assert (invoked.status_code, invoked.mimetype) == (direct.status_code, direct.mimetype) == (200, direct.mimetype)
    # Values equal up to fp32 batching noise (each server batches texts with what else it has seen), and
    # each answer names its own model (the directory; the name it was loaded as).
    assert _same(_parsed(invoked), _parsed(direct))


def _parsed(response):
    data = response.get_data()
    if response.mimetype == "application/x-npy":
        return np.load(io.BytesIO(data)).tolist()
    if response.mimetype == "text/csv":
        return [[float(v) for v in line.split(",")] for line in data.decode().splitlines()]
    if response.mimetype == "application/jsonlines":
        return [json.loads(line) for line in data.decode().splitlines()]
    return json.loads(data)


def _same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(k == "model" or _same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


def test_loading_a_name_already_loaded_is_409_and_keeps_the_first(mm, tiny_model_dir, tiny_siglip_dir):
    client, _ = mm
    assert load(client, "m", tiny_model_dir).status_code == 200
    again = load(client, "m", tiny_siglip_dir)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "model_already_loaded"
    assert get(client, "/models/m").get_json()["modelUrl"] == str(tiny_model_dir)


def test_a_missing_directory_is_404_and_one_without_a_loadable_model_is_400(mm, tmp_path, tiny_model_dir):
    client, _ = mm
    missing = load(client, "m", tmp_path / "nowhere")
    assert missing.status_code == 404
    assert missing.get_json()["error"] | {"message": ""} == {"code": "model_url_not_found", "field": "url",
                                                              "message": ""}
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", half)
    invalid = load(client, "m", half)
    assert invalid.status_code == 400
    assert invalid.get_json()["error"]["code"] == "invalid_model_directory"
    assert "open_clip_model.safetensors" in invalid.get_json()["error"]["message"]
    (half / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    broken = load(client, "m", half)
    assert (broken.status_code, broken.get_json()["error"]["code"]) == (400, "model_load_failed")
    assert get(client, "/models").get_json() == {"models": []}


@pytest.mark.parametrize("body, field, code", [
    ({"url": "/opt/ml/models/x/model"}, "model_name", "missing_field"),
    ({"model_name": "x"}, "url", "missing_field"),
    ({"model_name": "a/b", "url": "/x"}, "model_name", "invalid_field"),
    ({"model_name": 3, "url": "/x"}, "model_name", "invalid_field"),
    ({"model_name": "", "url": "/x"}, "model_name", "invalid_field"),
])
def test_a_malformed_load_request_is_400_naming_the_field(mm, body, field, code):
    client, _ = mm
    response = post(client, "/models", body)
    assert response.status_code == 400
    assert (response.get_json()["error"]["field"], response.get_json()["error"]["code"]) == (field, code)


def test_the_list_is_paged_in_name_order_with_next_page_token(mm, tiny_model_dir):
    client, _ = mm
    for name in ("c", "a", "b"):
        assert load(client, name, tiny_model_dir).status_code == 200
    first = get(client, "/models?limit=2").get_json()
    assert first == {"models": [{"modelName": "a", "modelUrl": str(tiny_model_dir)},
                                {"modelName": "b", "modelUrl": str(tiny_model_dir)}], "nextPageToken": "2"}
    rest = get(client, f"/models?limit=2&next_page_token={first['nextPageToken']}").get_json()
    assert rest == {"models": [{"modelName": "c", "modelUrl": str(tiny_model_dir)}]}
    assert [m["modelName"] for m in get(client, "/models?limit=500").get_json()["models"]] == ["a", "b", "c"]
    for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("next_page_token=-1", "next_page_token")):
        response = get(client, f"/models?{query}")
        assert (response.status_code, response.get_json()["error"]["field"]) == (400, field)


def test_get_model_describes_it(mm, tiny_siglip_dir):
    client, _ = mm
    load(client, "s", tiny_siglip_dir)
    described = get(client, "/models/s").get_json()
    assert (described["modelName"], described["modelUrl"]) == ("s", str(tiny_siglip_dir))
    assert described["info"]["scoring"] == "sigmoid" and described["info"]["model"] == "s"
    assert described["estimatedMemoryMb"] > 0


def test_after_unload_the_model_is_404_everywhere_and_the_others_still_answer(mm, tiny_model_dir, tiny_siglip_dir,
                                                                               siglip_reference):
    client, _ = mm
    load(client, "a", tiny_model_dir)
    load(client, "b", tiny_siglip_dir)
    engine = mm[1].find("a").slot.get()
    assert client.delete("/models/a").status_code == 200
    assert not engine.healthy()  # its model loop was stopped
    for response in (get(client, "/models/a"), client.delete("/models/a"),
                     post(client, "/models/a/invoke", {"task": "embed", "texts": ["x"]})):
        assert (response.status_code, response.get_json()["error"]["code"]) == (404, "model_not_loaded")
    assert [m["modelName"] for m in get(client, "/models").get_json()["models"]] == ["b"]
    answer = post(client, "/models/b/invoke", {"task": "embed", "texts": ["x"]}).get_json()
    assert cosine(answer["text_embeddings"][0], siglip_reference.texts(["x"])[0]) > 0.9999
    assert load(client, "a", tiny_model_dir).status_code == 200  # the name is free again


def test_a_load_past_the_memory_limit_is_507_with_needed_and_available(settings, tiny_model_dir):
    from clip_sagemaker.multi_model import MEMORY_FACTOR

    weights_mb = (tiny_model_dir / "open_clip_model.safetensors").stat().st_size / 2**20
    # Room for one tiny model's estimate, not two.
    app, registry = _registry_app(settings, multi_model_memory_mb=int(weights_mb * MEMORY_FACTOR * 1.5) + 1)
    client = app.test_client()
    try:
        assert load(client, "one", tiny_model_dir).status_code == 200
        refused = load(client, "two", tiny_model_dir)
        assert refused.status_code == 507
        error = refused.get_json()["error"]
        assert error["code"] == "insufficient_memory"
        assert error["needed_mb"] == int(weights_mb * MEMORY_FACTOR) and error["available_mb"] < error["needed_mb"]
        assert "MULTI_MODEL_MEMORY_MB" in error["message"]
        assert client.delete("/models/one").status_code == 200
        assert load(client, "two", tiny_model_dir).status_code == 200  # the unloaded model's share is free
    finally:
        for model in registry.page(100, 0)[0]:
            registry.unload(model.name)


def test_every_model_shares_one_cpu_phases_so_their_forwards_take_turns(mm, tiny_model_dir, tiny_siglip_dir):
    client, registry = mm
    load(client, "a", tiny_model_dir)
    load(client, "b", tiny_siglip_dir)
    assert registry.find("a").slot.get().phases is registry.find("b").slot.get().phases


def test_the_answer_of_an_npy_invoke_is_the_models_own_embedding(mm, tiny_siglip_dir, siglip_reference):
    client, _ = mm
    load(client, "s", tiny_siglip_dir)
    image = pattern(5)
    response = post(client, "/models/s/invoke", {"task": "embed", "images": [b64(image)]}, Accept="application/x-npy")
    assert response.status_code == 200, response.get_data()[:300]
    array = np.load(io.BytesIO(response.get_data()))
    assert cosine(array[0], siglip_reference.images([image])[0]) > 0.9999
    assert json.loads(get(client, "/models/s").get_data())["info"]["embed_dim"] == array.shape[1]


def test_a_request_still_running_on_a_model_being_unloaded_gets_503_model_unloaded(mm, tiny_model_dir):
    from clip_sagemaker.errors import ApiError

    client, registry = mm
    load(client, "m", tiny_model_dir)
    engine = registry.find("m").slot.get()  # what an invoke already under way holds
    registry.unload("m")
    with pytest.raises(ApiError) as refused:
        engine.for_request(time.monotonic() + 30).encode_texts(["a text no cache holds"])
    assert (refused.value.status, refused.value.code) == (503, "model_unloaded")
