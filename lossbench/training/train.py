"""The one shared training loop: DGAN-WP-TL with any registered adversarial loss and a λ.

    L_D = loss.discriminator_loss(D, aug(real), aug(G(z)))            (n_critic times per step)
    L_G = loss.generator_loss(D, aug(real), aug(G(z))) + λ · L_perc(G(z), real)

Conventions:
- `step` counts generator steps, from 1; each is preceded by `n_critic` critic steps, each on a fresh
  real batch and fresh noise. The generator step reuses the last critic step's real batch.
- Seeding: `seed` spawns independent CPU streams for weight initialisation, data order, noise (z and
  augmentation) and the losses' own draws (e.g. WGAN-GP's ε: a generator on the training device,
  `Run.loss_rng`, given to the losses through `penalties.drawing_from`; torch's global RNG is seeded
  the same for plugin losses that draw from it). Two runs with the same seed start from the same
  weights and see the same batches and the same z, whatever the loss and λ; on CPU they are
  bit-identical, and so is a run resumed from a checkpoint.
- The EMA generator (used for samples and evaluation) follows ema_t = d_t·ema + (1 - d_t)·G with
  d_t = min(ema_decay, (1 + t) / (10 + t)) (TensorFlow's warm-up, so short runs are not dominated by
  the initial weights); BatchNorm buffers are copied.
- Class-conditional (`conditional`): each step's fakes take the class indices of its real batch, and
  those indices are bound to the critic (`BoundCritic`) before the loss sees it, so every loss
  (plugins included) still calls D(x) on real, fake and mixed batches of one label vector. The
  architecture gets `n_classes` = 1 + the largest label (the classes); no extra random draw is made.
  Sample grids then hold one row per class.
- Precision: bf16 autocast when `amp` and the device computes bf16 natively (CUDA; a CPU with
  AVX512-BF16/AMX), fp32 otherwise (`precision.training_precision`, recorded as "precision" in
  config.json and checkpoints; a run never resumes in another precision). The losses compute their
  penalties in fp32 and TF32 is off (lossbench.precision).
- On CUDA: channels_last (not for a GroupNorm critic), cudnn.benchmark. Adam is the fused one.
- The perceptual loss's real side is computed once per training image (`PerceptualLoss.cache_reals`,
  within `REAL_FEATURE_BUDGET` bytes): the frozen network's features of a real image never change.
- Host-device traffic per generator step: one non-blocking copy of the step's CPU draws (z and
  augmentation parameters, `lossbench.training.randomness`) and, once per epoch, the data order; no device
  value is read on the host between logs.
- Logged terms ("d/loss", "d/<loss term>", "g/adv", "g/<loss term>", "g/perc", "g/loss") are means
  over the steps since the previous log, taken every `log_every` steps, at each checkpoint and at the
  end. They are checked there for NaN/Inf (one device sync per log, none per step): a DivergedError
  names the first step and term that went bad.

Parts: `build` (networks by name from lossbench.models, optimisers, loss, perceptual loss, RNG
streams), `train_step` (one generator step; returns the terms to log), `checkpoint_state`/`restore`
(the checkpoint; `load_generator` reads the same state). `train` is the loop over them.

Outputs in `out_dir`: config.json (settings, architecture, data provenance), checkpoint.pt (every
`checkpoint_every` steps and at the end, written atomically), samples.png (final grid from the EMA
generator), samples/step_NNNNNN.png (every `sample_every` steps). `plot_history` draws the loss
curves (`lossbench train` writes loss_curves.png; studies log the curves to MLflow instead).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from lossbench import health, precision
from lossbench.config import RUN, TrainConfig, fields_with_role, lambda_label, lambda_text, to_dict
from lossbench.errors import CheckpointError, ConfigError, DivergedError, first_line
from lossbench.files import atomic_write, check_folder, load_tensors
from lossbench.images import class_labels, generate_images, to_float
from lossbench.losses import AdversarialLoss, LossOutput, get_loss
from lossbench.losses.penalties import drawing_from
from lossbench.models.perceptual import PerceptualLoss
from lossbench.models.registry import BoundCritic, build_model, builder_defaults
from lossbench.training.augment import diff_augment
from lossbench.training.augment import draws as augmentation_draws
from lossbench.training.randomness import Draw, Draws, to_device

if TYPE_CHECKING:
    from lossbench.data import ImageDataset

CHECKPOINT = "checkpoint.pt"
SAMPLE_GRID = "samples.png"
LOSS_CURVES = "loss_curves.png"
CONFIG_JSON = "config.json"
# Fields that may differ between a run and its resumption: the RUN fields, and `steps` (a resume may
# extend the run). Everything else must match the checkpoint's config.
RESUMABLE_CHANGES = fields_with_role(TrainConfig, RUN) | {"steps"}
# Bytes the cached real-side features of the perceptual loss may take (PerceptualLoss.cache_reals);
# above it the real side is computed per batch as before. BUSI at 64 px: about 0.5 GB in bf16.
REAL_FEATURE_BUDGET = 2 * 2**30

History = dict[str, list[tuple[int, float]]]  # term -> [(step, mean value)]


class Callback:
    """Hooks into `train`; every method is a no-op by default. Exceptions raised propagate."""

    def on_start(self, step: int) -> None:
        """Before the first step of this call: `step` is 0, or the step a resumed run continues from."""

    def on_log(self, step: int, terms: dict[str, float]) -> None:
        """Mean logged terms over the steps since the previous log."""

    def on_health(self, step: int, findings: dict[str, str]) -> None:
        """After each health probe (lossbench.health): every finding now, {kind: one-line warning}."""

    def on_step(self, step: int, generator_ema: nn.Module) -> None:
        """After every generator step (e.g. periodic evaluation, pruning)."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After a checkpoint has been written."""

    def on_end(self, result: TrainResult) -> None:
        """After the last step and the final outputs."""


@dataclass
class TrainResult:
    generator_ema: nn.Module  # eval mode, on the training device
    steps: int
    out_dir: Path
    history: History
    sample_grid: Path
    checkpoint: Path
    perceptual_weights: str  # "pretrained", "random", or "none" (no perceptual loss)
    precision: str  # "bf16" or "fp32" (lossbench.precision.training_precision)


@dataclass
class Run:
    """Everything one training run builds: networks, optimisers, loss, perceptual loss, RNG streams."""

    config: TrainConfig
    device: torch.device
    images: torch.Tensor  # uint8 N×1×R×R on `device`
    labels: torch.Tensor | None  # int64 N on `device` when conditional
    model: dict[str, Any]  # the architecture's name and arguments (stored in checkpoints)
    loss_fn: AdversarialLoss
    n_critic: int
    perceptual: PerceptualLoss | None
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sampler: EpochSampler
    noise_rng: torch.Generator
    loss_rng: torch.Generator  # the losses' draws, on `device`

    @property
    def perceptual_weights(self) -> str:
        return self.perceptual.weights if self.perceptual is not None else "none"

    @property
    def precision(self) -> str:
        """The training precision: "bf16" (networks under bf16 autocast) or "fp32" (lossbench.precision)."""
        return precision.training_precision(self.device, self.config.amp)


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
    member = start_member(data, config, out_dir, callbacks, resume)
    result = train_loop([member], lambda step: [train_step(member.run, step)])[0]
    if isinstance(result, DivergedError):
        raise result
    return result


@dataclass
class Member:
    """A run in the training loop: where its outputs go, whom it reports to, what it logged. The loop
    trains several members at once when they are fused (lossbench.training.fused)."""

    run: Run
    out_dir: Path
    callbacks: Sequence[Callback]
    step: int  # generator steps done
    history: History
    # Per-step terms since the last log.
    pending: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    diverged: DivergedError | None = None
    # What the member's checkpoint holds; None: `checkpoint_state` of its run. A fused group sets its
    # own, which writes the member's part of the fused tensors and optimiser state.
    state_fn: Callable[[], dict[str, Any]] | None = None
    warned: list[str] = field(default_factory=list)  # health findings already reported (lossbench.health)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT

    def checkpoint_state(self) -> dict[str, Any]:
        """What `restore` reads."""
        if self.state_fn is not None:
            return self.state_fn()
        return checkpoint_state(self.run, self.step, self.history)


def start_member(
    data: ImageDataset,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    perceptual: PerceptualLoss | None = None,
) -> Member:
    """Build a run (`build`), restore its checkpoint when resuming, write config.json and call the
    callbacks' `on_start`."""
    out_dir = check_folder(out_dir, "training output")
    run = build(data.images, config, data.labels if config.conditional else None, perceptual)
    member = Member(run, out_dir, callbacks, 0, defaultdict(list))
    if resume and member.checkpoint.exists():
        member.step, member.history = restore(run, _load_checkpoint(member.checkpoint), member.checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once every setting has been checked
    _write_json(out_dir / CONFIG_JSON, _run_record(run, data))
    for cb in callbacks:
        cb.on_start(member.step)
    return member


def train_loop(
    members: Sequence[Member], step_fn: Callable[[int], list[dict[str, torch.Tensor]]]
) -> list[TrainResult | DivergedError]:
    """Step the members (all at the same step) to their `config.steps`: `step_fn(step)` runs generator
    step `step + 1` of every member and returns each one's terms. Logging, checkpoints, sample grids
    and callbacks follow the first member's config (fused members share it). A member whose terms go
    NaN/Inf stops reporting and writing; its result is its DivergedError."""
    config, step = members[0].run.config, members[0].step
    with _progress_bar(config) as bar:
        lams = ",".join(lambda_text(m.run.config.lam) for m in members)
        label = f"{config.loss} λ={lams}" + (f" ({len(members)} fused)" if len(members) > 1 else "")
        task = bar.add_task(label, total=config.steps, completed=step, terms="")
        while step < config.steps:
            for member, terms in zip(members, step_fn(step), strict=True):
                if member.diverged is None:  # a diverged member's terms are no longer kept
                    member.pending.append((step + 1, terms))
            step += 1
            live = [m for m in members if m.diverged is None]
            for m in live:
                m.step = step
            is_checkpoint = step % config.checkpoint_every == 0 or step == config.steps
            # at multiples of health_every only: a resumed run's history equals an uninterrupted one's
            is_probe = bool(config.health_every) and step % config.health_every == 0
            if step % config.log_every == 0 or is_checkpoint or is_probe:
                for m in live:
                    _log(m, step, bar, task, health.probe(m.run) if is_probe else {})
                live = [m for m in live if m.diverged is None]
                if not live:
                    break
            bar.update(task, completed=step)
            for m in live:
                for cb in m.callbacks:
                    cb.on_step(step, m.run.G_ema)
            for m in live if is_checkpoint else ():
                _save_atomic(m.checkpoint_state(), m.checkpoint)
                for cb in m.callbacks:
                    cb.on_checkpoint(step, m.checkpoint)
            if config.sample_every and step % config.sample_every == 0:
                for m in live:
                    save_sample_grid(
                        m.run.G_ema,
                        m.out_dir / "samples" / f"step_{step:06d}.png",
                        m.run.config,
                        m.run.device,
                    )
    return [_finish(m) if m.diverged is None else m.diverged for m in members]


def _log(member: Member, step: int, bar: Progress, task: Any, probed: dict[str, float]) -> None:
    """Means of the member's pending terms, and the health figures `probed` now, to its history and
    callbacks; new health findings to stderr, one line each; a DivergedError is kept."""
    try:
        means = mean_terms(member.pending)
    except DivergedError as e:
        member.diverged = e
        return
    member.pending = []
    means.update(probed)
    for name, value in means.items():
        member.history[name].append((step, value))
    bar.update(task, terms="  ".join(f"{k} {v:.3g}" for k, v in means.items() if not k.startswith("health/")))
    if probed:
        config = member.run.config
        for kind, finding in health.findings(member.history, config.loss):
            if kind not in member.warned:
                member.warned.append(kind)
                label = f"{config.loss} {lambda_label(config.lam)} seed {config.seed}"
                bar.console.print(
                    f"warning: {label}: {finding}", soft_wrap=True, highlight=False, markup=False
                )
    for cb in member.callbacks:
        cb.on_log(step, means)


def _finish(member: Member) -> TrainResult:
    run = member.run
    sample_grid = save_sample_grid(run.G_ema, member.out_dir / SAMPLE_GRID, run.config, run.device)
    history = dict(member.history)
    result = TrainResult(
        run.G_ema,
        member.step,
        member.out_dir,
        history,
        sample_grid,
        member.checkpoint,
        run.perceptual_weights,
        run.precision,
    )
    for cb in member.callbacks:
        cb.on_end(result)
    return result


def build(
    images: torch.Tensor,
    config: TrainConfig,
    labels: torch.Tensor | None = None,
    perceptual: PerceptualLoss | None = None,
) -> Run:
    """Networks (by `config.model.arch`), optimisers, loss, perceptual loss and the RNG streams of
    `config.seed`, on `config.device`; `labels` (int64 N) when `config.conditional`. The order of
    construction fixes the random draws. `perceptual`: a prepared perceptual loss to use instead of
    building one (a fused group shares one among its members)."""
    device = torch.device(config.device)
    images = images.to(device)  # kept in memory as uint8; converted per batch
    if config.conditional and (labels is None or len(labels) != len(images)):
        raise ConfigError("conditional training needs one class label per image")
    labels = labels.to(device) if config.conditional else None
    if len(images) < config.batch_size:
        raise ConfigError(f"batch size {config.batch_size} is larger than the dataset ({len(images)} images)")
    loss_fn = get_loss(config.loss, **config.loss_params)
    if not config.uses_perceptual:  # λ = 0 or perceptual "none": no network is built
        perceptual = None
    elif perceptual is None:
        perceptual = PerceptualLoss(
            config.perceptual,
            config.perceptual_layers,
            config.perceptual_distance,
            config.perceptual_pairing,
            config.random_weights,
            config.weights_dir,
        ).to(device)
        bf16 = precision.training_precision(device, config.amp) == "bf16"
        perceptual.prepare(torch.bfloat16 if bf16 else None, channels_last(config, device))
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            perceptual.cache_reals(images, config.batch_size, REAL_FEATURE_BUDGET)

    rng = _rng_streams(config.seed)
    model = {"arch": config.model.arch, "args": _model_args(config, images.shape[-1], labels)}
    G, D = (m.to(device) for m in build_model(model["arch"], rng=rng["init"], **model["args"]))
    if channels_last(config, device):
        G, D = (m.to(memory_format=torch.channels_last) if keeps_channels_last(m) else m for m in (G, D))
    # Fixed shapes: cuDNN may pick its fastest kernels, unless told to be deterministic.
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
    sampler = EpochSampler(len(images), config.batch_size, rng["data"], device)
    torch.manual_seed(rng["global"].initial_seed())  # for plugin losses that draw from the global RNG
    return Run(
        config=config,
        device=device,
        images=images,
        labels=labels,
        model=model,
        loss_fn=loss_fn,
        n_critic=config.n_critic or loss_fn.n_critic,
        perceptual=perceptual,
        G=G,
        D=D,
        G_ema=copy.deepcopy(G).eval().requires_grad_(False),
        opt_g=_adam(G, config.lr_g, config.betas, device),
        opt_d=_adam(D, config.lr_d, config.betas, device),
        sampler=sampler,
        noise_rng=rng["noise"],
        loss_rng=_device_generator(device).manual_seed(rng["global"].initial_seed()),
    )


@precision.fp32()
def train_step(run: Run, step: int) -> dict[str, torch.Tensor]:
    """Generator step `step + 1`: `n_critic` critic steps, one generator step, the EMA update.
    Returns the detached terms to log (see the module docstring). TF32 is off: the fp32 parts (the
    penalties, everything when autocast is off) are full fp32."""
    inputs = StepInputs(run)
    run.D.requires_grad_(True)
    for _ in range(run.n_critic):
        out_d = critic_loss(run, inputs)
        run.opt_d.zero_grad(set_to_none=True)
        out_d.loss.backward()
        run.opt_d.step()
    run.D.requires_grad_(False)
    out_g, perc, loss_g = generator_loss(run, inputs)
    run.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    run.opt_g.step()
    update_ema(run.G_ema, run.G, ema_decay(run.config, step))
    return step_terms(out_d, out_g, perc, loss_g)


class StepInputs:
    """One generator step's inputs to a run: its planned CPU draws (z and augmentation, made now from
    the run's noise stream) and its real batches, drawn from the run's sampler as the critic steps
    ask. The generator step reuses the last critic step's real batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.z_draw, aug_draws = _step_plan(run)
        plan = (self.z_draw, *aug_draws, *aug_draws) * (run.n_critic + 1)
        self.draws = Draws(plan, run.noise_rng, run.device)
        self.index: torch.Tensor | None = None  # of the real batch in `run.images`
        self.real: torch.Tensor | None = None
        self.y: torch.Tensor | None = None

    def next_real(self) -> None:
        self.index = self.run.sampler.next()
        self.real = to_float(self.run.images[self.index])
        self.y = self.run.labels[self.index] if self.run.labels is not None else None

    def fake(self) -> torch.Tensor:
        """G(z) for the next planned z (and the real batch's classes when conditional)."""
        z = self.draws.take(self.z_draw)
        return self.run.G(z) if self.y is None else self.run.G(z, self.y)

    def critic(self) -> nn.Module:
        """The critic as the loss sees it: bound to the real batch's classes when conditional."""
        return self.run.D if self.y is None else BoundCritic(self.run.D, self.y)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.run.config.augment, self.draws) if self.run.config.augment else x


def critic_loss(run: Run, inputs: StepInputs) -> LossOutput:
    """One critic step's loss on a fresh real batch and fresh fakes, which carry no graph back to G."""
    amp = _autocast(run)
    inputs.next_real()
    with torch.no_grad(), amp():
        fake = inputs.fake()
    with amp(), drawing_from(run.loss_rng):
        return run.loss_fn.discriminator_loss(
            inputs.critic(), inputs.augment(inputs.real), inputs.augment(fake)
        )


def generator_loss(run: Run, inputs: StepInputs) -> tuple[LossOutput, torch.Tensor | None, torch.Tensor]:
    """The generator step's adversarial loss through the (frozen) critic, its perceptual loss (None
    without one) and their sum L_G = adv + λ·perc."""
    with _autocast(run)(), drawing_from(run.loss_rng):
        fake = inputs.fake()
        out_g = run.loss_fn.generator_loss(inputs.critic(), inputs.augment(inputs.real), inputs.augment(fake))
        perc = run.perceptual(fake, inputs.real, inputs.index) if run.perceptual is not None else None
        loss_g = out_g.loss if perc is None else out_g.loss + run.config.lam * perc
    return out_g, perc, loss_g


def ema_decay(config: TrainConfig, step: int) -> float:
    """d_t of the EMA update after generator step `step + 1` (see the module docstring)."""
    return min(config.ema_decay, (1 + step) / (10 + step))


def step_terms(
    out_d: LossOutput, out_g: LossOutput, perc: torch.Tensor | None, loss_g: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The detached terms of one generator step, named as logged (see the module docstring)."""
    terms = {f"d/{k}": v for k, v in out_d.terms.items()}
    terms["d/loss"] = out_d.loss.detach()
    terms["g/adv"] = out_g.loss.detach()
    terms.update({f"g/{k}": v for k, v in out_g.terms.items()})
    if perc is not None:
        terms["g/perc"] = perc.detach()
    terms["g/loss"] = loss_g.detach()
    return terms


def channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether the networks run in channels_last memory format: on CUDA when `config.channels_last`."""
    return device.type == "cuda" and config.channels_last


def keeps_channels_last(module: nn.Module) -> bool:
    """False for a network with GroupNorm (the "layernorm" critic): its CUDA kernels return NCHW, so
    channels_last would only add layout conversions around every normalisation."""
    return not any(isinstance(m, nn.GroupNorm) for m in module.modules())


def _autocast(run: Run) -> Callable[[], contextlib.AbstractContextManager]:
    if run.precision == "bf16":
        return functools.partial(torch.autocast, run.device.type, torch.bfloat16)
    return contextlib.nullcontext


def _adam(module: nn.Module, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam; the fused (one-kernel) implementation on CPU and CUDA (not on the meta device)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, fused=fused or None)


def _step_plan(run: Run) -> tuple[Draw, list[Draw]]:
    """The CPU draws of one z batch and of one augmentation call, in the order `train_step` takes them:
    per critic step and for the generator step, z, then the augmentation of real, then of fake."""
    config, resolution = run.config, run.images.shape[-1]
    z = Draw("randn", (config.batch_size, config.z_dim))
    return z, augmentation_draws(config.augment, (config.batch_size, 1, resolution, resolution))


def checkpoint_state(run: Run, step: int, history: History) -> dict[str, Any]:
    """Everything `restore` needs to continue bit-identically after `step` (torch.save-able)."""
    return {
        "step": step,
        "model": run.model,
        "G": run.G.state_dict(),
        "D": run.D.state_dict(),
        "G_ema": run.G_ema.state_dict(),
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "sampler": run.sampler.state_dict(),
        "rng": rng_state(run),
        "history": dict(history),
        "config": to_dict(run.config),
        "precision": run.precision,
    }


def restore(run: Run, state: dict[str, Any], path: Path) -> tuple[int, History]:
    """Load a `checkpoint_state` into `run`; return (step, history). ConfigError if `run.config`
    differs from the checkpoint's in a field outside RESUMABLE_CHANGES; CheckpointError if its
    contents do not fit `run` (a damaged file)."""
    _check_resumable(state["config"], run.config, path)
    saved = state.get("precision") or precision.legacy_precision(
        state["config"].get("device", "cpu"), state["config"].get("amp", True)
    )
    if saved != run.precision:
        raise ConfigError(
            f"cannot resume {path}: it was trained in {saved} and would go on in {run.precision} here "
            "(train.amp and the device's bf16 support decide, see docs/training.md); use another --out"
        )
    try:
        run.G.load_state_dict(state["G"])
        run.D.load_state_dict(state["D"])
        run.G_ema.load_state_dict(state["G_ema"])
        run.opt_g.load_state_dict(state["opt_g"])
        run.opt_d.load_state_dict(state["opt_d"])
        run.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"], run)
        history: History = defaultdict(list, {k: [tuple(x) for x in v] for k, v in state["history"].items()})
        return int(state["step"]), history
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({first_line(e, typed=True)})") from None


def rng_state(run: Run) -> dict[str, Any]:
    """The noise stream, the losses' stream and torch's global RNG (for plugin losses drawing from it):
    the CPU one and, on CUDA, the training device's only."""
    cuda = torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None
    return {
        "noise": run.noise_rng.get_state(),
        "losses": run.loss_rng.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: dict[str, Any], run: Run) -> None:
    """Restore `rng_state`'s streams; the CUDA state goes to the training device (whichever index). A
    checkpoint from before `loss_rng` (no "losses") has the losses' stream in the global RNG's state."""
    device = run.device
    run.noise_rng.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    legacy = state["cuda"] if device.type == "cuda" else state["torch"]
    run.loss_rng.set_state(state.get("losses", legacy))


class EpochSampler:
    """Batches of dataset indices: a fresh permutation each epoch, the last partial batch dropped.
    Permutations are drawn on the CPU from `rng` and copied to `device` once per epoch."""

    def __init__(
        self, n: int, batch_size: int, rng: torch.Generator, device: torch.device | None = None
    ) -> None:
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.device = device or torch.device("cpu")
        self._set_order(torch.randperm(n, generator=rng), 0)

    def _set_order(self, order: torch.Tensor, pos: int) -> None:
        self.order, self.pos = order, pos  # the host copy is what checkpoints hold
        self._device_order = to_device(order, self.device)

    def next(self) -> torch.Tensor:
        """The next batch of indices, on the sampler's device."""
        if self.pos + self.batch_size > self.n:
            self._set_order(torch.randperm(self.n, generator=self.rng), 0)
        self.pos += self.batch_size
        return self._device_order[self.pos - self.batch_size : self.pos]

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "pos": self.pos, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_order(state["order"], state["pos"])
        self.rng.set_state(state["rng"])


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 - decay)·model for parameters; buffers (BatchNorm statistics) copied.
    One multi-tensor kernel each on CUDA; on CPU the same per-tensor `lerp_`/`copy_` as a loop."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if len(ema_params) != len(params) or len(ema_buffers) != len(buffers):
        raise ValueError("the EMA copy and the model have different parameters or buffers")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)


def mean_terms(pending: list[tuple[int, dict[str, torch.Tensor]]]) -> dict[str, float]:
    """Mean of each term over the pending steps; DivergedError at the first non-finite (step, term)."""
    names = list(pending[-1][1])
    values = torch.stack([torch.stack([t[n].float() for n in names]) for _, t in pending]).cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        i, j = bad[0].tolist()  # row-major: the earliest step, then the first term in logging order
        raise DivergedError(pending[i][0], names[j], values[i, j].item())
    return dict(zip(names, values.mean(0).tolist(), strict=True))


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The EMA generator of a checkpoint written by `train`, in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (train writes it as OUT/{CHECKPOINT})")
    state = _load_checkpoint(path)
    G, _ = build_model(state["model"]["arch"], **state["model"]["args"])
    try:
        G.load_state_dict(state["G_ema"])
    # e.g. a conditional dgan of before 2026-12, which joined z to a class embedding
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit its architecture as lossbench builds it now "
            f"({first_line(e, typed=True)}); "
            'a class-conditional dgan checkpoint made before 2026-12 needs conditioning = "concat" '
            "recorded in its model args"
        ) from None
    return G.to(device).eval()


def save_generator(
    generator: nn.Module, model: dict[str, Any], config: TrainConfig, path: Path, **record: Any
) -> Path:
    """A checkpoint of `generator`'s weights alone (stored as G_ema, with its architecture `model` and
    `config`), which `load_generator` reads; `record` is kept beside them (e.g. the step and the
    metric that chose it). Written atomically."""
    _save_atomic({"model": model, "G_ema": generator.state_dict(), "config": to_dict(config), **record}, path)
    return path


def save_sample_grid(G: nn.Module, path: Path, config: TrainConfig, device: torch.device) -> Path:
    """A square-ish grid of `config.n_samples` images from fixed z (seeded by `config.seed`); for a
    conditional generator, one row per class of ceil(n_samples / classes) images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if config.conditional:
        ncol = math.ceil(config.n_samples / G.n_classes)
        labels = class_labels([ncol] * G.n_classes)
        images = generate_images(G, len(labels), config.seed, device=device, labels=labels)
    else:
        ncol = math.ceil(math.sqrt(config.n_samples))
        images = generate_images(G, config.n_samples, config.seed, device=device)
    torchvision.utils.save_image(images.float() / 255, path, nrow=ncol)
    return path


def save_real_grid(data: ImageDataset, path: Path, config: TrainConfig) -> Path:
    """Training images laid out as `save_sample_grid` lays out fakes, to set beside them: for a
    conditional config one row per class of its first ceil(n_samples / classes) images, else the
    first n_samples images (the dataset's order, which is fixed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if config.conditional:
        n_classes = len(data.class_names)
        ncol = math.ceil(config.n_samples / n_classes)
        rows = [data.images[data.labels == c][:ncol] for c in range(n_classes)]
        blank = torch.zeros_like(data.images[:1])
        images = torch.cat([torch.cat([r, blank.expand(ncol - len(r), -1, -1, -1)]) for r in rows])
    else:
        ncol = math.ceil(math.sqrt(config.n_samples))
        images = data.images[: config.n_samples]
    torchvision.utils.save_image(images.float() / 255, path, nrow=ncol)
    return path


FEW_POINTS = 20  # curves with fewer logged points are drawn with markers


def plot_history(history: dict[str, list[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """One panel per logged term against the generator step (matplotlib, no pyplot state); a curve of
    few logged points also marks each point (a single point draws no line)."""
    from matplotlib.figure import Figure

    names = sorted(history)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4 * cols, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, lw=1, marker="o" if len(steps) < FEW_POINTS else None, ms=3)
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


def _device_generator(device: torch.device) -> torch.Generator:
    """A generator that draws on `device` (a CPU one for "meta", which has none and accepts it)."""
    return torch.Generator("cpu" if device.type == "meta" else device)


def _model_args(config: TrainConfig, resolution: int, labels: torch.Tensor | None) -> dict[str, Any]:
    """The architecture builder's arguments (see lossbench.models.registry), its own defaults included,
    so that a checkpoint still loads after a default changes; `n_classes` only when conditional (one
    more than the largest label)."""
    conditional = {"n_classes": int(labels.max()) + 1} if labels is not None else {}
    return {
        **builder_defaults(config.model.arch),
        "resolution": resolution,
        "z_dim": config.z_dim,
        "g_width": config.g_width,
        "d_width": config.d_width,
        "critic_norm": config.critic_norm,
        **config.model.kwargs,
        **conditional,
    }


def _run_record(run: Run, data: ImageDataset) -> dict[str, Any]:
    """config.json: the settings, the loss's resolved parameters and the data's provenance."""
    return {
        "train": to_dict(run.config),
        "model": run.model,
        "n_critic": run.n_critic,
        "loss_params": run.loss_fn.params(),
        "perceptual_weights": run.perceptual_weights,
        "precision": run.precision,
        "data": {
            "source": getattr(data, "source", None),
            "fingerprint": getattr(data, "fingerprint", None),
            "n_images": len(run.images),
            "resolution": run.images.shape[-1],
            **({"class_names": list(data.class_names)} if run.labels is not None else {}),
        },
    }


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = load_tensors(path)
    except Exception as e:  # truncated or garbled: zip, pickle and tensor-storage errors of every kind
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({first_line(e, typed=True)})") from None
    if not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(f"checkpoint {path} cannot be loaded (not a lossbench checkpoint)")
    if "model" not in state:
        raise ConfigError(f"checkpoint {path} predates architectures by name (no 'model' record); retrain it")
    return state


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
