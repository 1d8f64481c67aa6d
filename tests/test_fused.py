"""Fused training (lossbench.training.fused): K members equal K separate runs, resume either way,
fail alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch

from lossbench.config import ModelConfig, TrainConfig
from lossbench.errors import ConfigError, DivergedError
from lossbench.losses.registry import register_loss
from lossbench.losses.wasserstein import WGANGP
from lossbench.training import fused
from lossbench.training.fusable import check_fusable
from lossbench.training.fused import Rendezvous, train_fused
from lossbench.training.train import load_generator, start_member, train, train_loop

TINY = dict(
    amp=False,  # fp32: the equality checks compare fused and separate runs at fp32 rounding
    batch_size=8,
    z_dim=16,
    g_width=4,
    d_width=4,
    progress=False,
    log_every=1,
    checkpoint_every=2,
    sample_every=0,
    n_samples=4,
    perceptual="tiny-train",  # registered in conftest
    perceptual_layers=("relu1_1", "relu2_1"),
)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(40, 1, 8, 8, generator=g), size=32, mode="bilinear")
    labels = torch.arange(40) % 3  # three classes, for the conditional runs
    return SimpleNamespace(
        images=(x * 255).round().to(torch.uint8),
        labels=labels,
        class_names=["a", "b", "c"],
        source="test",
        fingerprint="0",
    )


def configs(members=((0, 2.0), (1, 5.0), (2, 0.5)), **kw) -> list[TrainConfig]:
    return [TrainConfig(**{**TINY, "seed": seed, "lam": lam, **kw}) for seed, lam in members]


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_streams(a: dict, b: dict) -> None:
    """Two checkpoints drew the same data order, z, augmentation and loss draws, exactly."""
    assert a["step"] == b["step"]
    for stream in ("noise", "losses"):
        assert torch.equal(a["rng"][stream], b["rng"][stream]), stream
    assert torch.equal(a["sampler"]["order"], b["sampler"]["order"])
    assert a["sampler"]["pos"] == b["sampler"]["pos"]


def assert_close_states(a: dict, b: dict) -> None:
    """Two checkpoints of the same run, one fused, after any number of steps: the same streams, and
    every weight within Adam's reach of rounding. Rounding alone can move a weight by about one
    Adam step (±lr: Adam scales a gradient that is truly ~0 to a unit step), and such a step then
    changes later gradients by percents: the exact check is `assert_equal_first_step`."""
    assert_same_streams(a, b)
    bound = 4 * TrainConfig.lr_g * a["step"]
    for key in ("G", "D", "G_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            diff = (a[key][name].float() - b[key][name].float()).abs().max().item()
            assert diff <= bound, f"{key}.{name}: {diff:.2e}"


def assert_equal_first_step(a: dict, b: dict) -> None:
    """After one generator step (n_critic critic steps, one generator step): every gradient of both
    networks (Adam's exp_avg: betas (0, 0.9) keep the last gradient) within 10⁻⁴ of its tensor's
    scale, and every logged term within 10⁻⁴. A wrong batch, label, draw or pairing is off by O(1).
    A tensor's scale is at least a tenth of its network's largest gradient, so a gradient that is zero
    up to rounding (the critic's output bias under a relativistic loss, which cancels it: about 1e-7
    of noise against 0.2, different on CI) is held to 10⁻⁵ of the largest, and any tensor above
    10⁻⁵ of it still fails on an O(1) error."""
    assert a["step"] == b["step"] == 1
    assert_close_states(a, b)
    for key in ("opt_g", "opt_d"):
        largest = max(state["exp_avg"].abs().max().item() for state in a[key]["state"].values())
        for index, state in a[key]["state"].items():
            last, fused_last = state["exp_avg"], b[key]["state"][index]["exp_avg"]
            scale = max(last.abs().max().item(), 0.1 * largest)
            diff = (last - fused_last).abs().max().item()
            assert diff <= 1e-4 * scale, f"{key} gradient {index}: {diff / scale:.1e} of its scale"
    for term, ((step, x),) in a["history"].items():
        ((step_b, y),) = b["history"][term]
        assert step == step_b and y == pytest.approx(x, rel=1e-4, abs=1e-6), term


BATCHNORM_CONDITIONING = ModelConfig(kwargs={"conditioning": "batchnorm"})


@pytest.mark.parametrize(
    "loss, kw, one_perceptual_batch",
    [
        ("wgangp", {"augment": ("color", "translation", "cutout")}, False),  # penalty pass, 5 critic steps
        ("wgangp", {}, True),  # the perceptual network on one batch of K·B, as on CUDA
        ("dragan", {"critic_norm": "layernorm"}, False),  # per-element draws, std per member, GroupNorm
        ("rasgan", {}, False),  # batch means per member
        ("wgangp", {"conditional": True}, False),  # class embeddings, projection critic, bound penalty
        ("ns-r1", {"conditional": True}, True),  # R1 on real images through the bound critic
        # conditional BatchNorm in G (gain and bias tables per member), a per-sample-normalised critic
        ("bce", {"conditional": True, "critic_norm": "instancenorm", "model": BATCHNORM_CONDITIONING}, False),
    ],
)
def test_fused_members_equal_separate_runs(data, tmp_path, monkeypatch, loss, kw, one_perceptual_batch):
    monkeypatch.setattr(fused, "batches_perceptual", lambda device: one_perceptual_batch)
    cfgs = configs(loss=loss, steps=1, **kw)
    separate = [train(data, c, tmp_path / f"separate{i}") for i, c in enumerate(cfgs)]
    together = train_fused(cfgs, data, [tmp_path / f"fused{i}" for i in range(len(cfgs))])
    for a, b in zip(separate, together, strict=True):
        assert isinstance(b, type(a)) and b.steps == 1
        assert_equal_first_step(load(a.checkpoint), load(b.checkpoint))
    # The members differ from each other: the check above is not comparing one run three times.
    g0, g1 = (load(r.checkpoint)["G"]["net.0.weight"] for r in together[:2])
    assert (g0 - g1).abs().max() > 1e-3


def test_fused_checkpoints_resume_fused_or_alone(data, tmp_path):
    full = configs(loss="wgangp", steps=4, members=((0, 2.0), (1, 5.0)))
    half = configs(loss="wgangp", steps=2, members=((0, 2.0), (1, 5.0)))
    straight = train_fused(full, data, [tmp_path / "s0", tmp_path / "s1"])
    dirs = [tmp_path / "f0", tmp_path / "f1"]
    train_fused(half, data, dirs)
    assert all(load(d / "checkpoint.pt")["step"] == 2 for d in dirs)
    resumed = train_fused(full, data, dirs, resume=True)
    for a, b in zip(straight, resumed, strict=True):  # fused both ways: the same computation, exactly
        sa, sb = load(a.checkpoint), load(b.checkpoint)
        assert_same_streams(sa, sb)
        assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])  # the global RNG too (issue #26)
        assert sa["history"] == sb["history"]
        for key in ("G", "D", "G_ema"):
            assert all(torch.equal(sa[key][name], sb[key][name]) for name in sa[key]), key
    # A fused member's checkpoint is a separate run's: it resumes alone and loads as a generator.
    alone = train(data, full[1], tmp_path / "alone")
    train_fused(half, data, [tmp_path / "g0", tmp_path / "g1"])
    separate = train(data, full[1], tmp_path / "g1", resume=True)
    assert_close_states(load(alone.checkpoint), load(separate.checkpoint))
    assert load_generator(tmp_path / "g1" / "checkpoint.pt").z_dim == TINY["z_dim"]


def test_a_diverging_member_fails_alone(data, tmp_path):
    # λ = 1e300 is inf in fp32: member 1's generator loss and gradients are non-finite from step 1.
    cfgs = configs(loss="bce", steps=4, members=((0, 2.0), (1, 1e300), (2, 1.0)))
    results = train_fused(cfgs, data, [tmp_path / f"m{i}" for i in range(3)])
    assert isinstance(results[1], DivergedError)
    with pytest.raises(DivergedError) as alone:
        train(data, cfgs[1], tmp_path / "alone")
    assert (results[1].step, results[1].term) == (alone.value.step, alone.value.term)
    for i in (0, 2):
        reference = train(data, cfgs[i], tmp_path / f"ref{i}")
        assert results[i].steps == 4
        assert_close_states(load(reference.checkpoint), load(results[i].checkpoint))
        history, fused_history = reference.history["g/loss"], results[i].history["g/loss"]
        assert all(
            v == pytest.approx(w, rel=0.05) for (_, v), (_, w) in zip(history, fused_history, strict=True)
        )


def test_one_grouped_pass_per_call(data, tmp_path, monkeypatch):
    """The members' critic calls run as one grouped pass: K members cost one critic call each time."""
    calls = []
    original = fused.FusedGroup.score
    monkeypatch.setattr(
        fused.FusedGroup, "score", lambda self, args: calls.append(len(args)) or original(self, args)
    )
    train_fused(configs(loss="bce", steps=1), data, [tmp_path / f"m{i}" for i in range(3)])
    # bce: D(real) and D(fake) in the critic step, D(fake) in the generator step; each for all 3 members.
    assert calls == [3, 3, 3]


@register_loss("wgangp-unfusable-test")
class Unfusable(WGANGP):
    """WGAN-GP as a plugin that does not declare `fusable`."""

    fusable = False


@pytest.mark.parametrize(
    "change, both, message",
    [
        ({"loss": "bce"}, False, "not by loss"),
        ({"steps": 5}, False, "not by steps"),
        ({"lam": 0.0}, False, "all λ = 0"),
        ({"model": ModelConfig("toy-mlp")}, True, "dgan architecture"),
    ],
)
def test_what_cannot_be_fused_is_refused_in_one_line(change, both, message):
    base = {**TINY, "loss": "wgangp", "steps": 4}
    first = TrainConfig(**{**base, **(change if both else {})})
    second = TrainConfig(**{**base, "seed": 1, "lam": 5.0, **change})
    with pytest.raises(ConfigError, match=message) as e:
        check_fusable([first, second])
    assert "\n" not in str(e.value)


def test_a_plugin_loss_without_fusable_is_refused():
    with pytest.raises(ConfigError, match="does not declare `fusable`"):
        check_fusable(configs(loss="wgangp-unfusable-test"))


def test_fused_output_folders_must_differ(data, tmp_path):
    with pytest.raises(ConfigError, match="distinct output folder"):
        train_fused(configs(steps=1), data, [tmp_path / "a", tmp_path / "a", tmp_path / "b"])


def _run_members(tasks_for):
    """Rendezvous(len(tasks)).run(tasks) in a thread, joined with a timeout: the error it raised (or
    its results); a hang fails the test instead of blocking it."""
    outcome = {}
    with ThreadPoolExecutor(2) as pool:
        meet = Rendezvous(2, pool)

        def serve():
            try:
                outcome["results"] = meet.run(tasks_for(meet))
            except Exception as e:
                outcome["error"] = e

        server = threading.Thread(target=serve)
        server.start()
        server.join(10)
        assert not server.is_alive(), "the rendezvous hung"
    return outcome


def test_rendezvous_batches_one_call_for_all_members():
    def both(args):
        return [sum(a[0] for a in args) + a[0] for a in args]  # every member sees the others' values

    outcome = _run_members(lambda meet: [lambda: meet.call(0, both, 1), lambda: meet.call(1, both, 10)])
    assert outcome == {"results": [12, 21]}


def test_rendezvous_refuses_members_making_different_calls():
    def one(args):
        return [None for _ in args]

    def other(args):
        return [None for _ in args]

    outcome = _run_members(lambda meet: [lambda: meet.call(0, one, 1), lambda: meet.call(1, other, 1)])
    assert isinstance(outcome["error"], RuntimeError) and "different calls" in str(outcome["error"])


def test_a_member_making_one_call_fewer_is_named_not_a_bare_broken_barrier():
    def same(args):
        return [None for _ in args]

    def twice(meet):
        meet.call(1, same, 1)
        meet.call(1, same, 2)

    outcome = _run_members(lambda meet: [lambda: meet.call(0, same, 1), lambda: twice(meet)])
    error = outcome["error"]
    assert isinstance(error, RuntimeError) and not isinstance(error, threading.BrokenBarrierError)
    assert "different numbers of calls: member(s) [1] waited in same" in str(error)


def test_a_diverged_member_keeps_no_terms(data, tmp_path):
    """Issue #26: the loop appended every member's terms each step, and cleared only live ones."""
    cfgs = configs(loss="bce", steps=30, members=((0, 2.0), (1, 5.0)))
    members = [start_member(data, c, tmp_path / f"m{i}") for i, c in enumerate(cfgs)]

    def step_fn(step):
        return [{"g/loss": torch.tensor(1.0)}, {"g/loss": torch.tensor(float("nan"))}]

    results = train_loop(members, step_fn)
    assert isinstance(results[1], DivergedError) and results[1].step == 1
    assert len(members[1].pending) <= cfgs[0].log_every and members[0].pending == []


def test_a_failing_member_releases_the_others():
    def bad():
        raise ValueError("member 1 broke")

    outcome = _run_members(lambda meet: [lambda: meet.call(0, lambda args: args, 1), bad])
    assert isinstance(outcome["error"], ValueError)


def test_an_interrupt_while_serving_releases_the_members(monkeypatch):
    """Ctrl-C reaches the serving thread while the members wait in `call`: they are released (no
    hang on the way out) and the interrupt goes on."""

    def interrupted(self):
        with self._cv:
            self._cv.wait_for(lambda: len(self._calls) == self.k)
        raise KeyboardInterrupt

    monkeypatch.setattr(Rendezvous, "_serve", interrupted)
    outcome = {}

    def serve():
        with ThreadPoolExecutor(2) as pool:
            meet = Rendezvous(2, pool)
            try:
                meet.run([lambda: meet.call(0, print, 1), lambda: meet.call(1, print, 2)])
            except KeyboardInterrupt:
                outcome["interrupted"] = True

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    server.join(10)
    assert not server.is_alive() and outcome == {"interrupted": True}


def test_no_member_thread_outlives_its_group(data, tmp_path):
    """A worker trains group after group: each group's threads must end with it."""
    for round_ in range(2):
        train_fused(configs(loss="bce", steps=1), data, [tmp_path / f"r{round_}m{i}" for i in range(3)])
    assert not [t.name for t in threading.enumerate() if t.name.startswith("fused")]


@pytest.mark.parametrize("conditional", [False, True])
def test_fused_members_are_probed_like_separate_runs(data, tmp_path, conditional):
    """Health probes read each member's own blocks of the fused networks (lossbench.health)."""
    cfgs = configs(loss="bce", steps=1, health_every=1, conditional=conditional, members=((0, 2.0), (1, 5.0)))
    separate = [train(data, c, tmp_path / f"separate{i}") for i, c in enumerate(cfgs)]
    together = train_fused(cfgs, data, [tmp_path / f"fused{i}" for i in range(len(cfgs))])
    for a, b in zip(separate, together, strict=True):
        probes = {k: v for k, v in a.history.items() if k.startswith("health/")}
        assert len(probes) == 3 + conditional
        for name, ((step, x),) in probes.items():
            ((step_b, y),) = b.history[name]
            assert step == step_b == 1 and y == pytest.approx(x, rel=1e-3, abs=0.03), name


def test_a_non_finite_loss_is_left_out_of_the_backward_pass():
    """A diverged member's inf must not reach any gradient: only the finite losses are summed."""
    from lossbench.training.fused import backward_finite

    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    backward_finite([(2 * a).sum(), (b * float("inf")).sum()])
    assert torch.equal(a.grad, torch.full((3,), 2.0)) and b.grad is None
    c = torch.ones(1, requires_grad=True)
    backward_finite([(c * float("nan")).sum()])  # nothing finite: no backward at all
    assert c.grad is None
