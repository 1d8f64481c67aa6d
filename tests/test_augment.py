"""DiffAugment under autocast: translation is an exact integer shift whatever the precision."""

from __future__ import annotations

import pytest
import torch

from lossbench.training.augment import cutout, translation


def shifted(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Independent reference: each image rolled by (sy, sx), the wrapped-around band set to zero."""
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(len(x)):
        y = torch.roll(x[i], shifts=(int(sy[i]), int(sx[i])), dims=(-2, -1))
        rows, cols = torch.arange(h) - sy[i], torch.arange(w) - sx[i]
        y[:, (rows < 0) | (rows >= h), :] = 0
        y[:, :, (cols < 0) | (cols >= w)] = 0
        out[i] = y
    return out


@pytest.mark.parametrize("size", [256, 512])
def test_translation_is_an_exact_shift_under_bf16_autocast(size):
    x = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = translation(x, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same draws: x shifts, then y shifts, in [-size/8, size/8]
    m = size // 8
    sx, sy = torch.randint(-m, m + 1, (4, 1), generator=g), torch.randint(-m, m + 1, (4, 1), generator=g)
    assert out.dtype == x.dtype and (sx != 0).any() and (sy != 0).any()
    assert torch.equal(out, shifted(x, sx.flatten(), sy.flatten()))  # every pixel


def test_translation_keeps_bf16_input_exact_and_passes_gradients():
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).to(torch.bfloat16).requires_grad_(True)
    out = translation(x, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    sx, sy = torch.randint(-8, 9, (2,), generator=g), torch.randint(-8, 9, (2,), generator=g)
    assert torch.equal(out, shifted(x.detach(), sx, sy))
    out.float().sum().backward()
    assert x.grad is not None and x.grad.sum() > 0


def test_cutout_under_autocast_zeroes_the_same_square_as_in_fp32():
    x = torch.rand(4, 1, 256, 256) + 0.5  # no zeros of its own
    expected = cutout(x, torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cutout(x, torch.Generator().manual_seed(2))
    assert torch.equal(out, expected) and (out == 0).any()
