"""The HTTP API on a tiny real model (Flask test client): every task's numbers equal open_clip's own."""
from __future__ import annotations

import json

import numpy as np
import pytest

from http_helper import post
from images import b64, data_uri, pattern

IMAGES = [pattern(seed) for seed in range(3)]
TEXTS = ["a photo of a cat", "a red car", "a bowl of soup"]
LABELS = ["cat", "dog", "red square", "car", "tree", "a bowl of soup"]


def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    return response.get_json()["error"]


# ---- embeddings -------------------------------------------------------------------------------------------

def test_embed_texts_and_images_equal_open_clip_normalized(client, reference):
    response = post(client, "/invocations", {"task": "embed", "texts": TEXTS, "images": [b64(i) for i in IMAGES]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["task"] == "embed" and body["dim"] == 32 and body["normalized"] is True
    np.testing.assert_allclose(body["text_embeddings"], reference.texts(TEXTS), atol=1e-5)
    np.testing.assert_allclose(body["image_embeddings"], reference.images(IMAGES), atol=1e-5)
    assert np.allclose(np.linalg.norm(body["text_embeddings"], axis=1), 1.0, atol=1e-5)


def test_embed_without_normalization_returns_raw_open_clip_features(client, reference):
    body = post(client, "/invocations", {"task": "embed", "texts": TEXTS[:2], "normalize": False}).get_json()
    np.testing.assert_allclose(body["text_embeddings"], reference.texts(TEXTS[:2], normalize=False), atol=1e-5)
    assert body["image_embeddings"] == [] and body["normalized"] is False


def test_embed_accepts_data_uris_and_charset_in_content_type(client, reference):
    response = client.post("/invocations", data=json.dumps({"task": "embed", "images": [data_uri(IMAGES[1])]}),
                           content_type="application/json; charset=utf-8")
    np.testing.assert_allclose(response.get_json()["image_embeddings"], reference.images([IMAGES[1]]), atol=1e-5)


def test_embed_of_many_items_spans_several_model_batches_in_order(client, reference):
    images = [pattern(seed) for seed in range(20)]  # the fixture's max batch is 8
    body = post(client, "/invocations", {"task": "embed", "images": [b64(i) for i in images]}).get_json()
    np.testing.assert_allclose(body["image_embeddings"], reference.images(images), atol=1e-5)


# ---- ranking ----------------------------------------------------------------------------------------------

def test_rank_images_against_text_candidates_matches_open_clip(client, reference):
    response = post(client, "/invocations", {"task": "rank", "queries": [{"image": b64(i)} for i in IMAGES],
                             "candidates": [{"text": t} for t in TEXTS]})
    body = response.get_json()
    cosine, probabilities = reference.rank(reference.images(IMAGES), reference.texts(TEXTS))
    np.testing.assert_allclose(body["cosine_similarities"], cosine, atol=1e-5)
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-4)
    assert body["scoring"] == "softmax"
    np.testing.assert_allclose(np.sum(body["probabilities"], axis=1), 1.0, atol=1e-9)
    assert body["rankings"] == np.argsort(-probabilities, axis=1, kind="stable").tolist()


def test_rank_texts_against_image_candidates_is_the_reverse_direction(client, reference):
    body = post(client, "/invocations", {"task": "rank", "queries": [{"text": t} for t in TEXTS[:2]],
                         "candidates": [{"image": b64(i)} for i in IMAGES], "top_k": 2}).get_json()
    cosine, probabilities = reference.rank(reference.texts(TEXTS[:2]), reference.images(IMAGES))
    np.testing.assert_allclose(body["cosine_similarities"], cosine, atol=1e-5)
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-4)
    assert [len(r) for r in body["rankings"]] == [2, 2]


def test_rank_with_a_logit_bias_model_scores_each_pair_with_a_sigmoid(tiny_siglip_dir, siglip_reference):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.engine import build_engine
    from clip_sagemaker.readiness import EngineSlot
    from clip_sagemaker.worker_layout import Layout
    from clip_sagemaker.settings import Settings

    settings = Settings(model_dir=str(tiny_siglip_dir), model_dir_explicit=True, precision="fp32")
    engine = build_engine(settings, Layout(workers=1, torch_threads=1, gpus=0))
    try:
        client = create_app(settings, EngineSlot(engine)).test_client()
        body = post(client, "/invocations", {"task": "rank", "queries": [{"image": b64(IMAGES[0])}],
                             "candidates": [{"text": t} for t in TEXTS]}).get_json()
    finally:
        engine.stop()
    assert siglip_reference.logit_bias == pytest.approx(-10.0)
    cosine, probabilities = siglip_reference.rank(siglip_reference.images(IMAGES[:1]), siglip_reference.texts(TEXTS))
    assert body["scoring"] == "sigmoid"
    np.testing.assert_allclose(body["probabilities"], probabilities, rtol=1e-4, atol=1e-9)
    # Independent per pair: sigmoid scores do not sum to one.
    assert abs(sum(body["probabilities"][0]) - 1.0) > 1e-3


# ---- classification ---------------------------------------------------------------------------------------

def _separated(probabilities: np.ndarray, min_logit_gap: float = 1e-2) -> None:
    """The inputs were chosen so that the top classes are well apart: orderings cannot flip on rounding.

    Float error lives in the logits, so the gap is measured there (log of the probability ratio).
    """
    for row in probabilities:
        top = np.log(np.sort(row)[::-1][:4])
        assert np.all(-np.diff(top) > min_logit_gap), f"test inputs not well separated: {np.exp(top)}"


def test_seed003_labelled_classification_matches_open_clip_and_original_semantics(client, reference):
    classes = [[label, i % 2] for i, label in enumerate(LABELS)]
    response = post(client, "/invocations", {"images": [b64(i) for i in IMAGES], "classes": classes})
    assert response.status_code == 200
    answers = response.get_json()
    expected = reference.classify_probabilities(IMAGES, LABELS)
    _separated(expected)
    assert len(answers) == len(IMAGES)
    for answer, probabilities in zip(answers, expected):
        assert set(answer) == {"classification", "confidence", "prompts"}
        order = np.argsort(-probabilities)[:3]
        indices, labels, probs = answer["prompts"]
        assert indices == order.tolist()
        assert labels == [LABELS[i] for i in order]
        np.testing.assert_allclose(probs, probabilities[order], atol=1e-4)
        assert answer["confidence"] == pytest.approx(probabilities.max(), abs=1e-4)
        selected = [i for i in order if probabilities.max() - probabilities[i] <= 0.02]
        assert answer["classification"] == int(any(classes[i][1] for i in selected))


def test_seed003_plain_string_classes_answer_only_the_prompts_triple(client, reference):
    answers = post(client, "/invocations", {"images": [b64(IMAGES[0])], "classes": LABELS}).get_json()
    expected = reference.classify_probabilities(IMAGES[:1], LABELS)[0]
    order = np.argsort(-expected)[:3]
    assert answers[0][0] == order.tolist()
    assert answers[0][1] == [LABELS[i] for i in order]
    np.testing.assert_allclose(answers[0][2], expected[order], atol=1e-4)


def test_seed003_defaults_can_be_overridden_in_the_request(client, reference):
    body = {"images": [b64(IMAGES[2])], "classes": [[l, 1] for l in LABELS[:4]], "prompt_template": "{label}",
            "top_k": 4, "margin": 0.5, "logit_scale": 10}
    answer = post(client, "/invocations", body).get_json()[0]
    expected = reference.classify_probabilities(IMAGES[2:], LABELS[:4], template="{}", scale=10.0)[0]
    np.testing.assert_allclose(answer["prompts"][2], np.sort(expected)[::-1], atol=1e-4)
    assert len(answer["prompts"][0]) == 4


def test_general_classify_reports_label_decision_and_selected_classes(client, reference):
    classes = [[label, 0] for label in LABELS]
    classes[3][1] = 1
    body = post(client, "/invocations", {"task": "classify", "images": [b64(i) for i in IMAGES], "classes": classes,
                         "margin": 1.0, "top_k": len(LABELS)}).get_json()
    expected = reference.classify_probabilities(IMAGES, LABELS)
    for result, probabilities in zip(body["results"], expected):
        assert result["label"] == LABELS[int(np.argmax(probabilities))]
        assert sorted(result["selected"]) == list(range(len(LABELS)))  # margin 1 selects every top class
        assert result["classification"] == 1  # ... including class 3, whose id is truthy


@pytest.mark.parametrize("task", [{}, {"task": "classify"}])
def test_classes_within_the_margin_below_the_top_k_do_not_decide(client, reference, task):
    # A tiny logit scale makes every class's probability about 1/6: all within the 0.02 margin. Only the
    # two classes ranked below the top 3 have a truthy id, so seed 003's rule decides 0 (all classes: 1).
    expected = reference.classify_probabilities(IMAGES[:1], LABELS, scale=0.01)[0]
    assert expected.max() - expected.min() <= 0.02
    order = np.argsort(-expected)
    classes = [[label, int(i in order[4:])] for i, label in enumerate(LABELS)]
    body = post(client, "/invocations", {**task, "images": [b64(IMAGES[0])], "classes": classes,
                                         "logit_scale": 0.01}).get_json()
    answer = body["results"][0] if task else body[0]
    assert answer["prompts"][0] == order[:3].tolist()
    assert answer["classification"] == 0
    if task:
        assert answer["selected"] == order[:3].tolist()


# ---- health -----------------------------------------------------------------------------------------------

def test_ping_is_200_once_the_engine_is_ready(client):
    response = client.get("/ping")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_ping_is_503_and_invocations_answer_not_ready_while_the_model_loads(settings):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    client = create_app(settings, EngineSlot()).test_client()
    assert client.get("/ping").status_code == 503
    error = error_of(post(client, "/invocations", {"task": "embed", "texts": ["x"]}), 503)
    assert error["code"] == "not_ready"


def test_every_response_carries_a_request_id(client):
    assert len(client.get("/ping").headers["X-Request-Id"]) == 32
    assert post(client, "/invocations", {"task": "x"}, **{"X-Request-Id": "abc"}).headers["X-Request-Id"] == "abc"


# ---- client errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, code, field", [
    ({"task": "translate"}, 400, "unknown_task", "task"),
    ({"task": "embed"}, 400, "missing_field", "texts"),
    ({"task": "embed", "texts": "a cat"}, 400, "invalid_field", "texts"),
    ({"task": "embed", "texts": ["ok", 7]}, 400, "invalid_field", "texts[1]"),
    ({"task": "embed", "texts": ["ok", "  "]}, 400, "empty_text", "texts[1]"),
    ({"task": "embed", "texts": ["ok"], "normalise": False}, 400, "unknown_field", "normalise"),
    ({"task": "embed", "texts": ["ok"], "normalize": "yes"}, 400, "invalid_field", "normalize"),
    ({"task": "embed", "images": ["aGVsbG8gd29ybGQ="]}, 400, "invalid_image", "images[0]"),
    ({"task": "embed", "images": ["not base64 at all!"]}, 400, "invalid_base64", "images[0]"),
    ({"task": "embed", "images": ["data:text/plain;base64,aGVsbG8="]}, 400, "invalid_image", "images[0]"),
    ({"task": "rank", "queries": [{"text": "a"}], "candidates": [{"txt": "b"}]}, 400, "invalid_field",
     "candidates[0]"),
    ({"task": "rank", "queries": [], "candidates": [{"text": "b"}]}, 400, "empty_list", "queries"),
    ({"task": "classify", "images": ["x"], "classes": [["a", 1], "b"]}, 400, "invalid_field", "classes[1]"),
    ({"task": "classify", "images": ["x"], "classes": ["a"], "top_k": 0}, 400, "invalid_field", "top_k"),
    ({"task": "classify", "images": ["x"], "classes": ["a"], "prompt_template": "a photo"}, 400,
     "invalid_field", "prompt_template"),
    ({"images": [], "classes": ["a"]}, 400, "empty_list", "images"),
    ({"hello": "world"}, 400, "unknown_format", None),
    (42, 400, "unknown_format", None),
    (["a", "list"], 400, "invalid_field", "[0]"),  # a list is seed 002's /encode, whose items are objects
])
def test_client_mistakes_get_a_4xx_naming_the_problem(client, body, status, code, field):
    error = error_of(post(client, "/invocations", body), status)
    assert error["code"] == code
    assert error.get("field") == field
    assert error["message"]


def test_a_bad_image_among_good_ones_names_its_index(client):
    images = [b64(IMAGES[0]), b64(IMAGES[1]), "////", b64(IMAGES[2])]
    error = error_of(post(client, "/invocations", {"task": "embed", "images": images}), 400)
    assert error["field"] == "images[2]"


def test_malformed_json_is_a_400_not_a_500(client):
    response = client.post("/invocations", data=b'{"task": "embed", "texts": [', content_type="application/json")
    assert error_of(response, 400)["code"] == "malformed_json"


def test_empty_body_is_a_400(client):
    assert error_of(client.post("/invocations", data=b"", content_type="application/json"), 400)["code"] == \
        "empty_body"


def test_unsupported_content_type_is_415_and_unproducible_accept_is_406(client):
    response = client.post("/invocations", data=b"a,b", content_type="text/plain")
    assert error_of(response, 415)["code"] == "unsupported_media_type"
    response = post(client, "/invocations", {"task": "embed", "texts": ["x"]}, Accept="text/html")
    assert error_of(response, 406)["code"] == "not_acceptable"


def test_accept_with_wildcards_and_q_values_gets_json(client):
    response = post(client, "/invocations", {"task": "embed", "texts": ["x"]}, Accept="text/html;q=0.9, */*;q=0.1")
    assert response.status_code == 200 and response.content_type == "application/json"


def test_body_over_the_limit_is_413_naming_the_setting(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    small = settings.replace(max_body_bytes=1024)
    client = create_app(small, EngineSlot(engine)).test_client()
    error = error_of(post(client, "/invocations", {"task": "embed", "texts": ["x" * 2000]}), 413)
    assert error["code"] == "body_too_large" and "MAX_BODY_MB" in error["message"]


def test_too_many_items_is_413(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot

    client = create_app(settings.replace(max_items=2), EngineSlot(engine)).test_client()
    error = error_of(post(client, "/invocations", {"task": "embed", "texts": ["a", "b", "c"]}), 413)
    assert error["code"] == "too_many_items" and error["field"] == "texts"


def test_unknown_routes_and_methods_answer_json(client):
    assert error_of(client.get("/nope"), 404)["code"] == "not_found"
    assert error_of(client.get("/invocations"), 405)["code"] == "method_not_allowed"


def test_a_bug_in_our_code_is_a_generic_500_without_a_traceback(settings):
    from clip_sagemaker.app import create_app

    class BrokenSlot:
        def ready(self):
            return True

        def get(self):
            raise RuntimeError("secret internal detail")

    client = create_app(settings, BrokenSlot()).test_client()
    error = error_of(post(client, "/invocations", {"task": "embed", "texts": ["x"]}), 500)
    assert error["code"] == "internal_error" and "secret" not in error["message"]


def test_an_unsafe_client_request_id_is_replaced(client):
    response = post(client, "/invocations", {"task": "x"}, **{"X-Request-Id": "bad id\twith spaces" + "x" * 200})
    assert len(response.headers["X-Request-Id"]) == 32 and " " not in response.headers["X-Request-Id"]


def test_texts_over_the_context_are_truncated_by_default_or_refused_when_asked(settings, engine, reference):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.engine import Engine
    from clip_sagemaker.readiness import EngineSlot

    long_text = "a very long caption " * 40  # about 160 tokens, more than 77
    body = {"task": "embed", "texts": ["short", long_text]}
    truncated = post(create_app(settings, EngineSlot(engine)).test_client(), "/invocations", body).get_json()
    np.testing.assert_allclose(truncated["text_embeddings"], reference.texts(["short", long_text]), atol=1e-5)
    strict_settings = settings.replace(truncate_text=False)
    strict = Engine(engine.model, strict_settings)
    try:
        error = error_of(post(create_app(strict_settings, EngineSlot(strict)).test_client(), "/invocations", body), 400)
    finally:
        strict.stop()
    assert error["code"] == "text_too_long" and "text 1 " in error["message"] and "TEXT_TRUNCATE" in error["message"]


def test_a_base64_image_over_the_byte_limit_is_413_before_decoding(settings, engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.engine import Engine
    from clip_sagemaker.readiness import EngineSlot

    small = settings.replace(max_image_bytes=1000)
    small_engine = Engine(engine.model, small)
    try:
        client = create_app(small, EngineSlot(small_engine)).test_client()
        error = error_of(post(client, "/invocations", {"task": "embed", "images": ["A" * 2000]}), 413)
    finally:
        small_engine.stop()
    assert (error["code"], error["field"]) == ("image_too_large", "images[0]")


def test_each_request_logs_one_json_line_without_its_data(client, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="clip_sagemaker.access"):
        post(client, "/invocations", {"task": "embed", "texts": ["a secret caption"], "images": [b64(IMAGES[0])]},
             **{"X-Request-Id": "req-42"})
        post(client, "/invocations", {"task": "nope"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "clip_sagemaker.access"]
    assert lines[-2]["request_id"] == "req-42" and lines[-2]["status"] == 200 and lines[-2]["items"] == 2
    assert lines[-2]["route"] == "/invocations" and lines[-2]["duration_ms"] >= 0
    assert lines[-1]["status"] == 400 and lines[-1]["error"] == "unknown_task"
    assert all("secret" not in r.getMessage() for r in caplog.records)
