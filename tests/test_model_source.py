"""Where the model comes from: model directory, then MODEL_NAME + MODEL_PRETRAINED, with clear errors."""
from __future__ import annotations

import pytest

from clip_sagemaker.model_source import CONFIG_FILE, WEIGHT_FILES, ModelSourceError, resolve_model_source
from clip_sagemaker.settings import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PRETRAINED, Settings


def _model_dir(root, *files):
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).write_bytes(b"")
    return root


@pytest.mark.parametrize("weights", WEIGHT_FILES)
def test_complete_model_dir_wins_over_name_and_pretrained(tmp_path, weights):
    directory = _model_dir(tmp_path / "model", CONFIG_FILE, weights)
    settings = Settings(model_dir=str(directory), model_name="ViT-L-14", model_pretrained="openai")
    source = resolve_model_source(settings)
    assert source.name == f"local-dir:{directory}"
    assert source.pretrained is None
    assert source.random_weights is False
    assert str(directory) in source.description and weights in source.description


def test_complete_model_dir_is_used_whether_or_not_explicit(tmp_path):
    directory = _model_dir(tmp_path / "model", CONFIG_FILE, WEIGHT_FILES[0])
    for explicit in (True, False):
        settings = Settings(model_dir=str(directory), model_dir_explicit=explicit)
        assert resolve_model_source(settings).name == f"local-dir:{directory}"


def test_explicit_model_dir_that_does_not_exist_is_an_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(Settings(model_dir=str(missing), model_dir_explicit=True))
    message = str(caught.value)
    assert str(missing) in message
    assert CONFIG_FILE in message
    assert all(name in message for name in WEIGHT_FILES)
    assert "does not exist" in message


def test_explicit_empty_model_dir_is_an_error_saying_nothing_was_found(tmp_path):
    empty = _model_dir(tmp_path / "empty")
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(Settings(model_dir=str(empty), model_dir_explicit=True))
    message = str(caught.value)
    assert str(empty) in message
    assert CONFIG_FILE in message
    assert "found nothing" in message


def test_explicit_model_dir_error_lists_what_it_did_find(tmp_path):
    directory = _model_dir(tmp_path / "model", "model.safetensors", "README.md")
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(Settings(model_dir=str(directory), model_dir_explicit=True))
    message = str(caught.value)
    assert "README.md" in message and "model.safetensors" in message


def test_absent_default_dir_falls_through_to_model_name_and_pretrained(tmp_path):
    settings = Settings(model_dir=str(tmp_path / "absent"), model_dir_explicit=False,
                        model_name="ViT-B-16", model_pretrained="openai")
    source = resolve_model_source(settings)
    assert (source.name, source.pretrained, source.display_name) == ("ViT-B-16", "openai", "ViT-B-16:openai")
    assert source.description.endswith("ViT-B-16 with pretrained tag openai")
    assert source.random_weights is False


def test_empty_default_dir_falls_through_to_the_defaults(tmp_path):
    settings = Settings(model_dir=str(_model_dir(tmp_path / "model")), model_dir_explicit=False)
    source = resolve_model_source(settings)
    assert source.name == DEFAULT_MODEL_NAME
    assert source.pretrained == DEFAULT_MODEL_PRETRAINED


def test_config_without_weights_is_an_error_even_when_not_explicit(tmp_path):
    directory = _model_dir(tmp_path / "model", CONFIG_FILE)
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(Settings(model_dir=str(directory), model_dir_explicit=False))
    message = str(caught.value)
    assert str(directory) in message
    assert CONFIG_FILE in message  # it was found, and is listed
    assert WEIGHT_FILES[0] in message


def test_weights_without_config_is_an_error_even_when_not_explicit(tmp_path):
    directory = _model_dir(tmp_path / "model", "open_clip_pytorch_model.bin")
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(Settings(model_dir=str(directory), model_dir_explicit=False))
    assert f"expected {CONFIG_FILE}" in str(caught.value)


def test_pretrained_none_means_random_weights(tmp_path):
    for value in ("none", "None", "NONE"):
        settings = Settings(model_dir=str(tmp_path / "absent"), model_name="ViT-B-32", model_pretrained=value)
        source = resolve_model_source(settings)
        assert source.name == "ViT-B-32"
        assert source.pretrained is None
        assert source.random_weights is True
        assert "RANDOM" in source.description


@pytest.mark.parametrize("path", ["/no/such/checkpoint.pt", "weights.safetensors", "dir/epoch_3", "x.npz"])
def test_checkpoint_path_that_does_not_exist_is_an_error(tmp_path, path):
    settings = Settings(model_dir=str(tmp_path / "absent"), model_pretrained=path)
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(settings)
    assert path in str(caught.value)
    assert "no such file" in str(caught.value)


@pytest.mark.parametrize("name", ["epoch_32.pt", "model.bin", "weights.safetensors"])
def test_existing_checkpoint_path_becomes_pretrained(tmp_path, name):
    checkpoint = tmp_path / "ckpt" / name
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    settings = Settings(model_dir=str(tmp_path / "absent"), model_name="ViT-B-32", model_pretrained=str(checkpoint))
    source = resolve_model_source(settings)
    assert source.name == "ViT-B-32"
    assert source.pretrained == str(checkpoint)
    assert source.random_weights is False
    assert "checkpoint" in source.description


def test_from_env_model_dir_pointing_at_nothing_is_refused(tmp_path):
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path / "typo"), "MODEL_NAME": "ViT-B-16"})
    with pytest.raises(ModelSourceError):
        resolve_model_source(settings)


# --- CLIP_MODEL (seed 002) and MODEL_ID (seed 001) ----------------------------------------------------------

@pytest.mark.parametrize("value, name, pretrained", [
    ("ViT-B-16:laion400m_e32", "ViT-B-16", "laion400m_e32"),
    ("openai/clip-vit-base-patch32", "ViT-B-32-quickgelu", "openai"),
    ("openai/clip-vit-base-patch16", "ViT-B-16-quickgelu", "openai"),
    ("openai/clip-vit-large-patch14", "ViT-L-14-quickgelu", "openai"),
    ("openai/clip-vit-large-patch14-336", "ViT-L-14-336-quickgelu", "openai"),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
    ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
    ("ViT-L-14", "ViT-L-14", "laion2b_s34b_b79k"),
])
def test_clip_model_takes_arch_tag_hub_ids_and_openai_repo_names(tmp_path, value, name, pretrained):
    source = resolve_model_source(Settings(model_dir=str(tmp_path / "absent"), clip_model=value))
    assert (source.name, source.pretrained) == (name, pretrained)
    assert source.display_name == value
    assert source.random_weights is False
    assert f"CLIP_MODEL={value}" in source.description


def test_precedence_is_model_dir_then_clip_model_then_model_name(tmp_path):
    directory = _model_dir(tmp_path / "model", "open_clip_config.json", "open_clip_model.safetensors")
    both = Settings(model_dir=str(directory), clip_model="ViT-B-16:openai", model_name="RN50")
    assert resolve_model_source(both).name == f"local-dir:{directory}"
    no_dir = both.replace(model_dir=str(tmp_path / "absent"))
    assert resolve_model_source(no_dir).name == "ViT-B-16"
    assert resolve_model_source(no_dir.replace(clip_model=None)).name == "RN50"


def test_model_id_is_only_the_display_name(tmp_path):
    settings = Settings(model_dir=str(tmp_path / "absent"), model_id="OpenCLIP-ViT-B-32-laion2B")
    source = resolve_model_source(settings)
    assert source.display_name == "OpenCLIP-ViT-B-32-laion2B"
    assert (source.name, source.pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
