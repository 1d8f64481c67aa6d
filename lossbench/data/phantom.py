"""A procedural breast-ultrasound phantom: the built-in dataset that needs nothing from outside.

Each image is a linear-probe B-mode frame built the way a scanner forms one:
1. an echogenicity map in dB: layered tissue (skin line, dark subcutaneous fat, bright mottled
   glandular tissue with horizontal streaks, muscle, dark chest wall) with wavy boundaries, depth
   attenuation, and for the lesion classes a hypoechoic lesion:
   - benign: round-to-oval, wider than tall, smooth margin, posterior acoustic enhancement;
   - malignant: irregular and spiculated, taller, echogenic halo, posterior acoustic shadowing;
   - normal: no lesion;
2. fully developed speckle: complex Gaussian scatterers weighted by the echogenicity amplitude and
   blurred by an anisotropic point-spread function (wider laterally than axially); the envelope is
   Rayleigh distributed (multiplicative noise);
3. log compression of the envelope to a display dynamic range, quantised to uint8.

Determinism: image i draws every random number from its own generator, seeded by (seed, i). The
first k images are therefore the same whatever count is asked for, and the layout (everything but
the speckle) is the same at every resolution. Labels follow BUSI's class proportions (437/210/133)
in an interleaved order that is exact at 780 images and close for any count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.errors import ConfigError

PHANTOM_CLASSES = ("benign", "malignant", "normal")
PHANTOM_COUNTS = (437, 210, 133)  # BUSI's class sizes
PHANTOM_SIZE = sum(PHANTOM_COUNTS)

# Tissue layers, top to bottom: skin, fat, gland, muscle, chest wall. Levels in dB, depths in [0, 1].
LAYER_DB = (2.0, -18.0, -8.0, -14.0, -24.0)
BOUNDARY_DEPTH = (0.05, 0.27, 0.70, 0.90)
WHITE_DB = 6.0  # displayed as 255
DYNAMIC_RANGE_DB = 44.0  # displayed from WHITE_DB - DYNAMIC_RANGE_DB (black) to WHITE_DB (white)
N_HARMONICS = 10  # lesion-margin harmonics
N_SPIKES = 12  # malignant spiculations (a random number of them are used)


def phantom_labels(n: int) -> np.ndarray:
    """Class indices for images 0..n-1: each next image goes to the class furthest below its share.

    The sequence does not depend on n (a prefix of a longer one), and holds exactly
    PHANTOM_COUNTS at n = PHANTOM_SIZE.
    """
    share = np.array(PHANTOM_COUNTS, dtype=np.float64) / PHANTOM_SIZE
    counts = np.zeros(len(share))
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        c = int(np.argmax(share * (i + 1) - counts))
        labels[i] = c
        counts[c] += 1
    return labels


def _draw(seed: int, index: int, resolution: int) -> dict[str, np.ndarray]:
    """Every random number image `index` uses; the speckle (the only resolution-dependent draw) last."""
    rng = np.random.default_rng([seed, index])
    u = rng.uniform
    return {
        "levels": np.array(LAYER_DB) + u(-3.0, 3.0, 5),
        "bounds": np.array(BOUNDARY_DEPTH) + u(-1.0, 1.0, 4) * (0.015, 0.08, 0.1, 0.06),
        "wiggle_amp": u(0.0, 1.0, (4, 3)) * 0.03 / np.arange(1, 4),
        "wiggle_phase": u(0.0, 2 * math.pi, (4, 3)),
        "texture": rng.standard_normal((22, 5)),
        "streaks": rng.standard_normal((64, 4)),
        "attenuation_db": u(10.0, 24.0, 1),
        # lesion: centre x, centre y, radius, aspect (width/height), tilt, level, posterior effect
        "lesion": u(0.0, 1.0, 7),
        "harmonic_amp": rng.standard_normal(N_HARMONICS),
        "harmonic_phase": u(0.0, 2 * math.pi, N_HARMONICS),
        "spike_angle": u(0.0, 2 * math.pi, N_SPIKES),
        "spike_amp": u(0.0, 1.0, N_SPIKES) * (np.arange(N_SPIKES) < rng.integers(5, N_SPIKES + 1)),
        "shadow_streaks": rng.standard_normal((1, 24)),
        "speckle": rng.standard_normal((2, resolution, resolution), dtype=np.float32),
    }


def _b(v: torch.Tensor) -> torch.Tensor:
    """(B,) -> B×1×1, to broadcast per-image values over B×R×R maps."""
    return v[:, None, None]


def _sample(
    grid: torch.Tensor, x: torch.Tensor, y: torch.Tensor, align_corners: bool = False
) -> torch.Tensor:
    """Bilinear samples of B×h×w grids spanning [0, 1]² at coordinates (x, y) broadcastable to B×H×W."""
    coords = torch.stack(torch.broadcast_tensors(2 * x - 1, 2 * y - 1), dim=-1).expand(len(grid), -1, -1, -1)
    return F.grid_sample(grid[:, None], coords, padding_mode="border", align_corners=align_corners)[:, 0]


def _periodic_filter(r: int, sigma_y: float, sigma_x: float, norm: str) -> torch.Tensor:
    """rfft2 of a periodic R×R Gaussian kernel (sigmas in pixels), unit 'l2' norm or unit 'sum'."""
    d = torch.fft.fftfreq(r) * r  # signed pixel offsets
    k = torch.exp(-0.5 * ((d[:, None] / max(sigma_y, 1e-3)) ** 2 + (d[None, :] / max(sigma_x, 1e-3)) ** 2))
    return torch.fft.rfft2(k / (k.norm() if norm == "l2" else k.sum()))


def _speckle_db(noise: torch.Tensor, resolution: int) -> torch.Tensor:
    """Speckle in dB (mean power 0 dB) from B×2×R×R white noise (the real and imaginary scatterers).

    The point-spread function is a Gaussian wider laterally than axially; the envelope power is then
    lightly smoothed (as scanners' speckle reduction does), which removes the deepest nulls.
    """
    r, scale = resolution, resolution / 128
    psf = _periodic_filter(r, 0.45 * scale, 1.2 * scale, "l2")  # keeps unit variance per field
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * psf, s=(r, r))
    power = (field**2).sum(1) / 2  # mean 1: |complex Gaussian|^2, exponential (Rayleigh envelope)
    # at least ~1 px even at low resolution, where a real image's downsampling would average the speckle
    smooth = _periodic_filter(r, max(0.5 * scale, 0.7), max(0.7 * scale, 0.8), "sum")
    power = torch.fft.irfft2(torch.fft.rfft2(power) * smooth, s=(r, r))
    return 10 * torch.log10(power.clamp_min(1e-6))


def _lesion(
    p: dict[str, torch.Tensor], malignant: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft masks (B×R×R, 1 inside): the lesion, a band around it (halo), and the region behind it."""
    lesion, b = p["lesion"], _b
    cx, cy = 0.3 + 0.4 * lesion[:, 0], 0.34 + 0.22 * lesion[:, 1]
    radius = torch.where(malignant, 0.10 + 0.09 * lesion[:, 2], 0.06 + 0.12 * lesion[:, 2])
    aspect = torch.where(malignant, 0.75 + 0.35 * lesion[:, 3], 1.3 + 0.6 * lesion[:, 3])  # width/height
    tilt = (lesion[:, 4] - 0.5) * 0.6
    dx, dy = x - b(cx), y - b(cy)
    c, s = b(torch.cos(tilt)), b(torch.sin(tilt))
    u = (c * dx + s * dy) / b(aspect.sqrt())
    v = (-s * dx + c * dy) * b(aspect.sqrt())
    dist, theta = torch.sqrt(u**2 + v**2), torch.atan2(v, u)

    # margin radius rho(angle) / radius on a table of angles: smooth (two weak low harmonics) for
    # benign; lobulated (every harmonic, stronger) plus thin spiculations for malignant
    n_angles = 360
    angles = torch.arange(n_angles, dtype=torch.float32) * (2 * math.pi / n_angles) - math.pi
    k = torch.arange(2, N_HARMONICS + 2, dtype=torch.float32)
    m = malignant[:, None].float()
    amp = p["harmonic_amp"] * (m * 0.13 / k.sqrt() + (1 - m) * 0.04 * (k < 4).float())
    shape = 1 + (amp[:, None] * torch.cos(angles[:, None] * k + p["harmonic_phase"][:, None])).sum(-1)
    gap = torch.remainder(angles[:, None] - p["spike_angle"][:, None] + math.pi, 2 * math.pi) - math.pi
    spikes = (p["spike_amp"][:, None] * torch.exp(-0.5 * (gap / 0.02) ** 2)).sum(-1)
    table = shape + m * 0.45 * spikes
    table = torch.cat([table, table[:, :1]], dim=1)[:, None]  # B×1×(n_angles + 1), closed circle
    rho = b(radius) * _sample(table, (theta + math.pi) / (2 * math.pi), torch.zeros(()), align_corners=True)

    edge = b(radius) * torch.where(b(malignant), 0.05, 0.04)
    inside = torch.sigmoid((rho - dist) / edge)
    band = torch.sigmoid((1.3 * rho - dist) / edge) - inside
    # the columns below the lesion's central part (0.7 of its radius, ignoring the tilt)
    core = torch.sigmoid((0.7 * b(radius * aspect.sqrt()) - dx.abs()) / (2 * edge))
    behind = core * torch.sigmoid(dy / edge)
    return inside, band, behind


def _render(p: dict[str, torch.Tensor], labels: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images B×1×R×R uint8 from the stacked draws `p` and class indices `labels`."""
    n, r, b = len(labels), resolution, _b
    t = (torch.arange(r, dtype=torch.float32) + 0.5) / r
    y, x = t.view(1, r, 1), t.view(1, 1, r)

    # layered tissue with wavy boundaries; texture and streaks follow the layers' mean curvature
    f = torch.arange(1, 4, dtype=torch.float32)
    phase = 2 * math.pi * f[:, None] * t + p["wiggle_phase"][..., None]  # B×4×3×R
    wiggle = (p["wiggle_amp"][..., None] * torch.sin(phase)).sum(2)
    bounds = p["bounds"][..., None] + wiggle  # B×4×R: depth of each boundary, per column
    levels = p["levels"]
    db = b(levels[:, 0]).expand(n, r, r)
    for i in range(4):
        step = torch.sigmoid((y - bounds[:, i, None, :]) / (0.006 + 0.004 * i))
        db = db + b(levels[:, i + 1] - levels[:, i]) * step
    along = y - wiggle.mean(1)[:, None, :]  # depth measured along the layers
    texture = _sample(p["texture"], x, along)
    db = db + 6.0 * texture + 7.0 * F.relu(_sample(p["streaks"], x, along) - 0.4)  # streaks: ligaments

    # lesion: dark interior, posterior shadowing (malignant) or enhancement (benign), halo (malignant)
    malignant = labels == 1
    inside, band, behind = _lesion(p, malignant, x, y)
    has_lesion = b((labels != 2).float())
    inside, band = inside * has_lesion, band * b(malignant.float())
    level = b(torch.where(malignant, -28.0, -36.0) + torch.where(malignant, 6.0, 12.0) * p["lesion"][:, 5])
    interior = level + torch.where(b(malignant), 1.0, 0.3) * texture
    posterior = torch.where(malignant, -7.0 - 7 * p["lesion"][:, 6], 1.0 + 4 * p["lesion"][:, 6])
    streaky = 1 + 0.35 * F.interpolate(p["shadow_streaks"], size=r, mode="linear")  # B×1×R
    behind = behind * has_lesion * (1 - inside) * streaky
    db = db * (1 - inside) + interior * inside + 4.0 * band + b(posterior) * behind

    # depth attenuation (after time-gain compensation), speckle, log compression
    db = db - b(p["attenuation_db"][:, 0]) * y + _speckle_db(p["speckle"], r)
    gray = (db - (WHITE_DB - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB
    return (gray.clamp(0, 1) * 255).round().to(torch.uint8)[:, None]


def phantom(
    n: int, resolution: int, seed: int = 0, chunk_pixels: int = 1 << 21
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` phantom images (uint8 n×1×R×R) and their labels (int64, indices into PHANTOM_CLASSES)."""
    if n < 1:
        raise ConfigError(f"phantom image count must be at least 1, got {n}")
    if seed < 0:
        raise ConfigError(f"phantom seed must be >= 0, got {seed}")
    labels = torch.from_numpy(phantom_labels(n))
    chunk = max(1, chunk_pixels // (resolution * resolution))
    images = []
    for start in range(0, n, chunk):
        draws = [_draw(seed, i, resolution) for i in range(start, min(n, start + chunk))]
        p = {k: torch.from_numpy(np.stack([d[k] for d in draws]).astype(np.float32)) for k in draws[0]}
        images.append(_render(p, labels[start : start + chunk], resolution))
    return torch.cat(images), labels
