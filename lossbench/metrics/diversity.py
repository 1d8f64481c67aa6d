"""LPIPS and MS-SSIM over random disjoint pairs of images from one set: diversity within the set.

- Pairs: a permutation of the N images drawn from a torch.Generator seeded with `seed`; pair i is
  (perm[i], perm[n_pairs + i]), so no image appears twice; n_pairs <= N // 2.
- LPIPS: the lpips package, v0.1, AlexNet backbone; inputs uint8 -> [-1, 1], grayscale repeated to
  3 channels. Higher = more diverse. The AlexNet backbone is loaded from torchvision's file
  `alexnet-owt-7be5be79.pth` (found by `lossbench.weights`), or left random only when asked
  (`random_weights=True`, seeded); the result records which.
- MS-SSIM: pytorch-msssim on the uint8 values as floats (data_range 255), one channel. Window: the
  largest odd size <= 11 for which the 5-scale pyramid fits (smaller side > (win - 1) * 16): 3 at
  R = 64, 7 at R = 128, 11 from R = 256. At R = 32 no window fits and single-scale SSIM (window 11)
  is used instead; the mode is recorded. Lower = more diverse.
- Each figure is the mean and the population standard deviation (ddof = 0) over the pairs.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

import lpips
import torch
from pytorch_msssim import ms_ssim, ssim

from lossbench.errors import MissingWeightsError
from lossbench.images import to_float
from lossbench.weights import find_weights, load_state_dict

MSSSIM_LEVELS = 5
MAX_WINDOW = 11  # pytorch-msssim's default


def random_pairs(n: int, n_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (a, b) of `n_pairs` disjoint pairs among `n` items, seeded."""
    if not 1 <= n_pairs <= n // 2:
        raise ValueError(f"cannot draw {n_pairs} disjoint pairs from {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_pairs], perm[n_pairs : 2 * n_pairs]


@torch.no_grad()
def pair_values(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    n_pairs: int,
    seed: int,
    batch_size: int = 100,
    device: str = "cpu",
) -> torch.Tensor:
    """`score(x, y)` of each of `n_pairs` random disjoint pairs of `images` (float64, on CPU)."""
    a, b = random_pairs(len(images), n_pairs, seed)
    return torch.cat(
        [
            score(images[i].to(device), images[j].to(device)).flatten().double().cpu()
            for i, j in zip(a.split(batch_size), b.split(batch_size), strict=True)
        ]
    )


def mean_std(values: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) std of `pair_values(...)`."""
    return values.mean().item(), values.std(correction=0).item()


def msssim_window(resolution: int) -> tuple[str, int]:
    """("ms-ssim", window) when the 5-scale pyramid fits `resolution`, else ("ssim", 11)."""
    win = min(MAX_WINDOW, (resolution - 1) // 2 ** (MSSSIM_LEVELS - 1) + 1)  # largest with R > (win-1)*16
    win -= 1 - win % 2  # odd
    return ("ms-ssim", win) if win >= 3 else ("ssim", MAX_WINDOW)


def msssim_score(resolution: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-pair MS-SSIM (or SSIM, see `msssim_window`) of two uint8 batches."""
    mode, win = msssim_window(resolution)
    fn = ms_ssim if mode == "ms-ssim" else ssim
    return lambda x, y: fn(x.float(), y.float(), data_range=255, win_size=win, size_average=False)


@functools.lru_cache(maxsize=2)
def _lpips(weights_path: str | None, seed: int, device: str) -> lpips.LPIPS:
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecation of `pretrained=`
        torch.manual_seed(seed)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if weights_path is not None:
        state = load_state_dict("alexnet", weights_path)
        mapped = {}
        for name, _ in model.net.named_parameters():  # "slice2.3.weight" <- "features.3.weight"
            source = "features." + name.split(".", 1)[1]
            if source not in state:
                raise MissingWeightsError(
                    f"{weights_path} is not a torchvision AlexNet state_dict (no {source})"
                )
            mapped[name] = state[source]
        model.net.load_state_dict(mapped)
    return model.to(device).eval().requires_grad_(False)


def load_lpips(
    weights_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[lpips.LPIPS, str]:
    """LPIPS v0.1 (AlexNet) and the backbone it uses: the weights file name, or "random(seed=S)"."""
    if random_weights:
        return _lpips(None, seed, str(device)), f"random(seed={seed})"
    path = find_weights("alexnet", weights_dir)
    return _lpips(str(path), seed, str(device)), path.name


def lpips_score(model: lpips.LPIPS) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-pair LPIPS of two uint8 batches N×C×H×W (C in {1, 3})."""

    def to_lpips(x: torch.Tensor) -> torch.Tensor:
        x = to_float(x)
        return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    return lambda x, y: model(to_lpips(x), to_lpips(y))
