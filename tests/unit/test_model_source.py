"""Where the model comes from: model directory, baked-in model, CLIP_MODEL, then MODEL_NAME + MODEL_PRETRAINED."""
from __future__ import annotations

import json
import shutil

import pytest

from clip_sagemaker.model_source import CONFIG_FILE, WEIGHT_FILES, ModelSourceError, resolve_model_source
from clip_sagemaker.settings import DEFAULT_BAKED_MODEL_DIR, DEFAULT_MODEL_NAME, DEFAULT_MODEL_PRETRAINED, Settings


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


# --- BAKED_MODEL_DIR: a model baked into the Docker image (default /opt/baked-model) ----------------------

def test_baked_model_is_used_when_model_dir_holds_no_model(tmp_path):
    baked = _model_dir(tmp_path / "baked", CONFIG_FILE, WEIGHT_FILES[0])
    settings = Settings(model_dir=str(tmp_path / "absent"), baked_model_dir=str(baked))
    source = resolve_model_source(settings)
    assert source.name == f"local-dir:{baked}"
    assert source.pretrained is None and source.random_weights is False
    assert source.description == f"baked-in model directory {baked} ({WEIGHT_FILES[0]})"
    assert source.display_name == str(baked)


def test_precedence_is_model_dir_then_baked_model_then_clip_model_then_model_name(tmp_path):
    directory = _model_dir(tmp_path / "model", CONFIG_FILE, WEIGHT_FILES[0])
    baked = _model_dir(tmp_path / "baked", CONFIG_FILE, WEIGHT_FILES[0])
    everything = Settings(model_dir=str(directory), baked_model_dir=str(baked), clip_model="ViT-B-16:openai",
                          model_name="RN50")
    assert resolve_model_source(everything).name == f"local-dir:{directory}"
    no_dir = everything.replace(model_dir=str(tmp_path / "absent"))
    assert resolve_model_source(no_dir).name == f"local-dir:{baked}"
    nothing_baked = no_dir.replace(baked_model_dir=str(tmp_path / "not-baked"))
    assert resolve_model_source(nothing_baked).name == "ViT-B-16"
    assert resolve_model_source(nothing_baked.replace(clip_model=None)).name == "RN50"


def test_empty_default_model_dir_falls_through_to_the_baked_model(tmp_path):
    # SageMaker without a ModelDataUrl, or `docker run` without a mount: /opt/ml/model is empty or absent.
    baked = _model_dir(tmp_path / "baked", CONFIG_FILE, "open_clip_pytorch_model.bin")
    settings = Settings(model_dir=str(_model_dir(tmp_path / "model")), baked_model_dir=str(baked))
    assert resolve_model_source(settings).name == f"local-dir:{baked}"


def test_explicit_model_dir_without_a_model_is_an_error_even_with_a_baked_model(tmp_path):
    baked = _model_dir(tmp_path / "baked", CONFIG_FILE, WEIGHT_FILES[0])
    settings = Settings(model_dir=str(tmp_path / "typo"), model_dir_explicit=True, baked_model_dir=str(baked))
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(settings)
    assert str(caught.value).startswith(f"MODEL_DIR={tmp_path / 'typo'} ")


def test_absent_baked_model_dir_is_skipped(tmp_path):
    settings = Settings(model_dir=str(tmp_path / "absent"), baked_model_dir=str(tmp_path / "no-baked-model"),
                        clip_model="ViT-B-16:openai")
    assert (resolve_model_source(settings).name, resolve_model_source(settings).pretrained) == ("ViT-B-16", "openai")


def test_baked_model_dir_of_the_default_image_holding_only_a_readme_is_skipped(tmp_path):
    # The image built without MODEL_DIR_IN_CONTEXT has docker/no-baked-model/README.md in /opt/baked-model.
    placeholder = _model_dir(tmp_path / "baked", "README.md")
    settings = Settings(model_dir=str(tmp_path / "absent"), baked_model_dir=str(placeholder))
    source = resolve_model_source(settings)
    assert (source.name, source.pretrained) == (DEFAULT_MODEL_NAME, DEFAULT_MODEL_PRETRAINED)


@pytest.mark.parametrize("files", [(CONFIG_FILE,), ("open_clip_model.safetensors",)])
def test_half_a_baked_model_is_an_error(tmp_path, files):
    baked = _model_dir(tmp_path / "baked", *files)
    settings = Settings(model_dir=str(tmp_path / "absent"), baked_model_dir=str(baked), clip_model="RN50:openai")
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(settings)
    message = str(caught.value)
    assert message.startswith(f"BAKED_MODEL_DIR={baked} does not hold an open_clip model")
    assert all(name in message for name in files)


def test_explicit_baked_model_dir_that_does_not_exist_is_an_error(tmp_path):
    settings = Settings.from_env({"BAKED_MODEL_DIR": str(tmp_path / "typo")}).replace(model_dir=str(tmp_path / "x"))
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_source(settings)
    assert f"BAKED_MODEL_DIR={tmp_path / 'typo'}" in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_baked_model_dir_setting_defaults_to_opt_baked_model_and_is_read_from_the_environment():
    assert Settings.from_env({}).baked_model_dir == DEFAULT_BAKED_MODEL_DIR == "/opt/baked-model"
    assert Settings.from_env({}).baked_model_dir_explicit is False
    assert Settings.from_env({"BAKED_MODEL_DIR": "  "}).baked_model_dir_explicit is False
    parsed = Settings.from_env({"BAKED_MODEL_DIR": " /srv/clip "})
    assert (parsed.baked_model_dir, parsed.baked_model_dir_explicit) == ("/srv/clip", True)


def test_a_model_directory_written_without_weights_is_marked_random(tiny_model_dir):
    source = resolve_model_source(Settings(model_dir=str(tiny_model_dir), model_dir_explicit=True))
    assert source.random_weights is True
    assert "RANDOM weights (seed 0" in source.description
    assert json.loads((tiny_model_dir / CONFIG_FILE).read_text())["weights"] == {"random": True, "seed": 0}


def test_a_model_directory_whose_config_says_nothing_of_its_weights_is_not_random(tiny_model_dir, tmp_path):
    # What the Hub and other tools write: no "weights" key.
    plain = tmp_path / "model"
    shutil.copytree(tiny_model_dir, plain)
    config = json.loads((plain / CONFIG_FILE).read_text())
    del config["weights"]
    (plain / CONFIG_FILE).write_text(json.dumps(config))
    source = resolve_model_source(Settings(model_dir=str(plain), model_dir_explicit=True))
    assert source.random_weights is False and "RANDOM" not in source.description


def test_info_says_when_the_weights_are_random(client):
    info = client.get("/info").get_json()
    assert info["random_weights"] is True and "RANDOM weights" in info["source"]
