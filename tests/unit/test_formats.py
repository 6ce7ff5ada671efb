"""The earlier systems' request formats (their documents' own examples), on their routes and on /invocations,
and the content types /invocations speaks; numbers checked against open_clip."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from http_helper import post
from images import b64, encode, pattern
from reference import cosine

IMAGE = pattern(7)
RED_SOFA = b64(IMAGE, "JPEG", quality=95)  # seed 001 sends a base64 JPEG
SEED002_CANDIDATES = ["t-shirt", "jeans", "jacket", "dress", "skirt", "shorts", "coat", "shoes", "hat", "sweater"]


def ok(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


# ---- seed 000: OpenCLIP as a Service ----------------------------------------------------------------------

def test_seed000_health_route_says_ok(client):
    assert ok(client.get("/")).get_json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/embed", "/invocations"])
def test_seed000_embed_example_answers_normalized_embeddings(client, reference, path):
    body = {"texts": ["a photo of a dog", "a red car"], "normalize": True}
    answer = ok(post(client, path, body)).get_json()
    assert set(answer) == {"embeddings"}
    np.testing.assert_allclose(answer["embeddings"], reference.texts(body["texts"]), atol=1e-5)


def test_seed000_normalize_defaults_to_true_and_can_be_turned_off(client, reference):
    texts = ["a photo of a dog"]
    default = ok(post(client, "/embed", {"texts": texts})).get_json()["embeddings"]
    raw = ok(post(client, "/embed", {"texts": texts, "normalize": False})).get_json()["embeddings"]
    np.testing.assert_allclose(default, reference.texts(texts), atol=1e-5)
    np.testing.assert_allclose(raw, reference.texts(texts, normalize=False), atol=1e-5)


# ---- seed 001: OpenCLIP-API ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/embeddings", "/invocations"])
def test_seed001_text_and_image_answer_raw_vectors_text_first(client, reference, path):
    answer = ok(post(client, path, {"text": "red sofa", "image": RED_SOFA})).get_json()
    assert set(answer) == {"model", "device", "embeddings", "duration"}
    assert answer["device"] == "cpu" and isinstance(answer["duration"], float) and answer["duration"] >= 0
    np.testing.assert_allclose(answer["embeddings"][0], reference.texts(["red sofa"], normalize=False)[0], atol=1e-5)
    # A JPEG is decoded in draft mode at the model's input size (32 here): equal to open_clip on that decode,
    # and close to open_clip on the full-size decode.
    drafted = reference.images([RED_SOFA], normalize=False, draft_size=32)[0]
    np.testing.assert_allclose(answer["embeddings"][1], drafted, atol=1e-5)
    assert cosine(answer["embeddings"][1], reference.images([RED_SOFA], normalize=False)[0]) > 0.99


def test_seed001_either_field_alone_gives_one_vector(client, reference):
    assert len(ok(post(client, "/embeddings", {"text": "red sofa"})).get_json()["embeddings"]) == 1
    only_image = ok(post(client, "/embeddings", {"image": RED_SOFA})).get_json()["embeddings"]
    np.testing.assert_allclose(only_image, reference.images([RED_SOFA], normalize=False, draft_size=32), atol=1e-5)


def test_seed001_without_text_or_image_is_a_400(client):
    response = post(client, "/embeddings", {"text": None})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "missing_field"


# ---- seed 002: CLIP-API-service ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/rank", "/invocations"])
def test_seed002_rank_example_with_an_image_blob(client, reference, path):
    body = {"queries": [{"img_blob": b64(IMAGE)}], "candidates": [{"text": t} for t in SEED002_CANDIDATES]}
    answer = ok(post(client, path, body)).get_json()
    assert set(answer) == {"probabilities", "cosine_similarities"}
    cosine, probabilities = reference.rank(reference.images([IMAGE]), reference.texts(SEED002_CANDIDATES))
    np.testing.assert_allclose(answer["cosine_similarities"], cosine, atol=1e-5)
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-4)


def test_seed002_rank_works_text_to_image_too(client, reference):
    images = [pattern(s) for s in (1, 2, 3)]
    body = {"queries": [{"text": "a red car"}], "candidates": [{"img_blob": b64(i)} for i in images]}
    answer = ok(post(client, "/rank", body)).get_json()
    _, probabilities = reference.rank(reference.texts(["a red car"]), reference.images(images))
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-4)


@pytest.mark.parametrize("path", ["/encode", "/invocations"])
def test_seed002_encode_answers_raw_vectors_in_item_order(client, reference, path):
    items = [{"text": "a red car"}, {"img_blob": b64(IMAGE)}, {"text": "jeans"}]
    answer = ok(post(client, path, items)).get_json()
    assert len(answer) == 3
    np.testing.assert_allclose(answer[0], reference.texts(["a red car"], normalize=False)[0], atol=1e-5)
    np.testing.assert_allclose(answer[1], reference.images([IMAGE], normalize=False)[0], atol=1e-5)
    np.testing.assert_allclose(answer[2], reference.texts(["jeans"], normalize=False)[0], atol=1e-5)


def test_seed002_item_without_content_names_its_index(client):
    response = post(client, "/encode", [{"text": "ok"}, {"colour": "red"}])
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "[1]"


# ---- model information ------------------------------------------------------------------------------------

def test_info_describes_the_model_so_clients_need_not_assume_512(client, reference, tiny_model_dir):
    info = ok(client.get("/info")).get_json()
    assert info["embed_dim"] == 32 and info["image_size"] == [32, 32] and info["context_length"] == 77
    assert (info["device"], info["precision"], info["scoring"]) == ("cpu", "fp32", "softmax")
    assert info["model"] == str(tiny_model_dir)
    assert info["logit_scale"] == pytest.approx(reference.logit_scale)


# ---- content types on /invocations ------------------------------------------------------------------------

def test_json_lines_answer_one_line_per_record_with_errors_in_place(client, reference):
    lines = [json.dumps({"task": "embed", "texts": ["a red car"]}), "{broken json",
             json.dumps({"images": [b64(IMAGE)], "classes": [["car", 1], ["sofa", 0]]}), "",
             json.dumps({"texts": ["jeans"]})]
    response = ok(post(client, "/invocations", ("\n".join(lines) + "\n").encode(), "application/jsonlines"))
    assert response.content_type == "application/jsonlines"
    answers = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert len(answers) == 5
    np.testing.assert_allclose(answers[0]["text_embeddings"], reference.texts(["a red car"]), atol=1e-5)
    assert answers[1]["error"]["code"] == "malformed_json"
    assert answers[2][0]["prompts"][1][0] in ("car", "sofa")
    assert answers[3]["error"]["code"] == "empty_body"
    np.testing.assert_allclose(answers[4]["embeddings"], reference.texts(["jeans"]), atol=1e-5)


def test_json_lines_can_be_answered_as_one_json_array(client):
    body = b'{"texts": ["a"]}\n{"texts": ["b"]}\n'
    response = ok(post(client, "/invocations", body, "application/jsonlines", Accept="application/json"))
    assert len(response.get_json()) == 2


@pytest.mark.parametrize("fmt, content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                               ("WEBP", "image/webp"), ("PNG", "application/x-image")])
def test_raw_image_body_is_answered_with_its_embedding(client, reference, fmt, content_type):
    data = encode(IMAGE, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    answer = ok(post(client, "/invocations", data, content_type)).get_json()
    np.testing.assert_allclose(answer["image_embeddings"], reference.images([data], draft_size=32), atol=1e-5)


def test_undecodable_raw_image_body_is_a_400_naming_the_body(client):
    response = post(client, "/invocations", b"\x89PNG not really", "image/png")
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "body"


def test_npy_answer_is_the_embedding_matrix(client, reference):
    body = {"task": "embed", "texts": ["a", "b"], "images": [b64(IMAGE)]}
    response = ok(post(client, "/invocations", body, Accept="application/x-npy"))
    assert response.content_type == "application/x-npy"
    array = np.load(io.BytesIO(response.data))
    assert array.dtype == np.float32 and array.shape == (3, 32)
    np.testing.assert_allclose(array[:2], reference.texts(["a", "b"]), atol=1e-5)
    np.testing.assert_allclose(array[2:], reference.images([IMAGE]), atol=1e-5)


def test_npy_answer_of_a_ranking_is_its_probabilities(client, reference):
    body = {"queries": [{"text": "a"}], "candidates": [{"text": "b"}, {"text": "c"}]}
    array = np.load(io.BytesIO(ok(post(client, "/rank", body, Accept="application/x-npy")).data))
    assert array.shape == (1, 2)
    np.testing.assert_allclose(array.sum(axis=1), 1.0, atol=1e-6)


def test_npy_is_not_acceptable_for_a_classification(client):
    response = post(client, "/invocations", {"images": [b64(IMAGE)], "classes": ["a", "b"]},
                    Accept="application/x-npy")
    assert response.status_code == 406 and response.get_json()["error"]["code"] == "not_acceptable"


def test_json_request_can_be_answered_as_a_json_line(client):
    response = ok(post(client, "/invocations", {"texts": ["a"]}, Accept="application/jsonlines"))
    lines = response.get_data(as_text=True).splitlines()
    assert len(lines) == 1 and "embeddings" in json.loads(lines[0])


def test_custom_attributes_set_options_the_body_leaves_out(client, reference):
    header = {"X-Amzn-SageMaker-Custom-Attributes": "normalize=false,top_k=1"}
    raw = ok(post(client, "/invocations", {"task": "embed", "texts": ["a"]}, **header)).get_json()
    np.testing.assert_allclose(raw["text_embeddings"], reference.texts(["a"], normalize=False), atol=1e-5)
    ranked = ok(post(client, "/invocations", {"task": "rank", "queries": [{"text": "a"}],
                                              "candidates": [{"text": "b"}, {"text": "c"}]}, **header)).get_json()
    assert len(ranked["rankings"][0]) == 1
    # The body's own field wins over the header.
    normalized = ok(post(client, "/invocations", {"task": "embed", "texts": ["a"], "normalize": True},
                         **header)).get_json()
    assert normalized["normalized"] is True


def test_seed_routes_take_only_json(client):
    response = post(client, "/embed", b"\x89PNG", "image/png")
    assert response.status_code == 415


# ---- images by URL (seed 002's img_uri, seed 003's URLs) ---------------------------------------------------

def test_seed002_rank_example_with_an_img_uri(url_client, reference):
    from static_server import serve_files

    tshirt = encode(pattern(3), "JPEG", quality=95)
    with serve_files({"/assets/test_tshirt.jpg": tshirt}, "image/jpeg") as base:
        body = {"queries": [{"img_uri": f"{base}/assets/test_tshirt.jpg"}],
                "candidates": [{"text": t} for t in SEED002_CANDIDATES]}
        answer = ok(post(url_client, "/rank", body)).get_json()
    _, probabilities = reference.rank(reference.images([tshirt], draft_size=32), reference.texts(SEED002_CANDIDATES))
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-4)


def test_seed003_example_with_image_urls(url_client, reference):
    from static_server import serve_files

    photos = {f"/photo-{i}.png": encode(pattern(40 + i)) for i in range(2)}
    classes = [["person", 1], ["bag", 0], ["person with a bag", 1], ["woman riding a horse", 1],
               ["woman with a bag", 1], ["woman with black shirt and a bag", 1]]
    with serve_files(photos) as base:
        answers = ok(post(url_client, "/invocations", {"images": [f"{base}{p}" for p in photos],
                                                       "classes": classes})).get_json()
    expected = reference.classify_probabilities(list(photos.values()), [c[0] for c in classes])
    for answer, probabilities in zip(answers, expected):
        assert answer["confidence"] == pytest.approx(probabilities.max(), abs=1e-4)
        selected = [i for i in np.argsort(-probabilities)[:3] if probabilities.max() - probabilities[i] <= 0.02]
        assert answer["classification"] == int(any(classes[i][1] for i in selected))


def test_image_urls_to_this_machine_are_refused_without_the_allow_list(client):
    from static_server import serve_files

    with serve_files({"/cat.png": encode(IMAGE)}) as base:
        response = post(client, "/rank", {"queries": [{"img_uri": f"{base}/cat.png"}],
                                          "candidates": [{"text": "cat"}]})
    assert response.status_code == 403
    assert response.get_json()["error"] == {
        "code": "image_url_forbidden", "field": "queries[0].img_uri",
        "message": response.get_json()["error"]["message"]}


def test_an_unreachable_image_url_is_a_400_naming_the_item(url_client):
    from static_server import serve_files

    with serve_files({}) as base:
        response = post(url_client, "/invocations", {"task": "embed", "images": [f"{base}/missing.png"]})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "image_fetch_failed"
    assert response.get_json()["error"]["field"] == "images[0]"


def test_raw_image_body_honours_normalize_from_custom_attributes(client, reference):
    data = encode(IMAGE, "PNG")
    answer = ok(post(client, "/invocations", data, "image/png",
                     **{"X-Amzn-SageMaker-Custom-Attributes": "normalize=false"})).get_json()
    np.testing.assert_allclose(answer["image_embeddings"], reference.images([data], normalize=False), atol=1e-5)
    assert answer["normalized"] is False
