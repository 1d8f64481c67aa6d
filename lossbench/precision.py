"""The floating-point precision of each part of lossbench, decided once and enforced here.

- Training on CUDA: bf16 autocast when `TrainConfig.amp` (the trainer); CPU runs are fp32.
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

from collections.abc import Iterator
from contextlib import contextmanager

from lossbench.lazy import LazyModule

torch = LazyModule("torch")  # the losses import this module; checking their parameters needs no torch

EVAL_PRECISION = "fp32"  # no TF32: see `fp32`


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
