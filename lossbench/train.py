"""The one shared training loop: DGAN-WP-TL with any registered adversarial loss and a λ.

    L_D = loss.discriminator_loss(D, aug(real), aug(G(z)))            (n_critic times per step)
    L_G = loss.generator_loss(D, aug(real), aug(G(z))) + λ · L_perc(G(z), real)

Conventions:
- `step` counts generator steps, from 1; each is preceded by `n_critic` critic steps, each on a fresh
  real batch and fresh noise. The generator step reuses the last critic step's real batch.
- Seeding: `seed` spawns independent CPU streams for weight initialisation, data order, noise (z and
  augmentation) and torch's global RNG (the losses' own draws, e.g. WGAN-GP's ε). Two runs with the
  same seed start from the same weights and see the same batches and the same z, whatever the loss
  and λ; on CPU they are bit-identical, and so is a run resumed from a checkpoint.
- The EMA generator (used for samples and evaluation) follows ema_t = d_t·ema + (1 - d_t)·G with
  d_t = min(ema_decay, (1 + t) / (10 + t)) (TensorFlow's warm-up, so short runs are not dominated by
  the initial weights); BatchNorm buffers are copied.
- On CUDA: bf16 autocast (the losses compute their penalties in fp32) and channels_last.
- Logged terms ("d/loss", "d/<loss term>", "g/adv", "g/<loss term>", "g/perc", "g/loss") are means
  over the steps since the previous log, taken every `log_every` steps, at each checkpoint and at the
  end. They are checked there for NaN/Inf (one device sync per log, none per step): a DivergedError
  names the first step and term that went bad.

Outputs in `out_dir`: config.json, checkpoint.pt (every `checkpoint_every` steps and at the end,
written atomically), samples.png (final grid from the EMA generator), samples/step_NNNNNN.png
(every `sample_every` steps). `plot_history` draws the loss curves (`lossbench train` writes
loss_curves.png; studies log the curves to MLflow instead).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from lossbench.augment import check_policy, diff_augment
from lossbench.config import TrainConfig, to_dict
from lossbench.errors import ConfigError, DivergedError
from lossbench.files import atomic_write
from lossbench.images import generate_images, to_float
from lossbench.losses import get_loss
from lossbench.models.dgan import Critic, Generator
from lossbench.models.perceptual import PerceptualLoss

if TYPE_CHECKING:
    from lossbench.data import ImageDataset

CHECKPOINT = "checkpoint.pt"
SAMPLE_GRID = "samples.png"
LOSS_CURVES = "loss_curves.png"
CONFIG_JSON = "config.json"
# Fields that may differ between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = {
    "steps",
    "device",
    "checkpoint_every",
    "log_every",
    "sample_every",
    "n_samples",
    "progress",
    "weights_dir",
}


class Callback:
    """Hooks into `train`; every method is a no-op by default. Exceptions raised propagate."""

    def on_log(self, step: int, terms: dict[str, float]) -> None:
        """Mean logged terms over the steps since the previous log."""

    def on_step(self, step: int, generator_ema: nn.Module) -> None:
        """After every generator step (e.g. periodic evaluation, pruning)."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After a checkpoint has been written."""

    def on_end(self, result: TrainResult) -> None:
        """After the last step and the final outputs."""


@dataclass
class TrainResult:
    generator_ema: Generator  # eval mode, on the training device
    steps: int
    out_dir: Path
    history: dict[str, list[tuple[int, float]]]  # term -> [(step, mean value)]
    sample_grid: Path
    checkpoint: Path
    perceptual_weights: str  # "pretrained", "random", or "none" (no perceptual loss)


def train(
    data: ImageDataset,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
) -> TrainResult:
    """Train on `data.images` (uint8 N×1×R×R); with `resume`, continue from out_dir/checkpoint.pt if it
    exists (otherwise start afresh). Raises DivergedError on NaN/Inf, ConfigError on bad settings,
    MissingWeightsError when the perceptual network's weights are absent."""
    out_dir = Path(out_dir)
    device = _device(config.device)
    for name in ("checkpoint_every", "log_every", "n_samples"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    cuda = device.type == "cuda"
    images = data.images.to(device)  # kept in memory as uint8; converted per batch
    resolution, batch_size = images.shape[-1], config.batch_size
    if len(images) < batch_size:
        raise ConfigError(f"batch size {batch_size} is larger than the dataset ({len(images)} images)")
    loss_fn = get_loss(config.loss, **config.loss_params)
    n_critic = config.n_critic or loss_fn.n_critic
    policy = check_policy(config.augment)
    perceptual = None
    if config.uses_perceptual:  # λ = 0 or perceptual "none": no network is built
        perceptual = PerceptualLoss(
            config.perceptual,
            config.perceptual_layers,
            config.perceptual_distance,
            config.perceptual_pairing,
            config.random_weights,
            config.weights_dir,
        ).to(device)

    rng = _rng_streams(config.seed)
    G = Generator(resolution, config.z_dim, config.g_width, rng=rng["init"]).to(device)
    D = Critic(resolution, config.d_width, config.critic_norm, rng=rng["init"]).to(device)
    if cuda and config.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=config.betas)
    sampler = EpochSampler(len(images), batch_size, rng["data"])
    noise_rng = rng["noise"]
    torch.manual_seed(rng["global"].initial_seed())
    history: dict[str, list[tuple[int, float]]] = defaultdict(list)
    step = 0

    checkpoint = out_dir / CHECKPOINT
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        _check_resumable(state["config"], config, checkpoint)
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sampler.load_state_dict(state["sampler"])
        noise_rng.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        if cuda and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        history.update({k: [tuple(x) for x in v] for k, v in state["history"].items()})
        step = state["step"]

    weights = perceptual.weights if perceptual is not None else "none"
    out_dir.mkdir(parents=True, exist_ok=True)  # only once every setting has been checked
    _write_json(
        out_dir / CONFIG_JSON,
        {
            "train": to_dict(config),
            "n_critic": n_critic,
            "loss_params": loss_fn.params(),
            "perceptual_weights": weights,
            "data": {
                "source": getattr(data, "source", None),
                "fingerprint": getattr(data, "fingerprint", None),
                "n_images": len(images),
                "resolution": resolution,
            },
        },
    )

    def amp() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and config.amp)

    def real_batch() -> torch.Tensor:
        return to_float(images[sampler.next()])

    def noise() -> torch.Tensor:
        return torch.randn(batch_size, config.z_dim, generator=noise_rng).to(device)

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policy, noise_rng) if policy else x

    pending: list[tuple[int, dict[str, torch.Tensor]]] = []  # per-step terms since the last log
    with _progress_bar(config) as bar:
        task = bar.add_task(f"{config.loss} λ={config.lam:g}", total=config.steps, completed=step, terms="")
        while step < config.steps:
            # Critic: n_critic steps; the fakes carry no graph back to G.
            D.requires_grad_(True)
            for _ in range(n_critic):
                real = real_batch()
                with torch.no_grad(), amp():
                    fake = G(noise())
                with amp():
                    out_d = loss_fn.discriminator_loss(D, augment(real), augment(fake))
                opt_d.zero_grad(set_to_none=True)
                out_d.loss.backward()
                opt_d.step()

            # Generator: adversarial loss through the frozen critic, plus λ · perceptual loss.
            D.requires_grad_(False)
            with amp():
                fake = G(noise())
                out_g = loss_fn.generator_loss(D, augment(real), augment(fake))
                loss_g = out_g.loss
                perc = perceptual(fake, real) if perceptual is not None else None
                if perc is not None:
                    loss_g = loss_g + config.lam * perc
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            update_ema(G_ema, G, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1

            terms = {f"d/{k}": v for k, v in out_d.terms.items()}
            terms["d/loss"] = out_d.loss.detach()
            terms["g/adv"] = out_g.loss.detach()
            terms.update({f"g/{k}": v for k, v in out_g.terms.items()})
            if perc is not None:
                terms["g/perc"] = perc.detach()
            terms["g/loss"] = loss_g.detach()
            pending.append((step, terms))

            is_checkpoint = step % config.checkpoint_every == 0 or step == config.steps
            if step % config.log_every == 0 or is_checkpoint:
                means = mean_terms(pending)  # raises DivergedError
                pending = []
                for name, value in means.items():
                    history[name].append((step, value))
                bar.update(task, terms="  ".join(f"{k} {v:.3g}" for k, v in means.items()))
                for cb in callbacks:
                    cb.on_log(step, means)
            bar.update(task, completed=step)
            for cb in callbacks:
                cb.on_step(step, G_ema)
            if is_checkpoint:
                _save_atomic(
                    {
                        "step": step,
                        "generator": {
                            "resolution": resolution,
                            "z_dim": config.z_dim,
                            "width": config.g_width,
                        },
                        "G": G.state_dict(),
                        "D": D.state_dict(),
                        "G_ema": G_ema.state_dict(),
                        "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(),
                        "sampler": sampler.state_dict(),
                        "rng": {
                            "noise": noise_rng.get_state(),
                            "torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if cuda else [],
                        },
                        "history": dict(history),
                        "config": to_dict(config),
                    },
                    checkpoint,
                )
                for cb in callbacks:
                    cb.on_checkpoint(step, checkpoint)
            if config.sample_every and step % config.sample_every == 0:
                save_sample_grid(G_ema, out_dir / "samples" / f"step_{step:06d}.png", config, device)

    sample_grid = save_sample_grid(G_ema, out_dir / SAMPLE_GRID, config, device)
    result = TrainResult(G_ema, step, out_dir, dict(history), sample_grid, checkpoint, weights)
    for cb in callbacks:
        cb.on_end(result)
    return result


class EpochSampler:
    """Batches of dataset indices: a fresh permutation each epoch, the last partial batch dropped."""

    def __init__(self, n: int, batch_size: int, rng: torch.Generator) -> None:
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order = torch.randperm(n, generator=rng)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.rng), 0
        self.pos += self.batch_size
        return self.order[self.pos - self.batch_size : self.pos]

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "pos": self.pos, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.pos = state["order"], state["pos"]
        self.rng.set_state(state["rng"])


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 - decay)·model for parameters; buffers (BatchNorm statistics) copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def mean_terms(pending: list[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, float]:
    """Mean of each term over the pending steps; DivergedError at the first non-finite (step, term)."""
    names = list(pending[-1][1])
    values = torch.stack([torch.stack([t[n].float() for n in names]) for _, t in pending]).cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        i, j = bad[0].tolist()  # row-major: the earliest step, then the first term in logging order
        raise DivergedError(pending[i][0], names[j], values[i, j].item())
    return dict(zip(names, values.mean(0).tolist(), strict=True))


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator of a checkpoint written by `train`, in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (train writes it as OUT/{CHECKPOINT})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    G = Generator(**state["generator"])
    G.load_state_dict(state["G_ema"])
    return G.to(device).eval()


def save_sample_grid(G: Generator, path: Path, config: TrainConfig, device: torch.device) -> Path:
    """A square-ish grid of `config.n_samples` images from fixed z (seeded by `config.seed`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = generate_images(G, config.n_samples, config.seed, device=device)
    torchvision.utils.save_image(images.float() / 255, path, nrow=math.ceil(math.sqrt(config.n_samples)))
    return path


def plot_history(history: dict[str, list[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """One panel per logged term against the generator step (matplotlib, no pyplot state)."""
    from matplotlib.figure import Figure

    names = sorted(history)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4 * cols, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, lw=1)
        ax.set_title(name)
        ax.set_xlabel("generator step")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def _rng_streams(seed: int) -> dict[str, torch.Generator]:
    """Independent CPU generators spawned from `seed` (numpy's SeedSequence)."""
    names = ("init", "data", "noise", "global")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {
        name: torch.Generator().manual_seed(int(child.generate_state(1)[0]))
        for name, child in zip(names, children, strict=True)
    }


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return device


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    now = json.loads(json.dumps(to_dict(config)))
    saved = json.loads(json.dumps(saved))
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        diffs = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"cannot resume {path}: the configuration changed ({diffs}); use another --out")


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, default=str) + "\n").encode())


def _progress_bar(config: TrainConfig) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[terms]}"),
        console=Console(stderr=True),
        disable=not (config.progress and sys.stderr.isatty()),
    )
