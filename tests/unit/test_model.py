"""Model loading through the production path, for each layout users ship their weights in."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from images import pattern

from clip_sagemaker.model import IMAGE, TEXT, ModelLoadError, load_model as _load_model, pick_device
from clip_sagemaker.model_source import ModelSource, resolve_model_source
from clip_sagemaker.settings import Settings

TEXTS = ["a cat", "a dog on a sofa"]
IMAGES = [pattern(seed) for seed in range(2)]


def encode_both(model):
    texts = model.encode(TEXT, list(model.tokenize(TEXTS)))
    images = model.encode(IMAGE, [model.prepare_image(i) for i in IMAGES])
    return texts, images


def load_model(source, **options):
    # Value tests prove exactness against open_clip's fp32, so they pin fp32 on every CPU.
    return _load_model(source, **{"precision": "fp32", **options})


def assert_same_as_reference(model, reference):
    texts, images = encode_both(model)
    np.testing.assert_allclose(texts, reference.texts(TEXTS, normalize=False), atol=1e-5)
    np.testing.assert_allclose(images, reference.images(IMAGES, normalize=False), atol=1e-5)


def test_model_dir_with_safetensors_loads_the_saved_weights(tiny_model_dir, reference):
    source = resolve_model_source(Settings(model_dir=str(tiny_model_dir), model_dir_explicit=True))
    model = load_model(source)
    assert_same_as_reference(model, reference)
    assert model.info.embed_dim == 32 and model.info.image_size == (32, 32)
    assert (model.info.device, model.info.precision) == ("cpu", "fp32")
    assert model.logit_scale == pytest.approx(reference.logit_scale) and model.logit_bias is None


def test_model_dir_with_pytorch_bin_weights_loads_the_same_model(tiny_model_dir, reference, tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", directory)
    torch.save(load_file(str(tiny_model_dir / "open_clip_model.safetensors")),
               directory / "open_clip_pytorch_model.bin")
    source = resolve_model_source(Settings(model_dir=str(directory), model_dir_explicit=True))
    assert "open_clip_pytorch_model.bin" in source.description
    assert_same_as_reference(load_model(source), reference)


def test_checkpoint_file_named_by_model_name_and_pretrained_loads(tiny_model_dir, reference, tmp_path):
    # "tiny-test" was registered with open_clip when the fixture built it, like a built-in architecture.
    checkpoint = tmp_path / "epoch_32.pt"
    torch.save({"state_dict": load_file(str(tiny_model_dir / "open_clip_model.safetensors"))}, checkpoint)
    settings = Settings(model_dir=str(tmp_path / "no-model-here"), model_name="tiny-test",
                        model_pretrained=str(checkpoint))
    source = resolve_model_source(settings)
    assert source.pretrained == str(checkpoint)
    assert_same_as_reference(load_model(source), reference)


def test_siglip_style_model_exposes_its_logit_bias(tiny_siglip_dir, siglip_reference):
    model = load_model(resolve_model_source(Settings(model_dir=str(tiny_siglip_dir), model_dir_explicit=True)))
    assert model.logit_bias == pytest.approx(siglip_reference.logit_bias)


def test_weights_that_do_not_fit_the_config_fail_to_load(tiny_model_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    config = (directory / "open_clip_config.json").read_text().replace('"embed_dim": 32', '"embed_dim": 48')
    (directory / "open_clip_config.json").write_text(config)
    with pytest.raises(ModelLoadError, match=str(directory)):
        load_model(resolve_model_source(Settings(model_dir=str(directory), model_dir_explicit=True)))


def test_a_pretrained_tag_that_cannot_be_fetched_fails_instead_of_random_weights():
    # HF_HUB_OFFLINE=1 in tests: the download fails, and must not turn into a random model.
    with pytest.raises(ModelLoadError, match="laion2b_s34b_b79k"):
        load_model(ModelSource("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-32 with pretrained tag laion2b_s34b_b79k"))


def test_a_failed_download_names_the_ways_to_start_without_network_and_logs_each_line_once():
    import logging

    with pytest.raises(ModelLoadError) as caught:
        load_model(ModelSource("ViT-B-32", "laion2b_s34b_b79k", "ViT-B-32 with pretrained tag laion2b_s34b_b79k"))
    for way in ("MODEL_DIR=DIR", "HF_HUB_OFFLINE=1", "MODEL_PRETRAINED=none"):
        assert way in str(caught.value)
    # huggingface_hub's own handler printed each of its lines a second time, beside ours.
    assert logging.getLogger("huggingface_hub").handlers == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    assert pick_device(None) == "cpu"
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        pick_device("cuda")


def test_images_are_preprocessed_in_numpy_bit_for_bit_like_open_clip(tiny_model_dir):
    # Request threads must not run torch ops (each would start an OpenMP team competing with the model
    # loop's forward pass), so the ToTensor + Normalize tail runs in numpy: it must equal open_clip's.
    import open_clip
    from clip_sagemaker.model import _NumpyTail

    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")
    model = load_model(resolve_model_source(Settings(model_dir=str(tiny_model_dir), model_dir_explicit=True)))
    assert isinstance(model._preprocess, _NumpyTail)
    for seed in range(4):
        image = pattern(seed, size=(97, 61))
        np.testing.assert_array_equal(model.prepare_image(image).numpy(), preprocess(image).numpy())
