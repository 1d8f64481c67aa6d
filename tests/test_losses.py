"""The loss zoo against hand computations.

Every loss is checked on fixed fp64 tensors: its value against a numpy formula written out here,
and its gradients (torch.autograd.grad) against central finite differences of that numpy formula,
w.r.t. the critic's parameters (critic step) and the fake images (generator step). Input gradients
inside penalties are written in closed form: for D(x) = w·x + b it is w, for the quadratic critic
D(x) = ½ Σ a·x² + w·x + b it is a·x + w.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from torch import nn

from lossbench.cli import main
from lossbench.errors import ConfigError, UnknownLossError
from lossbench.losses import AdversarialLoss, LossOutput, available_losses, get_loss
from lossbench.losses.penalties import gradient_penalty, r1_penalty

N, SHAPE = 6, (1, 3, 3)  # 6 images of 1×3×3 = 9 pixels
DIM = int(np.prod(SHAPE))
BUILTIN = ["bce", "dragan", "hinge", "lsgan", "ns-r1", "rasgan", "rsgan", "wgangp"]


# --- critics, as torch modules and as numpy formulas ----------------------------------------------


class LinearCritic(nn.Module):
    """D(x) = w·x + b, so ∇ₓD = w for every x. Returns N×1 scores (losses must flatten them)."""

    def __init__(self, w: np.ndarray, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.w + self.b)[:, None]


class QuadraticCritic(nn.Module):
    """D(x) = ½ Σ a·x² + w·x + b, so ∇ₓD = a·x + w: its norm differs from sample to sample."""

    def __init__(self, a: np.ndarray, w: np.ndarray, b: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return 0.5 * (self.a * x * x).sum(1) + x @ self.w + self.b


def np_scores(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1)
    return 0.5 * (p.get("a", 0.0) * x * x).sum(1) + x @ p["w"] + p["b"]


def np_input_grad(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Closed form ∇ₓD, one row per sample."""
    return p.get("a", 0.0) * x.reshape(len(x), -1) + p["w"]


def make_critic(kind: str) -> tuple[nn.Module, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    w, b = rng.normal(0, 0.6, DIM), 0.3
    if kind == "linear":
        return LinearCritic(w, b), {"w": w, "b": np.array(b)}
    a = rng.normal(0, 1.5, DIM)
    return QuadraticCritic(a, w, b), {"a": a, "w": w, "b": np.array(b)}


def batches() -> tuple[np.ndarray, np.ndarray]:
    """Fixed real and fake batches; the fakes sit on a different scale so the scores spread out."""
    rng = np.random.default_rng(0)
    real = np.tanh(rng.normal(0, 1, (N, *SHAPE)))
    fake = np.tanh(rng.normal(0.2, 2, (N, *SHAPE)))
    return real, fake


# --- the reference formulas, in numpy ----------------------------------------------------------------


def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bce_d(r, f):  # -E log σ(D(r)) - E log(1 - σ(D(f))), the textbook form
    return -np.log(sigmoid(r)).mean() - np.log(1 - sigmoid(f)).mean()


def ns_g(r, f):
    return -np.log(sigmoid(f)).mean()


#: loss name -> (L_D adversarial part, L_G) as functions of the numpy score vectors.
ADVERSARIAL = {
    "wgangp": (lambda r, f: f.mean() - r.mean(), lambda r, f: -f.mean()),
    "bce": (bce_d, ns_g),
    "ns-r1": (bce_d, ns_g),
    "dragan": (bce_d, ns_g),
    "hinge": (
        lambda r, f: np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(),
        lambda r, f: -f.mean(),
    ),
    "lsgan": (
        lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
        lambda r, f: 0.5 * ((f - 1) ** 2).mean(),
    ),
    "rsgan": (
        lambda r, f: -np.log(sigmoid(r - f)).mean(),
        lambda r, f: -np.log(sigmoid(f - r)).mean(),
    ),
    "rasgan": (
        lambda r, f: -np.log(sigmoid(r - f.mean())).mean() - np.log(1 - sigmoid(f - r.mean())).mean(),
        lambda r, f: -np.log(sigmoid(f - r.mean())).mean() - np.log(1 - sigmoid(r - f.mean())).mean(),
    ),
}


def penalty_points(name: str, real: np.ndarray, fake: np.ndarray, seed: int) -> np.ndarray | None:
    """The points the loss's penalty evaluates ∇D at, redrawing its random numbers from `seed`."""
    torch.manual_seed(seed)
    if name == "wgangp":
        eps = torch.rand(N, 1, 1, 1, dtype=torch.float64).numpy()  # one ε per sample
        return eps * real + (1 - eps) * fake
    if name == "dragan":
        u = torch.rand(real.shape, dtype=torch.float64).numpy()
        alpha = torch.rand(N, 1, 1, 1, dtype=torch.float64).numpy()
        perturbed = real + 0.5 * np.std(real) * u  # std of the whole batch, ddof 0
        return real + alpha * (perturbed - real)
    return None


def reference_d(name: str, p: dict, real: np.ndarray, fake: np.ndarray, points) -> float:
    """L_D by hand: the adversarial part plus the penalty with closed-form input gradients."""
    value = ADVERSARIAL[name][0](np_scores(p, real), np_scores(p, fake))
    if name in ("wgangp", "dragan"):
        norms = np.linalg.norm(np_input_grad(p, points), axis=1)  # per sample
        value += 10.0 * np.mean((norms - 1.0) ** 2)
    if name == "ns-r1":
        value += 10.0 / 2 * np.mean((np_input_grad(p, real) ** 2).sum(1))
    return value


def finite_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function f at x (x is modified in place and restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        g[i] = (up - down) / (2 * h)
    return grad


# --- every loss: value and gradients ------------------------------------------------------------------


@pytest.mark.parametrize("critic", ["linear", "quadratic"])
@pytest.mark.parametrize("name", BUILTIN)
def test_discriminator_loss_value_and_parameter_gradients(name, critic):
    D, p = make_critic(critic)
    real, fake = batches()
    torch.manual_seed(7)
    out = get_loss(name).discriminator_loss(D, torch.tensor(real), torch.tensor(fake))
    points = penalty_points(name, real, fake, seed=7)

    assert out.loss.dim() == 0
    assert out.loss.item() == pytest.approx(reference_d(name, p, real, fake, points), rel=1e-10, abs=1e-12)
    names = [n for n, _ in D.named_parameters()]
    grads = torch.autograd.grad(out.loss, list(D.parameters()))
    for key, grad in zip(names, grads, strict=True):
        expected = finite_difference(lambda: reference_d(name, p, real, fake, points), p[key])
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-6, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("name", BUILTIN)
def test_generator_loss_value_and_fake_gradients(name):
    D, p = make_critic("quadratic")
    real, fake = batches()
    fake_t = torch.tensor(fake, requires_grad=True)
    out = get_loss(name).generator_loss(D, torch.tensor(real), fake_t)

    def reference():
        return ADVERSARIAL[name][1](np_scores(p, real), np_scores(p, fake))

    assert out.loss.item() == pytest.approx(reference(), rel=1e-10, abs=1e-12)
    (grad,) = torch.autograd.grad(out.loss, fake_t)
    np.testing.assert_allclose(grad.numpy(), finite_difference(reference, fake), rtol=1e-6, atol=1e-8)


def test_bce_saturating_generator_is_the_minimax_loss():
    D, p = make_critic("quadratic")
    real, fake = batches()
    fake_t = torch.tensor(fake, requires_grad=True)
    out = get_loss("bce", saturating=True).generator_loss(D, torch.tensor(real), fake_t)

    def reference():  # E[log(1 - σ(D(f)))], minimised by the generator
        return np.log(1 - sigmoid(np_scores(p, fake))).mean()

    assert out.loss.item() == pytest.approx(reference(), rel=1e-10)
    (grad,) = torch.autograd.grad(out.loss, fake_t)
    np.testing.assert_allclose(grad.numpy(), finite_difference(reference, fake), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["bce", "ns-r1", "dragan", "rsgan", "rasgan"])
def test_logit_losses_are_finite_for_extreme_logits(name):
    """Softplus, never log(sigmoid): fp32 logits of ±200 give the exact, finite loss and gradient."""
    D = LinearCritic(np.zeros(DIM), 0.0).float()
    real, fake = torch.zeros(N, *SHAPE), torch.zeros(N, *SHAPE)
    with torch.no_grad():
        D.b.fill_(-200.0)  # real and fake both score -200: the critic calls everything fake
    loss = get_loss(name)
    d_out = loss.discriminator_loss(D, real, fake)
    g_out = loss.generator_loss(D, real, fake)
    expected_d = {
        "bce": 200.0,
        "ns-r1": 200.0,
        "dragan": 200.0 + 10.0,
        "rsgan": np.log(2),
        "rasgan": 2 * np.log(2),
    }
    expected_g = {"bce": 200.0, "ns-r1": 200.0, "dragan": 200.0, "rsgan": np.log(2), "rasgan": 2 * np.log(2)}
    assert d_out.loss.item() == pytest.approx(expected_d[name], rel=1e-6)
    assert g_out.loss.item() == pytest.approx(expected_g[name], rel=1e-6)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(d_out.loss, list(D.parameters())))


# --- the gradient penalty: closed form and per sample -------------------------------------------------


def test_wgangp_with_linear_critic_is_exactly_norm_w_minus_one_squared():
    """∇D = w everywhere, so the penalty is (‖w‖ - 1)² whatever ε, and its gradient is closed form."""
    D, p = make_critic("linear")
    real, fake = batches()
    out = get_loss("wgangp", gp_weight=3.0).discriminator_loss(D, torch.tensor(real), torch.tensor(fake))
    norm_w = np.linalg.norm(p["w"])
    x_r, x_f = real.reshape(N, -1), fake.reshape(N, -1)
    wdist = (x_r @ p["w"]).mean() - (x_f @ p["w"]).mean()

    assert out.terms["gp"].item() == pytest.approx((norm_w - 1) ** 2, rel=1e-12)
    assert out.terms["wdist"].item() == pytest.approx(wdist, rel=1e-12)
    assert out.loss.item() == pytest.approx(-wdist + 3.0 * (norm_w - 1) ** 2, rel=1e-12)
    grad_w, grad_b = torch.autograd.grad(out.loss, [D.w, D.b])
    expected_w = x_f.mean(0) - x_r.mean(0) + 3.0 * 2 * (norm_w - 1) * p["w"] / norm_w
    np.testing.assert_allclose(grad_w.numpy(), expected_w, rtol=1e-12)
    assert grad_b.item() == pytest.approx(0.0, abs=1e-12)  # the penalty does not depend on b


def test_gradient_penalty_is_per_sample():
    """On a batch whose per-sample gradient norms differ, per-sample and whole-batch norms disagree."""
    D, p = make_critic("quadratic")
    x = np.stack([np.full(SHAPE, v) for v in (-1.0, -0.5, 0.0, 0.3, 0.7, 1.0)])
    norms = np.linalg.norm(np_input_grad(p, x), axis=1)
    per_sample = np.mean((norms - 1) ** 2)
    whole_batch = (np.linalg.norm(np_input_grad(p, x)) - 1) ** 2  # one norm over the whole batch
    mean_norm = (norms.mean() - 1) ** 2  # the batch's mean norm, penalised once
    assert norms.std() > 0.3 and abs(whole_batch - per_sample) > 1 and abs(mean_norm - per_sample) > 0.1

    gp = gradient_penalty(D, torch.tensor(x))
    assert gp.item() == pytest.approx(per_sample, rel=1e-12)
    grads = torch.autograd.grad(gp, [D.a, D.w])
    for key, grad in zip(["a", "w"], grads, strict=True):

        def reference():
            return np.mean((np.linalg.norm(np_input_grad(p, x), axis=1) - 1) ** 2)

        np.testing.assert_allclose(grad.numpy(), finite_difference(reference, p[key]), rtol=1e-6, atol=1e-9)


def test_r1_penalty_closed_form():
    D, p = make_critic("quadratic")
    real, _ = batches()
    r1 = r1_penalty(D, torch.tensor(real))
    g = np_input_grad(p, real)
    assert r1.item() == pytest.approx(np.mean((g**2).sum(1)), rel=1e-12)
    grad_a, grad_w = torch.autograd.grad(r1, [D.a, D.w])
    x = real.reshape(N, -1)
    np.testing.assert_allclose(grad_a.numpy(), np.mean(2 * g * x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(grad_w.numpy(), np.mean(2 * g, axis=0), rtol=1e-12)


# --- penalties under bf16 autocast ------------------------------------------------------------------


def mlp_critic() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, 1))


@pytest.mark.parametrize("penalty", [gradient_penalty, r1_penalty], ids=["gradient_penalty", "r1_penalty"])
def test_penalties_under_bf16_autocast_equal_fp32(penalty):
    D = mlp_critic()
    x = torch.tensor(batches()[0], dtype=torch.float32)
    fp32 = penalty(D, x)
    weights = [D[1].weight, D[1].bias, D[3].weight]  # the last bias has no input gradient
    fp32_grads = torch.autograd.grad(fp32, weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = penalty(D, x)

        # The same penalty written naively (autocast left on) is visibly off: the test can fail.
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(xg).sum(), xg, create_graph=True)
        naive = (
            (g.flatten(1).norm(dim=1) - 1).pow(2).mean()
            if penalty is gradient_penalty
            else g.pow(2).sum((1, 2, 3)).mean()
        )
    assert abs(naive.float().item() - fp32.item()) > 1e-4 * abs(fp32.item())
    mixed_grads = torch.autograd.grad(mixed, weights)  # backward outside autocast, as in training

    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(fp32.item(), rel=1e-6)
    for a, b in zip(mixed_grads, fp32_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("name", "term"), [("wgangp", "gp"), ("ns-r1", "r1"), ("dragan", "gp")])
def test_loss_penalty_terms_under_bf16_autocast_equal_fp32(name, term):
    D = mlp_critic()
    real, fake = (torch.tensor(b, dtype=torch.float32) for b in batches())
    torch.manual_seed(5)
    fp32 = get_loss(name).discriminator_loss(D, real, fake).terms[term]
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = get_loss(name).discriminator_loss(D, real, fake).terms[term]
    assert mixed.item() == pytest.approx(fp32.item(), rel=1e-6)


# --- registry and CLI ---------------------------------------------------------------------------------


def test_registry_lists_every_builtin_with_its_defaults():
    assert set(BUILTIN) <= set(available_losses())
    assert get_loss("wgangp").n_critic == 5 and get_loss("wgangp").params() == {"gp_weight": 10.0}
    assert all(get_loss(n).n_critic == 1 for n in BUILTIN if n != "wgangp")
    assert get_loss("ns-r1").params() == {"gamma": 10.0}
    assert get_loss("dragan").params() == {"gp_weight": 10.0, "k": 1.0}
    assert get_loss("lsgan").params() == {"a": 0.0, "b": 1.0, "c": 1.0}
    assert get_loss("wgangp", gp_weight=2).params() == {"gp_weight": 2.0}
    for name in BUILTIN:
        loss = get_loss(name)
        assert isinstance(loss, AdversarialLoss) and loss.name == name
        doc = type(loss).__doc__
        assert "L_D" in doc and "Defaults:" in doc and "Source:" in doc


def test_terms_are_detached_scalars():
    D, _ = make_critic("quadratic")
    real, fake = (torch.tensor(b) for b in batches())
    out = get_loss("wgangp").discriminator_loss(D, real, fake)
    assert isinstance(out, LossOutput) and set(out.terms) == {"wdist", "gp"}
    assert all(t.dim() == 0 and not t.requires_grad for t in out.terms.values())


def test_same_seed_same_penalty():
    D = mlp_critic()
    real, fake = (torch.tensor(b, dtype=torch.float32) for b in batches())
    values = []
    for _ in range(2):
        torch.manual_seed(11)
        values.append(get_loss("dragan").discriminator_loss(D, real, fake).loss.item())
    assert values[0] == values[1]


def test_get_loss_errors_name_the_valid_choices():
    with pytest.raises(UnknownLossError, match="unknown loss 'wgan'; available: bce, dragan"):
        get_loss("wgan")
    with pytest.raises(ConfigError, match="'wgangp' has no parameter gamma; valid: gp_weight"):
        get_loss("wgangp", gamma=1.0)
    with pytest.raises(ConfigError, match="gp_weight must be a finite number >= 0, got -1"):
        get_loss("wgangp", gp_weight=-1)
    with pytest.raises(ConfigError, match="saturating must be true or false"):
        get_loss("bce", saturating="yes")


def test_cli_losses_list_and_show(capsys):
    assert main(["losses", "list"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert f"\n{name} " in f"\n{out}"
    assert "gp_weight=10.0, n_critic=5" in out and "Gulrajani" in out and "Mescheder" in out

    assert main(["losses", "show", "ns-r1"]) == 0
    out = capsys.readouterr().out
    assert "(gamma/2) · E[‖∇D(r)‖₂²]" in out and "gamma=10.0, n_critic=1" in out and "built-in" in out


def test_cli_show_unknown_loss_is_one_line_exit_2(capsys):
    assert main(["losses", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "unknown loss 'nope'", "wgangp")
