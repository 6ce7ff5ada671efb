"""Loads `.safetensors` weights with a low memory peak, for the model loader (model.py).

open_clip builds the model in fp32 with random weights, converts it, then loads the whole checkpoint at
once through safetensors' memory map: for ViT-B-32 the worker's peak RSS was about 1.8 GB for a model of
0.3 GB in bf16. Here the model is built on the meta device (no memory) in its final precision, given
uninitialised storage, and each tensor is read from the file straight into its parameter, one at a time,
with plain reads (the pages of a memory map count in the worker's RSS while mapped). The copy casts as
open_clip's own `load_state_dict` does, so the weights are the same.

It applies when the file's tensors are exactly the model's (names and shapes) and the model's only
non-persistent buffers are causal attention masks, which are rebuilt; anything else (a checkpoint from
another codebase, a .bin file, a Hugging Face tower) returns None and takes open_clip's own path.
"""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_header(path: Path) -> tuple[dict, int]:
    """The file's tensor table and the offset its data starts at (the safetensors layout: an 8-byte
    little-endian header length, the JSON header, then the tensors' bytes)."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        # A corrupt file's "length" may be any 64-bit number: reading that much would be a MemoryError.
        if length > Path(path).stat().st_size - 8:
            raise ValueError(f"{path} is not a .safetensors file: its header length {length} is past its end")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def _fits(model: torch.nn.Module, header: dict) -> bool:
    expected = model.state_dict()
    if set(header) != set(expected):
        return False
    if any(list(expected[name].shape) != header[name]["shape"] or header[name]["dtype"] not in _DTYPES
           for name in expected):
        return False
    transient = [name for name, _ in model.named_buffers() if name not in expected]
    return all(name.rsplit(".", 1)[-1] == "attn_mask" for name in transient)


def _fill(model: torch.nn.Module, path: Path, header: dict, data_start: int) -> None:
    with open(path, "rb") as file, torch.no_grad():
        for name, target in model.state_dict().items():
            entry = header[name]
            begin, end = entry["data_offsets"]
            file.seek(data_start + begin)
            raw = bytearray(end - begin)
            file.readinto(raw)
            values = torch.frombuffer(raw, dtype=_DTYPES[entry["dtype"]]) if raw else torch.empty(0)
            target.copy_(values.reshape(entry["shape"]))


def _rebuild_causal_masks(model: torch.nn.Module) -> None:
    persistent = set(model.state_dict())
    for name, buffer in list(model.named_buffers()):
        if name not in persistent:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            mask = torch.full(buffer.shape, float("-inf"), dtype=buffer.dtype).triu_(1)
            owner.register_buffer("attn_mask", mask, persistent=False)


def load_streamed(open_clip, name: str, path: Path, precision: str, force_quick_gelu: bool) -> Optional[tuple]:
    """(model, preprocess) with the file's weights, on the CPU; None where this path does not apply."""
    with torch.device("meta"):
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None, load_weights=False, device="meta", precision=precision,
            force_quick_gelu=force_quick_gelu)
    header, data_start = read_header(path)
    if not _fits(model, header):
        log.info("%s does not match the model's tensors one to one; loading it through open_clip", path)
        return None
    model.to_empty(device="cpu")
    _fill(model, path, header, data_start)
    _rebuild_causal_masks(model)
    return model, preprocess
