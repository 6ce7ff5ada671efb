"""Decides where the model comes from, without loading it (and without importing torch).

Precedence: a model in MODEL_DIR (the open_clip directory layout SageMaker unpacks `model.tar.gz` into),
then a model in BAKED_MODEL_DIR (default /opt/baked-model: where the Docker image keeps a model baked in at
build time; absent, or holding neither file as in the default image, means none), then CLIP_MODEL (seed
002's variable: `ARCH:tag`, `hf-hub:org/name`, or a Hugging Face repo name such as
`openai/clip-vit-base-patch32`), then MODEL_NAME + MODEL_PRETRAINED (seed 001's), then the default
ViT-B-32 / laion2b_s34b_b79k. `serve` calls this before starting gunicorn, so a wrong setting stops the
container with one clear message instead of a crash loop.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .settings import Settings

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_KEY = "weights"  # in CONFIG_FILE, written by model_files: where the weights came from
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
RANDOM_WEIGHTS = "none"
LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"
# OpenAI's Hugging Face repos hold the same weights open_clip loads as `openai`; the -quickgelu
# architectures use the activation those weights were trained with.
OPENAI_REPOS = {
    "openai/clip-vit-base-patch32": ("ViT-B-32-quickgelu", "openai"),
    "openai/clip-vit-base-patch16": ("ViT-B-16-quickgelu", "openai"),
    "openai/clip-vit-large-patch14": ("ViT-L-14-quickgelu", "openai"),
    "openai/clip-vit-large-patch14-336": ("ViT-L-14-336-quickgelu", "openai"),
}


class ModelSourceError(Exception):
    """The settings name a model that cannot be there."""


@dataclass(frozen=True)
class ModelSource:
    """What open_clip is asked to load: `name` is an architecture, `local-dir:` path or `hf-hub:` id.
    `random_weights`: the weights are random, built now (MODEL_PRETRAINED=none) or in a directory whose
    config says so."""
    name: str
    pretrained: Optional[str]
    description: str
    display_name: str = ""  # what answers call the model (MODEL_ID overrides)
    random_weights: bool = False

    @property
    def from_hub(self) -> bool:
        """Whether loading downloads from the Hugging Face Hub: a pretrained tag (not a checkpoint file) or a
        Hub repo."""
        return self.name.startswith(HF_HUB_PREFIX) or (self.pretrained is not None
                                                       and not Path(self.pretrained).is_file())

    @property
    def weights_from_files(self) -> bool:
        """Whether open_clip loads weights (a tag, a checkpoint, a directory, a Hub repo): then it must find them."""
        return self.pretrained is not None or self.name.startswith((LOCAL_DIR_PREFIX, HF_HUB_PREFIX))


def weights_in(directory: Path) -> Optional[Path]:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _from_directory(directory: Path, variable: str, explicit: bool, kind: str) -> Optional[ModelSource]:
    config = directory / CONFIG_FILE
    weights = weights_in(directory) if directory.is_dir() else None
    if config.is_file() and weights is not None:
        seed = _random_seed(config)
        random = "" if seed is None else f": RANDOM weights (seed {seed}, written without pretrained weights)"
        return ModelSource(name=f"{LOCAL_DIR_PREFIX}{directory}", pretrained=None,
                           description=f"{kind} {directory} ({weights.name}){random}",
                           display_name=str(directory), random_weights=seed is not None)
    # A directory that holds only half a model was meant to be used: falling back would serve something else.
    if explicit or config.is_file() or weights is not None:
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else None
        raise ModelSourceError(
            f"{variable}={directory} does not hold an open_clip model: expected {CONFIG_FILE} and one of "
            f"{', '.join(WEIGHT_FILES)}; "
            + ("the directory does not exist" if found is None else f"found {found or 'nothing'}")
            + "; make one with local_test/make_model.sh ARCH:TAG (or ARCH --checkpoint FILE), see "
              "docs/deployment.md")
    return None


def _random_seed(config: Path) -> Optional[object]:
    """The seed of the random weights model_files wrote, or None when the config does not say they are random
    (a directory from the Hub or another tool says nothing; an unreadable config is open_clip's to report)."""
    try:
        weights = json.loads(config.read_text()).get(WEIGHTS_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(weights, dict) and weights.get("random") is True:
        return weights.get("seed", "unknown")
    return None


def require_model_directory(directory: Path, what: str) -> Optional[Path]:
    """The weights file of the model `directory` holds; a ModelSourceError that names `what` (a setting, a
    field) when it holds none."""
    _from_directory(directory, what, True, "model directory")
    return weights_in(directory)


def _from_model_dir(settings: Settings) -> Optional[ModelSource]:
    return _from_directory(Path(settings.model_dir), "MODEL_DIR", settings.model_dir_explicit, "model directory")


def _from_baked_model_dir(settings: Settings) -> Optional[ModelSource]:
    """The image's baked-in model. The default image has none there (a README only), so it is skipped."""
    return _from_directory(Path(settings.baked_model_dir), "BAKED_MODEL_DIR", settings.baked_model_dir_explicit,
                           "baked-in model directory")


def _from_clip_model(value: str, settings: Settings) -> ModelSource:
    described = f"CLIP_MODEL={value}"
    if value.lower() in OPENAI_REPOS:
        arch, tag = OPENAI_REPOS[value.lower()]
        return ModelSource(arch, tag, f"{described} (open_clip {arch} with {tag} weights)", value)
    if value.startswith(HF_HUB_PREFIX) or ("/" in value and ":" not in value):
        hub_id = value if value.startswith(HF_HUB_PREFIX) else HF_HUB_PREFIX + value
        return ModelSource(hub_id, None, f"{described} (Hugging Face Hub repo {hub_id[len(HF_HUB_PREFIX):]})", value)
    arch, _, tag = value.partition(":")
    return dataclasses.replace(_from_name(arch, tag or settings.model_pretrained, described), display_name=value)


def _from_name(arch: str, pretrained: str, described: str) -> ModelSource:
    if pretrained.lower() == RANDOM_WEIGHTS:
        return ModelSource(arch, None, f"{described}: {arch} with RANDOM weights (MODEL_PRETRAINED=none)",
                           f"{arch}:{RANDOM_WEIGHTS}", random_weights=True)
    looks_like_path = "/" in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)
    if looks_like_path and not Path(pretrained).is_file():
        raise ModelSourceError(f"{described}: {pretrained} looks like a checkpoint path, but no such file exists")
    kind = "checkpoint" if looks_like_path else "pretrained tag"
    return ModelSource(arch, pretrained, f"{described}: {arch} with {kind} {pretrained}",
                       f"{arch}:{Path(pretrained).name if looks_like_path else pretrained}")


def resolve_model_source(settings: Settings) -> ModelSource:
    source = _from_model_dir(settings)
    if source is None:
        source = _from_baked_model_dir(settings)
    if source is None and settings.clip_model:
        source = _from_clip_model(settings.clip_model, settings)
    if source is None:
        source = _from_name(settings.model_name, settings.model_pretrained,
                            f"MODEL_NAME={settings.model_name} MODEL_PRETRAINED={settings.model_pretrained}")
    if settings.model_id:
        source = dataclasses.replace(source, display_name=settings.model_id)
    return source
