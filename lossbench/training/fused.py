"""K training runs that differ only by seed and λ, trained as one fused group in one process.

How:
- Each member is built exactly as a separate run (`train.build`): its own initial weights, data
  order, z, augmentation and loss draws (`Run.loss_rng`), its own out_dir, callbacks and checkpoint.
- The members' generators (critics, EMA generators) are fused into one grouped network: every
  convolution with groups=K, every normalisation over K× the channels, every tensor the
  concatenation of the members' along dim 0, so member k owns channel block k and no value crosses
  blocks. The members' own modules then become views of their block: nothing is copied, and what
  a member checkpoints, samples or evaluates is its part of the fused tensors.
- A step runs every member's `train.critic_loss` / `train.generator_loss` (the separate trainer's
  own code) in its own thread. Their calls of G, D, the penalty pass (`input_gradients`) and the
  perceptual network meet at a `Rendezvous` and run as one batched call (the GAN as one grouped
  pass; the frozen perceptual network as one batch of K·B on CUDA, per member on a CPU). The
  members' losses are summed and back-propagated once; one Adam steps the fused parameters,
  element-wise, so each member's update is its own, as is its EMA.

Equality: a member's numbers are the separate run's up to float rounding (a grouped convolution
sums in another order than K single ones); tests compare them. Checkpoints are the separate format
(`train.checkpoint_state`): a member can be resumed, evaluated or loaded alone, fused or not.

A member whose logged terms go NaN/Inf fails alone (its result is the DivergedError); the others
go on, unaffected: the fused tensors are block-diagonal, and a non-finite loss is left out of the
backward pass (`backward_finite`), since a kernel may spread inf/NaN across blocks.

What can be fused: see lossbench.training.fusable.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lossbench import precision
from lossbench.config import TrainConfig
from lossbench.errors import ConfigError, DivergedError
from lossbench.models.dgan import ConditionalBatchNorm2d, class_affine, run_conditional
from lossbench.training.fusable import check_fusable
from lossbench.training.train import (
    CHECKPOINT,
    Callback,
    Member,
    Run,
    StepInputs,
    TrainResult,
    _adam,
    channels_last,
    checkpoint_state,
    critic_loss,
    ema_decay,
    generator_loss,
    keeps_channels_last,
    start_member,
    step_terms,
    train_loop,
    update_ema,
)

if TYPE_CHECKING:
    from lossbench.data import ImageDataset


class ResumeMismatchError(ConfigError):
    """The members' checkpoints cannot resume as one group (some missing, or at different steps);
    each member can still resume alone."""


def train_fused(
    configs: Sequence[TrainConfig],
    data: ImageDataset,
    out_dirs: Sequence[str | os.PathLike],
    callbacks: Sequence[Sequence[Callback]] | None = None,
    resume: bool = False,
) -> list[TrainResult | DivergedError]:
    """Train `configs` (one per member) as one fused group on `data`, member k into `out_dirs[k]` with
    `callbacks[k]`; with `resume`, every member continues from its checkpoint (all must have one at
    the same step, or none). Returns each member's TrainResult, or its DivergedError. ConfigError
    when the configs cannot be fused (`check_fusable`)."""
    check_fusable(configs)
    if len(out_dirs) != len(configs) or len({os.path.abspath(d) for d in out_dirs}) != len(configs):
        raise ConfigError(f"a fused group needs one distinct output folder per member ({len(configs)})")
    callbacks = callbacks if callbacks is not None else [()] * len(configs)
    checkpoints = [resume and os.path.exists(os.path.join(d, CHECKPOINT)) for d in out_dirs]
    if any(checkpoints) and not all(checkpoints):
        missing = [str(d) for d, c in zip(out_dirs, checkpoints, strict=True) if not c]
        raise ResumeMismatchError(f"cannot resume a fused group: no checkpoint in {', '.join(missing)}")
    first = start_member(data, configs[0], out_dirs[0], callbacks[0], resume)
    members = [first] + [
        start_member(data, c, d, cb, resume, perceptual=first.run.perceptual)
        for c, d, cb in zip(configs[1:], out_dirs[1:], callbacks[1:], strict=True)
    ]
    steps = {m.step for m in members}
    if len(steps) > 1:
        raise ResumeMismatchError(f"cannot resume a fused group: its members are at steps {sorted(steps)}")
    with FusedGroup(members) as group:
        return train_loop(group.members, group.step)


class Rendezvous:
    """Where K member threads meet the calling thread. `run` starts one task per member and serves
    them: whenever every unfinished member waits in `call`, the calling thread runs the batched
    function once on their K argument tuples, in the members' grad and autocast modes, and each member
    gets its own part of the result. The heavy work thus stays in the calling thread (intra-op
    parallelism is slower from other threads). Every member must make the same calls in the same
    order: otherwise, or when a member fails, the waiting members get BrokenBarrierError and `run`
    raises the first real error."""

    def __init__(self, k: int, pool: ThreadPoolExecutor) -> None:
        self.k, self.pool = k, pool
        self._cv = threading.Condition()
        self._calls: dict[int, tuple[Callable, tuple, tuple]] = {}  # member -> (fn, args, modes)
        self._results: dict[int, Any] = {}
        self._served = 0  # batched calls run so far
        self._done = 0  # member tasks finished
        self._broken = False
        self._mismatch = ""  # why the rendezvous broke when no member raised: members' calls differ

    def call(self, member: int, fn: Callable[[list[tuple]], list[Any]], *args: Any) -> Any:
        """From member `member`'s thread: fn's result for its `args`, batched with the others'."""
        with self._cv:
            if self._broken:
                raise threading.BrokenBarrierError
            served = self._served
            self._calls[member] = (fn, args, _modes(args))
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._served != served or self._broken)
            if self._served == served:
                raise threading.BrokenBarrierError
            return self._results.pop(member)

    def run(self, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run tasks[i] as member i in the pool, serving their calls from this thread; their results."""
        self._calls, self._results, self._done, self._broken, self._mismatch = {}, {}, 0, False, ""

        def member(task: Callable[[], Any]) -> Any:
            try:
                return task()
            finally:
                with self._cv:
                    self._done += 1
                    self._cv.notify_all()

        futures = [self.pool.submit(member, task) for task in tasks]
        try:
            self._serve()
        except BaseException:  # e.g. Ctrl-C while serving: release the members, then go
            with self._cv:
                self._broken = True
                self._cv.notify_all()
            concurrent.futures.wait(futures)
            raise
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        if real:
            raise real[0]
        if errors:  # only members released from a broken rendezvous: their calls did not match
            raise RuntimeError(self._mismatch or "fused members made different calls")
        return [f.result() for f in futures]

    def _serve(self) -> None:
        with self._cv:
            while True:
                self._cv.wait_for(lambda: len(self._calls) + self._done == self.k)
                if self._done == self.k:
                    return
                calls = [self._calls.get(i) for i in range(self.k)]
                if self._done or any(c[0] != calls[0][0] or c[2] != calls[0][2] for c in calls):
                    self._broken = True
                    self._cv.notify_all()
                    if not self._done:  # everyone waits, on different calls: a bug, not a member's error
                        raise RuntimeError(f"fused members made different calls: {[c[0] for c in calls]}")
                    waiting = [i for i, c in enumerate(calls) if c is not None]
                    name = getattr(calls[waiting[0]][0], "__name__", "a call")
                    self._mismatch = (  # kept unless a finished member failed (its error is raised)
                        f"fused members made different numbers of calls: member(s) {waiting} waited in "
                        f"{name} after the others had finished"
                    )
                    self._cv.wait_for(lambda: self._done == self.k)
                    return
                self._calls = {}
                fn, (grad, autocast) = calls[0][0], calls[0][2]
                try:
                    with torch.set_grad_enabled(grad), torch.autocast(*autocast[:2], enabled=autocast[2]):
                        results = fn([c[1] for c in calls])
                except BaseException:
                    self._broken = True
                    self._cv.notify_all()
                    raise
                self._results = dict(enumerate(results))
                self._served += 1
                self._cv.notify_all()


def _modes(args: tuple) -> tuple[bool, tuple[str, torch.dtype, bool]]:
    """The calling thread's grad mode and autocast state (for the device of the first tensor)."""
    device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
    return torch.is_grad_enabled(), autocast


class FusedGroup:
    """The fused networks and optimisers of K members, and the threads that step them."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        k, run = len(members), members[0].run
        self.k, self.config, self.device = k, run.config, run.device
        # Building modules draws their default init from torch's global RNG (overwritten at once by
        # the members' weights); fork it, so a resumed group's global RNG, which the checkpoints
        # store, continues as an uninterrupted group's does.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self.G = Grouped([m.run.G for m in members])
            self.D = Grouped([m.run.D for m in members])
            self.G_ema = Grouped([m.run.G_ema for m in members]).eval().requires_grad_(False)
        for grouped in (self.G, self.D, self.G_ema):
            grouped.to(self.device)
            if fused_channels_last(self.config, self.device) and keeps_channels_last(grouped):
                grouped.to(memory_format=torch.channels_last)
        for fused, m in ((self.G, "G"), (self.D, "D"), (self.G_ema, "G_ema")):
            for i, member in enumerate(members):
                bind_block(getattr(member.run, m), fused, i, k)
        self.opt_g = _adam(self.G, self.config.lr_g, self.config.betas, self.device)
        self.opt_d = _adam(self.D, self.config.lr_d, self.config.betas, self.device)
        if members[0].step:  # resumed: the members' optimiser states were restored into their own optimisers
            self.opt_g.load_state_dict(fuse_optimizer_state([m.run.opt_g.state_dict() for m in members]))
            self.opt_d.load_state_dict(fuse_optimizer_state([m.run.opt_d.state_dict() for m in members]))
        self.perceptual = run.perceptual
        threads = torch.get_num_threads()  # intra-op threads are set per thread: members use the caller's
        self.pool = ThreadPoolExecutor(k, "fused", initializer=torch.set_num_threads, initargs=(threads,))
        self.meet = Rendezvous(k, self.pool)
        # What each member's step sees: its own run, with G, D and the perceptual loss met in the group.
        self.views = [
            dataclasses.replace(
                m.run,
                G=MemberCall(self.meet, i, self.generate),
                D=MemberCritic(self.meet, i, self.score, self.input_gradients),
                perceptual=MemberPerceptual(self.meet, i, self.features, self.perceptual)
                if self.perceptual is not None
                else None,
            )
            for i, m in enumerate(members)
        ]
        for i, m in enumerate(members):
            m.state_fn = functools.partial(self.member_state, i)

    def __enter__(self) -> FusedGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)

    @precision.fp32()
    def step(self, step: int) -> list[dict[str, torch.Tensor]]:
        """Generator step `step + 1` of every member (see `train.train_step`, which this mirrors)."""
        inputs = [StepInputs(view) for view in self.views]
        self.D.requires_grad_(True)
        for _ in range(self.views[0].n_critic):
            outs_d = self.each(critic_loss, inputs)
            self.opt_d.zero_grad(set_to_none=True)
            backward_finite([out.loss for out in outs_d])
            self.opt_d.step()
        self.D.requires_grad_(False)
        outs_g = self.each(generator_loss, inputs)
        self.opt_g.zero_grad(set_to_none=True)
        backward_finite([loss_g for _, _, loss_g in outs_g])
        self.opt_g.step()
        update_ema(self.G_ema, self.G, ema_decay(self.config, step))
        return [step_terms(d, *g) for d, g in zip(outs_d, outs_g, strict=True)]

    def each(self, fn: Callable[[Run, StepInputs], Any], inputs: list[StepInputs]) -> list[Any]:
        """fn(view_k, inputs_k) for every member, each in its own thread, met at the rendezvous."""
        pairs = zip(self.views, inputs, strict=True)
        return self.meet.run([functools.partial(fn, view, step_inputs) for view, step_inputs in pairs])

    # The batched calls: args[k] is member k's argument tuple; the result, member k's part.
    def generate(self, args: list[tuple]) -> list[torch.Tensor]:
        """(z_k (B×z_dim)[, y_k]) -> G_k(z_k[, y_k]) (B×1×R×R), through the grouped generator (see
        dgan.Generator: a conditional one joins z to its class embedding, or takes the classes in its
        conditional BatchNorms)."""
        z = [a[0] for a in args]
        if self.G.embed is not None:  # "concat"
            z = [torch.cat([zk, e.to(zk.dtype)], 1) for zk, e in zip(z, self.G.embeddings(args), strict=True)]
        z = torch.cat(z, 1)[:, :, None, None]
        if self.G.conditioning == "batchnorm":
            images = run_conditional(self.G.net, z, [a[1] for a in args])
        else:
            images = self.G.net(z)  # B×K×R×R
        return list(images.split(1, dim=1))

    def score(self, args: list[tuple]) -> list[torch.Tensor]:
        """(x_k (B×1×R×R)[, y_k]) -> D_k(x_k[, y_k]) (B), through the grouped critic."""
        return list(self._scores([a[0] for a in args], args).unbind(1))

    def input_gradients(self, args: list[tuple]) -> list[torch.Tensor]:
        """∇ₓ D_k(x_k[, y_k]) for each member in one pass (see penalties.input_gradients, whose
        precision the calling threads are in)."""
        xs = [a[0] for a in args]
        return list(torch.autograd.grad(self._scores(xs, args).sum(), xs, create_graph=True))

    def _scores(self, xs: list[torch.Tensor], args: list[tuple]) -> torch.Tensor:
        """B×K scores of the grouped critic (see dgan.Critic: a conditional one adds the projection
        ⟨e_y, Σ_hw φ(x)⟩ of the features φ before its last layer)."""
        x = torch.cat(xs, 1)
        if self.D.embed is None:
            return self.D.net(x).flatten(1)
        h = self.D.net[:-1](x)  # B×(K·c)×4×4
        pooled = h.sum((2, 3)).unflatten(1, (self.k, -1))  # B×K×c
        embedded = torch.stack(self.D.embeddings(args), 1)  # B×K×c
        return self.D.net[-1](h).flatten(1) + (embedded * pooled).sum(2)

    def features(self, args: list[tuple]) -> list[list[torch.Tensor]]:
        """The perceptual network's features of every member's batch: as one batch of K·B on CUDA,
        which it fills better; one batch per member on a CPU, where a larger batch only spills the
        caches (benchmarks/fused_parts.py: VGG16 to relu2_2 at 64 px, backward included, 4 × 16
        images in 0.73 s, 64 in 1.04 s)."""
        if not batches_perceptual(self.device):
            return [self.perceptual.extract(a[0]) for a in args]
        sizes = [len(a[0]) for a in args]
        layers = self.perceptual.extract(torch.cat([a[0] for a in args]))
        return [list(parts) for parts in zip(*(f.split(sizes) for f in layers), strict=True)]

    def member_state(self, i: int) -> dict[str, Any]:
        """Member `i`'s checkpoint, in the separate runs' format (`train.checkpoint_state`)."""
        member = self.members[i]
        saved = checkpoint_state(member.run, member.step, member.history)
        for key in ("G", "D", "G_ema"):  # views of the fused tensors: save the block, not the whole
            saved[key] = {name: t.clone() for name, t in saved[key].items()}
        saved["opt_g"] = member_optimizer_state(self.opt_g.state_dict(), i, self.k)
        saved["opt_d"] = member_optimizer_state(self.opt_d.state_dict(), i, self.k)
        return saved


def fused_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether the grouped networks run in channels_last: as the separate runs on CUDA
    (`train.channels_last`), and always on a CPU, where oneDNN's grouped convolutions are much faster
    so (benchmarks/fused_parts.py: G and D at R = 128, K = 4, batch 16, widths 16, forward and
    backward: 0.71 s against 0.99 s in NCHW, 0.83 s for the 4 separate pairs)."""
    return channels_last(config, device) or device.type == "cpu"


def backward_finite(losses: list[torch.Tensor]) -> None:
    """Back-propagate the sum of the members' losses, leaving out each non-finite one. A diverged
    member fails alone on its logged terms, but its inf/NaN must not reach the others' gradients
    first: exact arithmetic keeps the blocks apart, a kernel need not (on an AMD EPYC, the input
    gradient of a grouped convolution in bf16 and channels_last, as fused CPU runs are, carries one
    group's inf into the others). One device sync per backward on an accelerator."""
    finite = torch.isfinite(torch.stack([loss.detach() for loss in losses])).tolist()
    kept = [loss for loss, ok in zip(losses, finite, strict=True) if ok]
    if kept:
        sum(kept).backward()


def batches_perceptual(device: torch.device) -> bool:
    """Whether the members' perceptual passes run as one batch (see `FusedGroup.features`)."""
    return device.type == "cuda"


class MemberCall(nn.Module):
    """Member `i`'s stand-in for a network of the group: calling it meets the other members."""

    def __init__(self, meet: Rendezvous, i: int, fn: Callable[[list[tuple]], list[Any]]) -> None:
        super().__init__()
        self.meet, self.i, self.fn = meet, i, fn

    def forward(self, *args: torch.Tensor) -> Any:
        return self.meet.call(self.i, self.fn, *args)


class MemberCritic(MemberCall):
    """Member `i`'s critic, with the penalty pass batched across the group."""

    def __init__(self, meet: Rendezvous, i: int, fn: Callable, gradients_fn: Callable) -> None:
        super().__init__(meet, i, fn)
        self.gradients_fn = gradients_fn

    def input_gradients(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.meet.call(self.i, self.gradients_fn, *((x,) if labels is None else (x, labels)))


class MemberPerceptual:
    """Member `i`'s perceptual loss: the features come from the group's one batched pass."""

    def __init__(self, meet: Rendezvous, i: int, features_fn: Callable, perceptual: nn.Module) -> None:
        self.meet, self.i, self.features_fn, self.perceptual = meet, i, features_fn, perceptual
        self.weights = perceptual.weights

    def __call__(
        self, fake: torch.Tensor, real: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.perceptual.cache is not None and index is not None:  # the same for every member
            real_features = self.perceptual.real_features(real, index)
        else:
            with torch.no_grad():
                real_features = self.meet.call(self.i, self.features_fn, real)
        return self.perceptual.compare(self.meet.call(self.i, self.features_fn, fake), real_features)


_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity)


class Grouped(nn.Module):
    """K networks of one dgan architecture side by side: `net` grouped (`fuse`) and, when they have
    one (the conditional critic's projection), `embed` holding every member's class embedding, member
    k's rows in block k. The parameters come in the members' order (net, then embed), so optimiser
    states map one to one."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.k = len(members)
        self.net = fuse([m.net for m in members])
        self.n_classes = members[0].n_classes
        self.conditioning = getattr(members[0], "conditioning", None)  # a generator's (dgan.Generator)
        self.embed = None
        if getattr(members[0], "embed", None) is not None:
            rows, dim = members[0].embed.weight.shape
            self.embed = nn.Embedding(self.k * rows, dim)
            self.embed.weight.data.copy_(torch.cat([m.embed.weight.data for m in members]))

    def embeddings(self, args: list[tuple]) -> list[torch.Tensor]:
        """Member k's class embedding of its labels (args[k][1]), for every member."""
        return [self.embed(args[k][1] + k * self.n_classes) for k in range(self.k)]


def fuse(nets: Sequence[nn.Sequential]) -> nn.Sequential:
    """One grouped network computing K identical-architecture networks side by side: input and output
    channels in K blocks, member k's tensors in block k (concatenated along dim 0). ConfigError for a
    layer without a grouped form."""
    k = len(nets)
    fused = nn.Sequential(*(_grouped(layer, k) for layer in nets[0]))
    states = [net.state_dict() for net in nets]
    fused.load_state_dict({name: _stack([s[name] for s in states]) for name in states[0]})
    return fused


def _grouped(layer: nn.Module, k: int) -> nn.Module:
    if type(layer) is nn.Conv2d or type(layer) is nn.ConvTranspose2d:
        extra = {"output_padding": layer.output_padding} if isinstance(layer, nn.ConvTranspose2d) else {}
        return type(layer)(
            k * layer.in_channels,
            k * layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            dilation=layer.dilation,
            groups=k * layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            **extra,
        )
    if type(layer) is nn.BatchNorm2d:
        return nn.BatchNorm2d(
            k * layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats
        )
    if type(layer) is nn.GroupNorm:
        return nn.GroupNorm(k * layer.num_groups, k * layer.num_channels, layer.eps, layer.affine)
    if type(layer) is ConditionalBatchNorm2d:
        return GroupedConditionalBatchNorm(layer, k)
    if isinstance(layer, _ELEMENTWISE):
        return copy.deepcopy(layer)
    raise ConfigError(f"a {type(layer).__name__} layer cannot be fused")


class GroupedConditionalBatchNorm(nn.Module):
    """K `ConditionalBatchNorm2d` side by side: channels in K blocks, and member k's gains and biases in
    rows block k of one table each; called with the K members' class indices."""

    takes_labels = True  # `run_conditional` passes it the members' class indices

    def __init__(self, layer: ConditionalBatchNorm2d, k: int) -> None:
        super().__init__()
        (self.n_classes, channels), bn = layer.gain.weight.shape, layer.bn
        self.bn = nn.BatchNorm2d(k * channels, bn.eps, bn.momentum, affine=False)
        self.gain = nn.Embedding(k * self.n_classes, channels)
        self.bias = nn.Embedding(k * self.n_classes, channels)

    def forward(self, x: torch.Tensor, ys: list[torch.Tensor]) -> torch.Tensor:
        x = self.bn(x)
        rows = [y + k * self.n_classes for k, y in enumerate(ys)]
        return class_affine(
            x, torch.cat([self.gain(r) for r in rows], 1), torch.cat([self.bias(r) for r in rows], 1)
        )


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Member tensors as one fused tensor: concatenated along dim 0; scalars (BatchNorm's batch count,
    equal in every member) shared."""
    if tensors[0].dim() == 0:
        return tensors[0]
    return torch.cat(tensors)


def bind_block(net: nn.Module, fused: nn.Module, i: int, k: int) -> None:
    """Make `net`'s parameters and buffers views of block `i` of `fused`'s (same module layout);
    scalar buffers become the fused ones themselves."""
    for own, whole in zip(net.parameters(), fused.parameters(), strict=True):
        own.data = whole.data.chunk(k)[i]
    for (name, _), (_, whole) in zip(net.named_buffers(), fused.named_buffers(), strict=True):
        module_name, _, buffer = name.rpartition(".")
        owner = net.get_submodule(module_name)
        owner._buffers[buffer] = whole if whole.dim() == 0 else whole.chunk(k)[i]


def fuse_optimizer_state(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The members' Adam states as the fused optimiser's (same parameter order, tensors stacked)."""
    fused = {
        index: {name: _stack([s["state"][index][name] for s in states]) for name in param_state}
        for index, param_state in states[0]["state"].items()
    }
    return {"state": fused, "param_groups": copy.deepcopy(states[0]["param_groups"])}


def member_optimizer_state(state: dict[str, Any], i: int, k: int) -> dict[str, Any]:
    """Member `i`'s part of the fused optimiser's state, as its own optimiser would hold it."""
    own = {
        index: {name: t.clone() if t.dim() == 0 else t.chunk(k)[i].clone() for name, t in param_state.items()}
        for index, param_state in state["state"].items()
    }
    return {"state": own, "param_groups": copy.deepcopy(state["param_groups"])}
