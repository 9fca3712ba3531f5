"""Where torch work runs (the GPU when there is one, else the CPU) and at which precision training computes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from fersynth.errors import ParamsError

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return resolve_device("auto")


def resolve_device(setting: str, local_rank: int | None = None) -> torch.device:
    """The device an execution setting names: auto (a GPU when there is one), cpu, cuda or cuda:N.

    `local_rank` is this process's index on its machine when torchrun started several: each then takes
    its own GPU, cuda:<local_rank>, since NCCL refuses two ranks on one GPU.
    """
    wants_gpu = setting.startswith("cuda") or (setting == "auto" and torch.cuda.is_available())
    if not wants_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ParamsError(f"device {setting!r}: torch sees no CUDA GPU here (set the device to auto or cpu)")
    if local_rank is None:
        return torch.device(setting if setting != "auto" else "cuda")
    if setting not in ("auto", "cuda"):
        raise ParamsError(f"device {setting!r} names one GPU, but each training process needs its own: use cuda")
    if local_rank >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ParamsError(
            f"training process {local_rank} on this machine has no GPU of its own (torch sees {count}): "
            f"train in at most {count} processes, or set the device to cpu"
        )
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Precision:
    """How training computes: in fp32, or autocast to a 16-bit type (mixed precision) on a GPU."""

    name: str  # "fp32", "bf16-amp" or "fp16-amp": recorded beside the metrics
    device_type: str
    dtype: torch.dtype | None  # what autocast computes in; None: fp32 throughout

    def autocast(self) -> torch.autocast:
        """Forward passes and losses in `dtype` where torch deems it safe; a no-op for fp32."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales fp16 losses so small gradients do not underflow; a pass-through otherwise (bf16 has fp32's range)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def cpu_computes_bf16() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX512-BF16, AMX). Elsewhere bf16 autocast is emulated: on an
    AVX2 CPU one FER2013 epoch of VGG width 32 took over 6 minutes, against 44 s in bf16 on an AVX512-BF16 one."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_precision(device: torch.device, cpu_bf16: bool = False) -> Precision:
    """Mixed precision on a GPU (bf16 where it has it, else fp16); on the CPU fp32, or bf16 autocast when asked
    (`cpu_bf16`) and the CPU computes in bf16: elsewhere it would be slower, so fp32 is used, with a warning."""
    if device.type != "cuda":
        if cpu_bf16 and not cpu_computes_bf16():
            log.warning(
                "cpu_bf16: this CPU (%s) has no bf16 units, where bf16 is several times slower than fp32: "
                "training in fp32",
                torch.backends.cpu.get_cpu_capability(),
            )
            cpu_bf16 = False
        return Precision("bf16-amp", device.type, torch.bfloat16) if cpu_bf16 else Precision("fp32", device.type, None)
    if torch.cuda.is_bf16_supported():
        return Precision("bf16-amp", device.type, torch.bfloat16)
    return Precision("fp16-amp", device.type, torch.float16)


def step_optimizer(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backpropagate `loss` (scaled for fp16) and update; call `scaler.update()` once all of a step's updates ran."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
