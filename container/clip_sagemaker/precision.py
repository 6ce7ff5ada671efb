"""Which precision the model runs at on which device, and why: the choice `/info` and the start-up log show.

- CUDA: fp16 unless PRECISION says otherwise.
- A CPU with usable AMX (the CPU has AMX tiles, torch sees them, and the kernel grants the process their
  state): bf16, which runs the ViT towers about 3.9x faster than fp32 there, at a min cosine of 0.9999 to
  fp32 on the same weights.
- Any other CPU: fp32. bf16 still runs when asked for, several times slower than fp32 (without AMX oneDNN
  has no fast bf16 matrix kernels); fp16 does not run on a CPU at all and is refused at start-up.
bf16 here is open_clip's mixed `bf16` (LayerNorms stay fp32): as fast as `pure_bf16` on AMX, and closer to fp32.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")


class PrecisionError(ValueError):
    """The precision asked for cannot run on the device."""


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str


def cpu_has_usable_amx() -> bool:
    """True when torch can run AMX bf16 kernels in this process (CPU support and the kernel's permission)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    supported = getattr(cpu, "_is_amx_tile_supported", None)
    init = getattr(cpu, "_init_amx", None)  # asks the kernel for the AMX tile state (arch_prctl)
    if supported is None or init is None:
        return False
    try:
        return bool(supported()) and bool(init())
    except Exception:  # noqa: BLE001 - an old kernel or an unusual build: treat as no AMX
        return False


def refuse_fp16_on_cpu(requested: Optional[str], on_cpu: bool) -> None:
    if requested == "fp16" and on_cpu:
        raise PrecisionError("PRECISION=fp16 cannot run on a CPU (no half-precision kernels there); use "
                             "PRECISION=bf16 (fast on CPUs with AMX) or fp32, or run on a GPU")


def choose_precision(requested: Optional[str], device: str,
                     has_amx: Callable[[], bool] = cpu_has_usable_amx) -> PrecisionChoice:
    on_cpu = not device.startswith("cuda")
    refuse_fp16_on_cpu(requested, on_cpu)
    if not on_cpu:
        if requested:
            return PrecisionChoice(requested, f"PRECISION={requested} was asked for")
        return PrecisionChoice("fp16", "the default on CUDA")
    amx = has_amx()
    if requested == "bf16" and not amx:
        log.warning("PRECISION=bf16 on a CPU without usable AMX: expect it to run several times slower than fp32")
        return PrecisionChoice("bf16", "PRECISION=bf16 was asked for (this CPU has no usable AMX: slow)")
    if requested:
        return PrecisionChoice(requested, f"PRECISION={requested} was asked for")
    if amx:
        return PrecisionChoice("bf16", "the default on a CPU with AMX")
    return PrecisionChoice("fp32", "the default on a CPU without AMX")
