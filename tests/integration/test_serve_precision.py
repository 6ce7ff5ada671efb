"""Precision through the real ./serve (which one it picks, and a refusal at start-up), and the full-size
ViT-B-32 at bf16 against open_clip's fp32 (min cosine 0.999; needs a CPU where AMX is usable)."""
from __future__ import annotations

import pytest

from clip_sagemaker.precision import cpu_has_usable_amx
from http_helper import get
from images import pattern
from reference import cosine

AMX = cpu_has_usable_amx()
needs_amx = pytest.mark.skipif(not AMX, reason="this CPU has no usable AMX: bf16 is only fast (and the "
                                               "default) where it has")
TEXTS = ["a photo of a cat", "a diagram of a bridge", "two dogs playing in the snow", "x"]
MIN_COSINE = 0.999


def test_fp16_on_a_cpu_stops_serve_at_start_up_with_a_clear_message(serve, tiny_model_dir):
    srv = serve({"MODEL_DIR": str(tiny_model_dir), "PRECISION": "fp16", "DEVICE": "cpu"}, wait_ready=False)
    assert srv.wait_exit() == 2
    assert "serve: cannot start: PRECISION=fp16 cannot run on a CPU" in srv.log()


def test_serve_picks_the_precision_for_this_cpu_and_says_why(serve, tiny_model_dir):
    srv = serve({"MODEL_DIR": str(tiny_model_dir), "PRECISION": ""})
    info = get(srv, "/info").json()
    expected = ("bf16", "the default on a CPU with AMX") if AMX else ("fp32", "the default on a CPU without AMX")
    assert (info["precision"], info["precision_reason"]) == expected
    assert f"({expected[0]}: {expected[1]})" in srv.log()


@needs_amx
def test_full_size_vit_b_32_at_bf16_agrees_with_fp32_open_clip(tmp_path_factory):
    from clip_sagemaker.model import load_model
    from clip_sagemaker.model_files import build_model_dir
    from clip_sagemaker.modality import IMAGE, TEXT
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings
    from reference import Reference

    directory = build_model_dir(tmp_path_factory.mktemp("vit-b-32") / "model", "ViT-B-32", seed=0)
    model = load_model(resolve_model_source(Settings(model_dir=str(directory), model_dir_explicit=True)),
                       precision="bf16")
    reference = Reference(f"local-dir:{directory}")
    images = [pattern(seed, size=(320, 240)) for seed in range(8)]
    served_images = model.encode(IMAGE, [model.prepare_image(i) for i in images])
    served_texts = model.encode(TEXT, list(model.tokenize(TEXTS)))
    assert cosine(served_images, reference.images(images, normalize=False)).min() >= MIN_COSINE
    assert cosine(served_texts, reference.texts(TEXTS, normalize=False)).min() >= MIN_COSINE
