"""Which precision runs where (precision.py), and that every path agrees with open_clip's fp32 at bf16.

The bf16 value tests need a CPU where AMX is usable (elsewhere bf16 runs, but too slowly to test on
full-size models) and skip with that reason; their tolerance is a min cosine of 0.999 to fp32 open_clip on
the same weights. PNG inputs, so that decoding is not what differs.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from clip_sagemaker.precision import PrecisionError, choose_precision, cpu_has_usable_amx
from http_helper import post
from images import b64, pattern
from reference import cosine

AMX = cpu_has_usable_amx()
needs_amx = pytest.mark.skipif(not AMX, reason="this CPU has no usable AMX: bf16 is only fast (and the "
                                               "default) where it has")
IMAGES = [pattern(seed) for seed in range(20, 26)]
TEXTS = ["a photo of a cat", "a diagram of a bridge", "two dogs playing in the snow", "x"]
LABELS = ["cat", "dog", "bridge", "snow", "car"]
MIN_COSINE = 0.999


def test_cuda_defaults_to_fp16_and_honours_an_explicit_precision():
    assert choose_precision(None, "cuda:0").precision == "fp16"
    assert choose_precision("fp32", "cuda").precision == "fp32"
    assert choose_precision("bf16", "cuda").precision == "bf16"


def test_a_cpu_with_amx_defaults_to_bf16_and_one_without_to_fp32():
    with_amx = choose_precision(None, "cpu", has_amx=lambda: True)
    without = choose_precision(None, "cpu", has_amx=lambda: False)
    assert (with_amx.precision, without.precision) == ("bf16", "fp32")
    assert "AMX" in with_amx.reason and "without AMX" in without.reason


def test_an_explicit_cpu_precision_is_honoured_and_slow_bf16_is_said(caplog):
    assert choose_precision("fp32", "cpu", has_amx=lambda: True).precision == "fp32"
    with caplog.at_level(logging.WARNING, logger="clip_sagemaker.precision"):
        choice = choose_precision("bf16", "cpu", has_amx=lambda: False)
    assert choice.precision == "bf16" and "slow" in choice.reason
    assert "slower than fp32" in caplog.text


def test_fp16_on_a_cpu_is_refused_with_what_to_use_instead():
    with pytest.raises(PrecisionError, match="PRECISION=fp16 cannot run on a CPU.*bf16.*fp32"):
        choose_precision("fp16", "cpu", has_amx=lambda: True)


def test_amx_detection_agrees_with_torchs_own_view():
    import torch
    assert AMX == (torch.cpu._is_amx_tile_supported() and torch.cpu._init_amx())


# ---- bf16 through the production path, against open_clip fp32 ---------------------------------------------

@pytest.fixture(scope="module")
def bf16_engine(settings):
    from clip_sagemaker.engine import build_engine
    from clip_sagemaker.worker_layout import Layout
    engine = build_engine(settings.replace(precision="bf16"), Layout(workers=1, torch_threads=1, gpus=0))
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def bf16_client(settings, bf16_engine):
    from clip_sagemaker.app import create_app
    from clip_sagemaker.readiness import EngineSlot
    return create_app(settings.replace(precision="bf16"), EngineSlot(bf16_engine)).test_client()


def _answer(client, body):
    """The JSON answer to a POST /invocations that must succeed."""
    response = post(client, "/invocations", body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@needs_amx
def test_bf16_embeddings_of_both_towers_agree_with_fp32_open_clip(bf16_client, reference):
    body = _answer(bf16_client, {"task": "embed", "texts": TEXTS, "images": [b64(i) for i in IMAGES]})
    assert cosine(body["text_embeddings"], reference.texts(TEXTS)).min() >= MIN_COSINE
    assert cosine(body["image_embeddings"], reference.images(IMAGES)).min() >= MIN_COSINE
    assert bf16_client.get("/info").get_json()["precision"] == "bf16"


@needs_amx
def test_bf16_trimmed_and_padded_text_paths_agree(tiny_model_dir):
    from clip_sagemaker.modality import TEXT
    from clip_sagemaker.model import load_model
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings
    source = resolve_model_source(Settings(model_dir=str(tiny_model_dir), model_dir_explicit=True))
    trimmed, padded = load_model(source, precision="bf16"), load_model(source, precision="bf16", trim_text=False)
    assert trimmed.text_tower is not None
    rows = list(trimmed.tokenize(TEXTS))
    assert cosine(trimmed.encode(TEXT, rows), padded.encode(TEXT, rows)).min() >= 0.9999


@needs_amx
def test_bf16_rank_and_classify_agree_with_fp32_open_clip(bf16_client, reference):
    images = [b64(i) for i in IMAGES[:3]]
    ranked = _answer(bf16_client, {"task": "rank", "queries": [{"image": i} for i in images],
                                 "candidates": [{"text": t} for t in TEXTS]})
    expected_cosine, _ = reference.rank(reference.images(IMAGES[:3]), reference.texts(TEXTS))
    np.testing.assert_allclose(ranked["cosine_similarities"], expected_cosine, atol=5e-3)
    answers = _answer(bf16_client, {"images": images, "classes": [[label, i] for i, label in enumerate(LABELS)]})
    expected = reference.classify_probabilities(IMAGES[:3], LABELS)
    for answer, row in zip(answers, expected):
        indices, _, probabilities = answer["prompts"]
        np.testing.assert_allclose(probabilities, row[indices], atol=0.02)


@needs_amx
def test_bf16_text_cache_serves_the_vectors_it_computed(bf16_client, bf16_engine):
    first = _answer(bf16_client, {"task": "embed", "texts": TEXTS})["text_embeddings"]
    hits = bf16_engine.text_cache.hits
    again = _answer(bf16_client, {"task": "embed", "texts": TEXTS})["text_embeddings"]
    assert bf16_engine.text_cache.hits - hits == len(TEXTS)
    np.testing.assert_array_equal(first, again)


@needs_amx
def test_bf16_batch_split_after_out_of_memory_gives_the_same_vectors(bf16_engine, monkeypatch):
    import torch
    from clip_sagemaker.modality import IMAGE
    model = bf16_engine.model
    rows = [model.prepare_image(i) for i in IMAGES]
    whole = model.encode(IMAGE, rows)
    forward = model._forward

    def tight_memory(modality, batch):
        if len(batch) > 2:
            raise torch.OutOfMemoryError("pretend")
        return forward(modality, batch)

    monkeypatch.setattr(model, "_forward", tight_memory)
    split = bf16_engine.for_request(time.monotonic() + 30).encode_rows(IMAGE, rows)
    assert cosine(split, whole).min() >= 0.999
