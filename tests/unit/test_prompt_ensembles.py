"""Prompt ensembles (`prompt_templates`) on the tiny model: class weights equal open_clip's
build_zero_shot_classifier, named sets are open_clip's own, a repeated label set costs only the image tower
(the class-weight cache answers), and their mistakes are clear 4xx answers."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from open_clip import build_zero_shot_classifier
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from clip_sagemaker import tasks
from clip_sagemaker.template_sets import TEMPLATE_SETS, as_format_string
from http_helper import post
from images import b64, pattern
from reference import softmax

IMAGES = [pattern(seed) for seed in range(2)]
LABELS = ["cat", "dog", "red square", "car"]
TEMPLATES = ["a photo of a {label}.", "a drawing of a {}.", "{label}, seen from above"]
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def open_clip_weights(reference, labels, templates) -> np.ndarray:
    """build_zero_shot_classifier itself, on the reference model: [labels, dim]."""
    with torch.no_grad():
        weights = build_zero_shot_classifier(reference.model, reference.tokenizer, labels, templates)
    return weights.T.numpy().astype(np.float64)


def expected_probabilities(reference, labels, templates, scale=100.0) -> np.ndarray:
    return softmax(scale * reference.images(IMAGES) @ open_clip_weights(reference, labels, templates).T)


def classify(client, labels, **options):
    body = {"task": "classify", "images": [b64(i) for i in IMAGES], "classes": labels, **options}
    response = post(client, "/invocations", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["prompts"] for r in response.get_json()["results"]]


def probabilities_of(prompts_triples, n_labels) -> np.ndarray:
    """The full probability rows of answers that listed every class (top_k = number of classes)."""
    rows = np.zeros((len(prompts_triples), n_labels))
    for row, (indices, _, probabilities) in zip(rows, prompts_triples):
        row[indices] = probabilities
    return rows


@pytest.mark.parametrize("templates, open_clip_templates", [
    (TEMPLATES, [t.replace("{label}", "{}") for t in TEMPLATES]),
    ("openai_imagenet", OPENAI_IMAGENET_TEMPLATES),
    ("simple_imagenet", SIMPLE_IMAGENET_TEMPLATES),
])
def test_class_weights_equal_build_zero_shot_classifier(engine, reference, templates, open_clip_templates):
    encoder = engine.for_request(time.monotonic() + 60)
    resolved = encoder.template_set(templates) if isinstance(templates, str) else tuple(templates)
    ours = tasks.build_class_weights(LABELS, resolved, encoder)
    assert ours.dtype == np.float32 and ours.shape == (len(LABELS), 32)
    np.testing.assert_allclose(ours, open_clip_weights(reference, LABELS, open_clip_templates), atol=1e-5)


def test_named_sets_are_open_clips_templates_as_format_strings():
    assert len(TEMPLATE_SETS["openai_imagenet"]) == 80 and len(TEMPLATE_SETS["simple_imagenet"]) == 7
    for name, functions in (("openai_imagenet", OPENAI_IMAGENET_TEMPLATES),
                            ("simple_imagenet", SIMPLE_IMAGENET_TEMPLATES)):
        for template, function in zip(TEMPLATE_SETS[name], functions):
            for label in ("dog", "a {label} with {braces}", "x}{"):
                assert tasks.render_prompt(template, label) == function(label)


def test_a_template_with_braces_of_its_own_keeps_them():
    template = as_format_string(lambda c: f"{{{c}}} in braces {{}}")
    assert tasks.render_prompt(template, "cat") == "{cat} in braces {}"


@pytest.mark.parametrize("templates", [TEMPLATES, "openai_imagenet"])
def test_an_ensemble_classification_equals_open_clips_zero_shot_classifier(client, reference, templates):
    open_clip_templates = [t.replace("{label}", "{}") for t in TEMPLATES] if templates == TEMPLATES \
        else OPENAI_IMAGENET_TEMPLATES
    expected = expected_probabilities(reference, LABELS, open_clip_templates, scale=1.0)
    answers = classify(client, LABELS, prompt_templates=templates, logit_scale=1, top_k=len(LABELS))
    np.testing.assert_allclose(probabilities_of(answers, len(LABELS)), expected, atol=1e-5)


def test_seed003_takes_a_set_name_in_custom_attributes_and_a_list_in_the_body(client):
    body = {"images": [b64(i) for i in IMAGES], "classes": [[label, 1] for label in LABELS]}
    by_name = post(client, "/invocations", body, **{CUSTOM_ATTRIBUTES: "prompt_templates=simple_imagenet"})
    by_list = post(client, "/invocations", {**body, "prompt_templates": list(TEMPLATE_SETS["simple_imagenet"])})
    single = post(client, "/invocations", body)
    assert by_name.status_code == by_list.status_code == 200
    assert by_name.get_json() == by_list.get_json()
    assert by_name.get_json() != single.get_json()  # the ensemble was used, not the default template


def test_prompt_template_in_the_body_wins_over_a_set_in_the_header(client):
    body = {"images": [b64(IMAGES[0])], "classes": LABELS, "prompt_template": "a photo of a {label}"}
    with_header = post(client, "/invocations", body, **{CUSTOM_ATTRIBUTES: "prompt_templates=openai_imagenet"})
    assert with_header.get_json() == post(client, "/invocations", body).get_json()


def test_one_template_in_a_list_is_the_single_template_answer(client):
    one = classify(client, LABELS, prompt_template="a drawing of a {label}")
    listed = classify(client, LABELS, prompt_templates=["a drawing of a {label}"])
    np.testing.assert_allclose(probabilities_of(listed, 4), probabilities_of(one, 4), atol=1e-6)


def test_a_repeated_ensemble_runs_one_image_forward_and_no_text_lookup(client, engine, reference):
    labels = ["lighthouse", "harbour", "fishing boat"]  # not classified by any other test: a first miss
    body = {"task": "classify", "images": [b64(IMAGES[0])], "classes": labels, "prompt_templates": "openai_imagenet"}
    first = post(client, "/invocations", body).get_json()
    cache, text_cache, batches = engine.class_weights.stats(), engine.text_cache.stats(), engine.loop.batches_run
    again = post(client, "/invocations", body).get_json()
    assert again == first
    assert engine.loop.batches_run == batches + 1  # the image's forward pass, and nothing else
    assert engine.text_cache.stats() == text_cache  # no prompt was even looked up
    assert engine.class_weights.stats()["hits"] == cache["hits"] + 1
    assert engine.class_weights.stats()["misses"] == cache["misses"]
    expected = expected_probabilities(reference, labels, OPENAI_IMAGENET_TEMPLATES)[0]
    assert again["results"][0]["confidence"] == pytest.approx(expected.max(), abs=1e-4)


def test_the_cache_tells_template_sets_and_label_orders_apart(client, engine):
    labels = ["meadow", "glacier"]
    misses = engine.class_weights.stats()["misses"]
    classify(client, labels, prompt_templates="simple_imagenet")
    classify(client, labels, prompt_templates="openai_imagenet")
    classify(client, labels[::-1], prompt_templates="openai_imagenet")
    classify(client, labels, prompt_templates=list(TEMPLATE_SETS["openai_imagenet"]))  # the same as the name
    assert engine.class_weights.stats()["misses"] == misses + 3


def error_of(client, body, status, **headers):
    response = post(client, "/invocations", {"images": [b64(IMAGES[0])], "classes": LABELS, **body}, **headers)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def test_too_many_prompts_is_a_413_naming_the_setting(client):
    labels = [f"class {i}" for i in range(60)]  # 60 x 80 = 4800 prompts, above the default 4096
    error = error_of(client, {"classes": labels, "prompt_templates": "openai_imagenet"}, 413)
    assert error["code"] == "too_many_prompts" and error["field"] == "prompt_templates"
    assert "MAX_CLASSIFY_PROMPTS" in error["message"] and "4800" in error["message"]


@pytest.mark.parametrize("body, field, words", [
    ({"prompt_templates": "imagenet_80"}, "prompt_templates", "openai_imagenet (80 templates)"),
    ({"prompt_templates": ""}, "prompt_templates", "template set"),
    ({"prompt_templates": []}, "prompt_templates", "must not be empty"),
    ({"prompt_templates": ["a {label}", "no placeholder"]}, "prompt_templates[1]", "{label}"),
    ({"prompt_templates": ["a {label}", 3]}, "prompt_templates[1]", "a number"),
    ({"prompt_templates": {"a": 1}}, "prompt_templates", "a list"),
    ({"prompt_templates": ["a {label}"], "prompt_template": "b {label}"}, "prompt_templates", "not both"),
])
def test_bad_prompt_templates_are_400s_naming_the_field(client, body, field, words):
    error = error_of(client, body, 400)
    assert error["field"] == field and words in error["message"]


def test_an_unknown_set_named_in_the_header_is_a_400(client):
    error = error_of(client, {}, 400, **{CUSTOM_ATTRIBUTES: "prompt_templates=nope"})
    assert error["code"] == "unknown_template_set"


def test_the_openapi_document_names_every_template_set():
    import json
    from pathlib import Path

    document = json.loads((Path(tasks.__file__).parent / "openapi.json").read_text())
    by_name, _ = document["components"]["schemas"]["PromptTemplates"]["oneOf"]
    assert by_name["enum"] == list(TEMPLATE_SETS)
