"""Host↔device transfer points per generator step of the trainer, counted without a GPU.

The trainer runs on PyTorch's "meta" device (shapes only, no data), which stands in for CUDA: a
tensor made on the host is a CPU tensor there, exactly as on CUDA. A TorchDispatchMode sees every
operator and counts
- copies between CPU and the device (`aten._to_copy`, `aten.copy_`), split into blocking and
  non-blocking (`non_blocking=True`; with a pinned source these do not stall on CUDA);
- operators that take a CPU tensor of one element or more together with device tensors (e.g.
  indexing device images with a CPU index), which copy implicitly and block.
0-dim CPU tensors (Python-scalar-like, e.g. Adam's step count) are passed by value and not counted.
Any operator that reads a device value on the host (`.item()`, `.cpu()`) fails on meta, so a
count that completes also shows there is no such read in `train_step`. Autocast has no meta
backend: `torch.autocast("meta", enabled=False)` is replaced by a null context while counting.

    python benchmarks/transfers.py                     # wgangp and bce, with and without augmentation
"""

from __future__ import annotations

import argparse
import contextlib
from collections import Counter
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lossbench.config import TrainConfig
from lossbench.training.train import build, train_step

COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class TransferCounter(TorchDispatchMode):
    """Counts host↔device transfer points ("blocking", "non_blocking") while active (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if t.device.type != "cpu" or t.dim() > 0}
        out = func(*args, **kwargs)
        if func in COPIES:
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst = args[0] if func is torch.ops.aten.copy_.default else out
            crosses = (src.device.type == "cpu") != (dst.device.type == "cpu")
            non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
            if crosses:
                self.counts["non_blocking" if non_blocking else "blocking"] += 1
        elif "cpu" in devices and len(devices) > 1:
            self.counts["blocking"] += 1
        return out


def _autocast(device_type: str, *args, **kwargs):
    if device_type == "meta" and not kwargs.get("enabled", True):
        return contextlib.nullcontext()
    return _AUTOCAST(device_type, *args, **kwargs)


_AUTOCAST = torch.autocast


def count_per_step(config: TrainConfig, n_images: int, steps: int) -> dict[str, float]:
    """Mean transfer points per generator step of `train_step` on the meta device over `steps` steps
    (after one step not counted), with `n_images` training images of the config's resolution."""
    images = torch.zeros(n_images, 1, 32, 32, dtype=torch.uint8)
    with mock.patch.object(torch, "autocast", _autocast):
        run = build(images, config)
        train_step(run, 0)
        with TransferCounter() as counter:
            for step in range(1, steps + 1):
                train_step(run, step)
    return {kind: counter.counts[kind] / steps for kind in ("blocking", "non_blocking")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--losses", default="wgangp,bce")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=780, help="dataset size (epoch copies are amortised)")
    args = ap.parse_args()
    print(f"meta device, R=32, batch 64, {args.images} images, mean over {args.steps} generator steps")
    print(f"{'loss':>8} {'augment':>26} {'blocking':>9} {'non-blocking':>13}")
    for loss in args.losses.split(","):
        for augment in ((), ("color", "translation", "cutout")):
            config = TrainConfig(
                loss=loss, device="meta", batch_size=64, perceptual="none", augment=augment, progress=False
            )
            c = count_per_step(config, args.images, args.steps)
            policy = ",".join(augment) or "none"
            print(f"{loss:>8} {policy:>26} {c['blocking']:>9.2f} {c['non_blocking']:>13.2f}")


if __name__ == "__main__":
    main()
