"""How the model runs, as the recipe asks: across processes, compiled, in bfloat16.

    wrap_for_training(model, cfg, ctx)  DDP across the torchrun processes, then
                                        torch.compile (`compile = true`)
    autocast(cfg, device)               bfloat16 autocast (`precision = "bf16"`, or "auto"
                                        on hardware with native bf16), else float32
    check_precision(cfg, device, ctx)   the one-line warning when bf16 falls back

None of them changes what is computed beyond rounding: a compiled model gives the eager
model's logits, bf16 autocast keeps the weights and the optimizer in float32.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import UserError, one_line
from .config import TrainConfig
from .distributed import Distributed


def wrap_for_training(model: nn.Module, train_cfg: TrainConfig, ctx: Distributed) -> nn.Module:
    """The module the loop calls: DDP across processes, then torch.compile, as asked.
    Checkpoints and evaluation use the plain `model`, which shares the same parameters."""
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    if train_cfg.compile:
        model = compiled(model, ctx.device)
    return model


def compiled(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile(model), after a trial: torch.compile works at the first call, and where
    it cannot work at all (no C++ compiler, no Triton, an unsupported Python) a one-line
    function fails at once, before training: one line naming the key, not a traceback."""
    try:
        torch.compile(lambda x: 2 * x + 1)(torch.ones(2, device=device))
        return torch.compile(model)
    except Exception as error:  # whatever the cause, compiling is what failed
        reason = one_line(getattr(error, "inner_exception", None) or error)
        raise UserError(f"compile = true: torch.compile does not work here ({reason}); "
                        "set compile = false") from None


def autocast(train_cfg: TrainConfig, device: torch.device):
    """bfloat16 autocast where `use_bf16` says so, else nothing: float32."""
    if use_bf16(train_cfg, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_bf16(train_cfg: TrainConfig, device: torch.device) -> bool:
    """`precision = "bf16"`: wherever autocast can run it. `precision = "auto"`: only where
    the hardware computes bfloat16 itself (`bf16_native`); emulated, it is slower than
    float32, so there auto means float32."""
    if train_cfg.precision == "auto":
        return bf16_native(device)
    return train_cfg.precision == "bf16" and bf16_supported(device)


def bf16_native(device: torch.device) -> bool:
    """CUDA: as `bf16_supported`. CPU: AMX tiles or AVX512-BF16 (Intel Sapphire Rapids on,
    AMD Zen 4 on); without them autocast converts to and from bfloat16 around float32 maths."""
    if device.type == "cuda":
        return bf16_supported(device)
    if device.type != "cpu":
        return False
    # Private helpers of torch.cpu: read defensively, a later torch may rename them.
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def bf16_supported(device: torch.device) -> bool:
    """CUDA: natively (Ampere on; emulated bfloat16 is slower than float32). CPU: always,
    PyTorch's autocast runs it on any CPU. Anything else: no."""
    if device.type == "cuda":
        with torch.cuda.device(device):  # the question is asked of the current device
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu"


def check_precision(train_cfg: TrainConfig, device: torch.device, ctx: Distributed) -> None:
    """One line on stderr when `precision = "bf16"` falls back to float32 on this device."""
    if train_cfg.precision == "bf16" and not bf16_supported(device) and ctx.is_main:
        print(f'warning: precision = "bf16": {device} has no bfloat16 support; training in '
              "float32", file=sys.stderr, flush=True)
