"""A frozen TorchScript trace of the vision tower.

Why: the model loop runs the forward in one Python thread while the request threads decode and prepare
images in others. Eager PyTorch takes the GIL back between every op (hundreds per forward), and each time a
request thread holds it the forward waits up to the interpreter's switch interval (5 ms): under load a
bf16 ViT-B-32 batch took several times its idle time. TorchScript's interpreter runs the whole traced
forward without the GIL. The arithmetic is the same ops on the same weights; each trace is checked against
the eager module on a probe at load time, and a module that cannot be traced (or disagrees) stays eager,
with a log line.
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable

import torch

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.9999  # cosine of the traced module's output to the eager one's, per row


def _agrees(traced, eager: torch.nn.Module, example: tuple) -> bool:
    expected, got = eager(*example).float(), traced(*example).float()
    flat_expected, flat_got = expected.reshape(expected.shape[0], -1), got.reshape(got.shape[0], -1)
    return bool(torch.nn.functional.cosine_similarity(flat_expected, flat_got).min() >= MIN_AGREEMENT)


def freeze(module: torch.nn.Module, example: tuple, name: str) -> Callable:
    """The frozen trace of `module` for inputs shaped like `example` (any batch size), else `module` itself."""
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # The agreement check below is what decides; the tracer's generic warnings would only be noise.
            # torch marks TorchScript as deprecated (FutureWarning); if a later torch drops it, the trace
            # fails and the tower runs eagerly, as for any module that cannot be traced.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.freeze(torch.jit.trace(module.eval(), example, check_trace=False))
            if _agrees(traced, module, example):
                return traced
        log.warning("the TorchScript trace of the %s disagrees with it; running it eagerly", name)
    except Exception as exc:  # noqa: BLE001 - a tower torch cannot trace still runs, eagerly
        log.warning("the %s could not be traced (%s: %s); running it eagerly", name, type(exc).__name__, exc)
    return module


def vision_example(image_size: tuple[int, int], dtype: torch.dtype, device: torch.device) -> tuple:
    # Two rows, so that nothing in the trace specialises on a batch of one.
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, *image_size, generator=generator).to(device=device, dtype=dtype),)
