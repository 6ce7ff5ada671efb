"""Loads an OpenCLIP model and runs its two towers; knows nothing about HTTP.

ClipModel splits the work so that the expensive part can be batched across requests:
`prepare_image` / `tokenize` run in the request's own thread (CPU work, in parallel), and `encode` runs in the
model loop on a whole batch of prepared rows at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .model_source import ModelSource
from .tasks import IMAGE, TEXT

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelLoadError(Exception):
    """The model could not be loaded from where the settings point."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    device: str
    precision: str
    embed_dim: int
    image_size: tuple[int, int]
    context_length: int


def pick_device(requested: Optional[str]) -> str:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"DEVICE={requested} was asked for, but CUDA is not available here")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_precision(requested: Optional[str], device: str) -> str:
    if requested:
        return requested
    return "fp16" if device.startswith("cuda") else "fp32"


class ClipModel:
    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, source: ModelSource, device: str,
                 precision: str):
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._device = torch.device(device)
        self._input_dtype = _DTYPES[precision]
        self.source = source
        self.logit_scale = float(model.logit_scale.detach().float().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().item())
        image_size = model.visual.image_size
        image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        with torch.inference_mode():
            probe = self._model.encode_text(self.tokenize([""]).to(self._device))
        self.info = ModelInfo(
            name=source.display_name or source.name, source=source.description,
            device=str(self._device), precision=precision, embed_dim=int(probe.shape[-1]),
            image_size=image_size, context_length=int(getattr(tokenizer, "context_length", 77)))

    def prepare_image(self, image) -> torch.Tensor:
        """A decoded RGB PIL image → the normalised tensor the vision tower takes (on the CPU)."""
        return self._preprocess(image)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → token ids, one row per text (open_clip truncates past the context length)."""
        return self._tokenizer(list(texts))

    def encode(self, modality: str, rows: Sequence[torch.Tensor]) -> np.ndarray:
        """One forward pass over prepared rows; returns unnormalised float32 embeddings, one row per input."""
        batch = torch.stack(list(rows)).to(self._device, non_blocking=True)
        with torch.inference_mode():
            if modality == IMAGE:
                features = self._model.encode_image(batch.to(self._input_dtype))
            elif modality == TEXT:
                features = self._model.encode_text(batch)
            else:
                raise ValueError(f"unknown modality {modality!r}")
        return features.float().cpu().numpy()


def load_model(source: ModelSource, device: Optional[str] = None, precision: Optional[str] = None,
               torch_threads: Optional[int] = None) -> ClipModel:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    import open_clip  # imported here so that code which only plans or validates never pays for it

    device = pick_device(device)
    precision = pick_precision(precision, device)
    if source.random_weights:
        log.warning("!!! SERVING RANDOM WEIGHTS: %s. Embeddings are meaningless; use this for benchmarks only !!!",
                    source.description)
    try:
        # open_clip only warns when a tag's weights were trained with QuickGELU and the architecture
        # lacks it (ViT-B-32 + openai); the embeddings are then subtly wrong, so use the right activation.
        tag_cfg = open_clip.get_pretrained_cfg(source.name, source.pretrained) if source.pretrained else {}
        model, _, preprocess = open_clip.create_model_and_transforms(
            source.name, pretrained=source.pretrained, device=device, precision=precision,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu")),
            # Without this, a config with no weights next to it silently becomes a random model.
            require_pretrained=not source.random_weights)
        tokenizer = open_clip.get_tokenizer(source.name)
        return ClipModel(model, preprocess, tokenizer, source, device, precision)
    except Exception as exc:  # open_clip raises many types (OSError, RuntimeError, ValueError, safetensors errors)
        raise ModelLoadError(f"could not load {source.description} on {device}: {type(exc).__name__}: {exc}") from exc
