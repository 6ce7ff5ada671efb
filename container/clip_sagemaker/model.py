"""Loads an OpenCLIP model and runs its two towers; knows nothing about HTTP.

ClipModel splits the work so that the expensive part can be batched across requests:
`prepare_image` / `tokenize` run in the request's own thread (CPU work, in parallel), and `encode` runs in the
model loop on a whole batch of prepared rows at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import torchscript
from .model_source import LOCAL_DIR_PREFIX, ModelSource, weights_in
from .precision import PrecisionChoice, PrecisionError, choose_precision
from .weights import load_streamed
from .modality import IMAGE, TEXT

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
    precision_reason: str
    embed_dim: int
    random_weights: bool
    image_size: tuple[int, int]
    context_length: int


def pick_device(requested: Optional[str]) -> str:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"DEVICE={requested} was asked for, but CUDA is not available here")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class _TextTower:
    """The parts of a causal text tower that pools at its end-of-text token, where they live in this model."""
    module: torch.nn.Module  # holds token_embedding, positional_embedding, transformer, ln_final, text_projection
    attn_mask: torch.Tensor
    pool_type: str
    eos_id: Optional[int]


def trimmable_text_tower(model: torch.nn.Module) -> Optional[_TextTower]:
    """The text tower, when running it only up to the batch's longest text cannot change the result.

    With a causal mask, token i attends to tokens <= i only, so the tokens after the pooled end-of-text token
    (padding) cannot reach it. That holds for CLIP's towers (`argmax` or `eos` pooling); not for towers
    without a causal mask (SigLIP's), with a CLS token (CoCa) or with a padding mask: they keep the padded path.
    """
    from open_clip.transformer import TextTransformer

    if isinstance(getattr(model, "text", None), TextTransformer):
        tower = model.text
        if tower.cls_emb is not None or tower.use_pad_mask or tower.output_tokens:
            return None
        mask, pool_type, eos_id = tower.attn_mask, tower.pool_type, getattr(tower, "eos_id", None)
    elif hasattr(model, "token_embedding") and hasattr(model, "text_pool_type"):
        tower = model
        mask, pool_type, eos_id = model.attn_mask, model.text_pool_type, getattr(model, "text_eos_id", None)
    else:
        return None  # a Hugging Face text tower: its own padding rules apply
    if mask is None or pool_type not in ("argmax", "eos") or (pool_type == "eos" and eos_id is None):
        return None
    return _TextTower(tower, mask, pool_type, eos_id)


def _pooled_positions(tower: _TextTower, tokens: torch.Tensor) -> torch.Tensor:
    if tower.pool_type == "argmax":
        return tokens.argmax(dim=-1)
    return (tokens == tower.eos_id).int().argmax(dim=-1)


def encode_text_trimmed(tower: _TextTower, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's text forward, run on the first L tokens only, L = the batch's last pooled position + 1."""
    from open_clip.transformer import text_global_pool

    length = int(_pooled_positions(tower, tokens).max()) + 1
    tokens = tokens[:, :length]
    m = tower.module
    cast_dtype = m.transformer.get_cast_dtype()
    x = m.token_embedding(tokens).to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
    x = m.ln_final(m.transformer(x, attn_mask=tower.attn_mask[:length, :length]))
    pooled = text_global_pool(x, tokens, pool_type=tower.pool_type, eos_token_id=tower.eos_id)
    projection = m.text_projection
    if projection is None:
        return pooled
    return projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection


class _NumpyTail:
    """open_clip's preprocessing with its last two steps (to tensor, normalise) done in numpy.

    Request threads prepare images; had they run those two steps as torch ops, each thread would start an
    OpenMP team of its own, competing for the cores with the model loop's forward pass. Same float32
    arithmetic as torchvision's ToTensor and Normalize. None when the pipeline has another shape.
    """

    def __init__(self, preprocess):
        steps = list(getattr(preprocess, "transforms", []))
        if len(steps) < 2 or "ToTensor" not in type(steps[-2]).__name__ or type(steps[-1]).__name__ != "Normalize":
            raise ValueError("not a PIL pipeline ending in ToTensor + Normalize")
        self._pil_steps = steps[:-2]
        self._mean = np.asarray(steps[-1].mean, dtype=np.float32)
        self._std = np.asarray(steps[-1].std, dtype=np.float32)

    def __call__(self, image) -> torch.Tensor:
        for step in self._pil_steps:
            image = step(image)
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255)
        normalised = (pixels - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))


class ClipModel:
    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, source: ModelSource, device: str,
                 precision: PrecisionChoice, trim_text: bool = True, freeze_towers: bool = True):
        self._model = model.eval()
        try:
            self._preprocess = _NumpyTail(preprocess)
        except ValueError:
            self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._device = torch.device(device)
        self._input_dtype = _DTYPES[precision.precision]
        self.source = source
        self.text_tower = trimmable_text_tower(model) if trim_text else None
        self.logit_scale = float(model.logit_scale.detach().float().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().item())
        image_size = model.visual.image_size
        image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        self._vision = self._frozen_vision(image_size) if freeze_towers and self._device.type == "cpu" else None
        with torch.inference_mode():
            probe = self._model.encode_text(self.tokenize([""]).to(self._device))
        self.info = ModelInfo(
            name=source.display_name or source.name, source=source.description,
            device=str(self._device), precision=precision.precision, precision_reason=precision.reason,
            embed_dim=int(probe.shape[-1]), random_weights=source.random_weights, image_size=image_size,
            context_length=int(getattr(tokenizer, "context_length", 77)))

    def _frozen_vision(self, image_size: tuple[int, int]) -> Optional[Callable]:
        """The traced vision tower, where the model's encode_image is open_clip's plain `visual(image)`
        (CoCa's and others' do more: they stay eager). The text transformer stays eager: its input length
        changes with every batch's longest text, and a trace re-specialises on each new length."""
        import open_clip

        if type(self._model).encode_image not in (open_clip.CLIP.encode_image, open_clip.CustomTextCLIP.encode_image):
            return None
        example = torchscript.vision_example(image_size, self._input_dtype, self._device)
        return torchscript.freeze(self._model.visual, example, "vision tower")

    def prepare_image(self, image) -> torch.Tensor:
        """A decoded RGB PIL image → the normalised tensor the vision tower takes (on the CPU)."""
        return self._preprocess(image)

    def token_counts(self, texts: Sequence[str]) -> Optional[list[int]]:
        """Tokens each text takes before truncation (start and end tokens included), for open_clip's own
        tokenizer; None for Hugging Face tokenizers, which truncate by themselves."""
        encode = getattr(self._tokenizer, "encode", None)
        if encode is None or not hasattr(self._tokenizer, "sot_token_id"):
            return None
        return [len(encode(text)) + 2 for text in texts]

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → token ids, one row per text (open_clip truncates past the context length)."""
        return self._tokenizer(list(texts))

    def encode(self, modality: str, rows: Sequence[torch.Tensor]) -> np.ndarray:
        """One forward pass over prepared rows; returns unnormalised float32 embeddings, one row per input."""
        try:
            return self._forward(modality, rows)
        except torch.OutOfMemoryError:
            # Give the failed batch's memory back before the model loop retries it in smaller pieces.
            if self._device.type == "cuda":
                torch.cuda.empty_cache()
            raise

    def _forward(self, modality: str, rows: Sequence[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(list(rows)).to(self._device, non_blocking=True)
        with torch.inference_mode():
            if modality == IMAGE:
                vision = self._model.encode_image if self._vision is None else self._vision
                features = vision(batch.to(self._input_dtype))
            elif modality == TEXT and self.text_tower is not None:
                features = encode_text_trimmed(self.text_tower, batch)
            elif modality == TEXT:
                features = self._model.encode_text(batch)
            else:
                raise ValueError(f"unknown modality {modality!r}")
        return features.float().cpu().numpy()


def _safetensors_file(source: ModelSource) -> Optional[Path]:
    """The .safetensors file the source's weights come from, where they come from one."""
    if source.name.startswith(LOCAL_DIR_PREFIX) and source.pretrained is None:
        found = weights_in(Path(source.name[len(LOCAL_DIR_PREFIX):]))
    else:
        found = Path(source.pretrained) if source.pretrained else None
    return found if found is not None and found.suffix == ".safetensors" and found.is_file() else None


def load_model(source: ModelSource, device: Optional[str] = None, precision: Optional[str] = None,
               torch_threads: Optional[int] = None, trim_text: bool = True, freeze_towers: bool = True) -> ClipModel:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    import open_clip  # imported here so that code which only plans or validates never pays for it

    # huggingface_hub logs through a handler of its own and passes each line on to ours too: every line twice.
    logging.getLogger("huggingface_hub").handlers.clear()
    device = pick_device(device)
    try:
        choice = choose_precision(precision, device)
    except PrecisionError as exc:
        raise ModelLoadError(str(exc)) from None
    if source.random_weights:
        log.warning("!!! SERVING RANDOM WEIGHTS: %s. Embeddings are meaningless; use this for benchmarks only !!!",
                    source.description)
    try:
        # open_clip only warns when a tag's weights were trained with QuickGELU and the architecture
        # lacks it (ViT-B-32 + openai); the embeddings are then subtly wrong, so use the right activation.
        tag_cfg = open_clip.get_pretrained_cfg(source.name, source.pretrained) if source.pretrained else {}
        quick_gelu = bool(tag_cfg.get("quick_gelu"))
        weights = _safetensors_file(source)
        loaded = None
        if weights is not None and device == "cpu":
            loaded = load_streamed(open_clip, source.name, weights, choice.precision, quick_gelu)
        model, preprocess = loaded or open_clip.create_model_and_transforms(
            source.name, pretrained=source.pretrained, device=device, precision=choice.precision,
            force_quick_gelu=quick_gelu,
            # Without this, a config with no weights next to it silently becomes a random model.
            require_pretrained=source.weights_from_files)[::2]
        tokenizer = open_clip.get_tokenizer(source.name)
        return ClipModel(model, preprocess, tokenizer, source, device, choice, trim_text, freeze_towers)
    except Exception as exc:  # open_clip raises many types (OSError, RuntimeError, ValueError, safetensors errors)
        message = f"could not load {source.description} on {device}: {type(exc).__name__}: {exc}"
        raise ModelLoadError(message.rstrip(".") + _WITHOUT_THE_HUB if source.from_hub else message) from exc


_WITHOUT_THE_HUB = (". Without network, serve a model directory (MODEL_DIR=DIR; local_test/make_model.sh makes one), "
                    "weights already in a Hugging Face cache (HF_HUB_OFFLINE=1, HF_HUB_CACHE=DIR) or, for tests "
                    "only, random weights (MODEL_PRETRAINED=none): see docs/deployment.md")
