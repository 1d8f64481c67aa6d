"""The floating-point precision of each part of lossbench, decided once and enforced here.

- Training: bf16 autocast for the networks when `TrainConfig.amp` and the device computes bf16
  natively (`training_precision`: CUDA, or a CPU with AVX512-BF16, AMX-BF16 or Arm's BF16); fp32
  otherwise. The resolved precision ("bf16" or "fp32") changes results, so it is recorded with every
  run (config.json, checkpoints, a study's identity and each cell's settings).
- Critic penalties (lossbench.losses.penalties): fp32, autocast off and no TF32.
- Evaluation (feature extraction, LPIPS, MS-SSIM, generating the fakes): fp32, no TF32.

TF32 (NVIDIA Ampere and later) rounds the inputs of fp32 matmuls and convolutions to 10 mantissa
bits; PyTorch allows it for cuDNN convolutions by default. `fp32` switches it off for cuDNN and
CUDA matmuls inside a block (legacy flags `torch.backends.cudnn.allow_tf32` and
`torch.backends.cuda.matmul.allow_tf32`, restored afterwards; on a CPU they change nothing).
Real features computed on a CPU and on a GPU still differ in rounding, so the feature cache key
and the evaluation settings carry `identity(device)`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lossbench.lazy import LazyModule

torch = LazyModule("torch")  # the losses import this module; checking their parameters needs no torch

EVAL_PRECISION = "fp32"  # no TF32: see `fp32`
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo: x86 flags, Arm features


@functools.cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 on x86, BF16 on Arm), from the
    flags Linux lists; False where they cannot be read (other systems): fp32 is never wrong there."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return bool(CPU_BF16_FLAGS & set(value.split()))
    return False


def training_precision(device: str | torch.device, amp: bool) -> str:
    """The precision a run trains in on `device`: "bf16" when `amp` and the device computes bf16
    natively (any CUDA device; a CPU with `cpu_has_bf16`), else "fp32"."""
    kind = str(device).partition(":")[0]  # "cuda:1" -> "cuda"; no torch needed
    return "bf16" if amp and (kind == "cuda" or (kind == "cpu" and cpu_has_bf16())) else "fp32"


def legacy_precision(device: str | torch.device, amp: bool) -> str:
    """The precision runs trained in before it was recorded (until 2026-12-05, CPUs trained in fp32):
    "bf16" on CUDA with `amp`, else "fp32". Read for checkpoints and studies that do not record it."""
    return "bf16" if amp and str(device).partition(":")[0] == "cuda" else "fp32"


@contextmanager
def fp32() -> Iterator[None]:
    """Inside the block, fp32 convolutions and matmuls on CUDA are computed in full fp32 (no TF32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def identity(device: str | torch.device) -> dict[str, str]:
    """What evaluation numbers depend on besides the networks, for settings and cache keys: the device
    type and the precision ("dtype"; not "precision", which is a metric's key)."""
    return {"device_type": torch.device(device).type, "dtype": EVAL_PRECISION}
