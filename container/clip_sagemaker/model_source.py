"""Decides where the model comes from, without loading it (and without importing torch).

Precedence: a model in MODEL_DIR (the open_clip directory layout SageMaker unpacks `model.tar.gz` into),
then MODEL_NAME + MODEL_PRETRAINED, then the default ViT-B-32 / laion2b_s34b_b79k. `serve` calls this before
starting gunicorn, so a wrong setting stops the container with one clear message instead of a crash loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .settings import Settings

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
RANDOM_WEIGHTS = "none"


class ModelSourceError(Exception):
    """The settings name a model that cannot be there."""


@dataclass(frozen=True)
class ModelSource:
    """What open_clip is asked to load: `name` is an architecture or a `local-dir:` path."""
    name: str
    pretrained: Optional[str]
    description: str

    @property
    def random_weights(self) -> bool:
        return self.pretrained is None and not self.name.startswith("local-dir:")


def _weights_in(directory: Path) -> Optional[Path]:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _from_model_dir(settings: Settings) -> Optional[ModelSource]:
    directory = Path(settings.model_dir)
    config = directory / CONFIG_FILE
    weights = _weights_in(directory) if directory.is_dir() else None
    if config.is_file() and weights is not None:
        return ModelSource(name=f"local-dir:{directory}", pretrained=None,
                           description=f"model directory {directory} ({weights.name})")
    # A directory that holds only half a model was meant to be used: falling back would serve something else.
    if settings.model_dir_explicit or config.is_file() or weights is not None:
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else None
        raise ModelSourceError(
            f"MODEL_DIR={directory} does not hold an open_clip model: expected {CONFIG_FILE} and one of "
            f"{', '.join(WEIGHT_FILES)}; "
            + ("the directory does not exist" if found is None else f"found {found or 'nothing'}"))
    return None


def resolve_model_source(settings: Settings) -> ModelSource:
    source = _from_model_dir(settings)
    if source is not None:
        return source
    pretrained = settings.model_pretrained
    if pretrained.lower() == RANDOM_WEIGHTS:
        return ModelSource(name=settings.model_name, pretrained=None,
                           description=f"{settings.model_name} with RANDOM weights (MODEL_PRETRAINED=none)")
    looks_like_path = "/" in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)
    if looks_like_path and not Path(pretrained).is_file():
        raise ModelSourceError(f"MODEL_PRETRAINED={pretrained} looks like a checkpoint path, but no such file exists")
    kind = "checkpoint" if looks_like_path else "pretrained tag"
    return ModelSource(name=settings.model_name, pretrained=pretrained,
                       description=f"{settings.model_name} with {kind} {pretrained}")
