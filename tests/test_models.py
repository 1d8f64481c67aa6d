"""DGAN-WP-TL networks and the perceptual loss, checked against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_weights import trust_file
from torch import nn

from lossbench.errors import ConfigError, MissingWeightsError
from lossbench.images import generate_images
from lossbench.models import (
    Critic,
    Generator,
    PerceptualLoss,
    dcgan_init_,
    layer_names,
    register_feature_network,
)


def tiny_features(random_weights: bool, weights_dir: str | None) -> nn.Sequential:
    """A deterministic VGG-shaped network: block 1 (conv, relu), pool, block 2 (conv, relu, conv, relu)."""
    torch.manual_seed(123)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(inplace=True),
    )


register_feature_network("tiny-test", tiny_features)


@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_shapes_and_ranges(resolution):
    G = Generator(resolution, z_dim=16, width=4)
    D = Critic(resolution, width=4, norm="layernorm")
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 1, resolution, resolution)
    assert x.abs().max() <= 1
    assert D(x).shape == (3,)
    assert G.resolution == resolution and G.z_dim == 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def test_stages_and_widths():
    # R = 64: 4 -> 8 -> 16 -> 32 -> 64, four stride-2 stages; channels double towards 4×4, capped at 8×width.
    G = Generator(64, z_dim=8, width=2)
    ups = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.stride[0] for m in ups] == [1, 2, 2, 2, 2]
    assert [m.out_channels for m in ups] == [16, 16, 8, 4, 2]
    D = Critic(64, width=2, norm="none")
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [2, 4, 8, 16, 1]  # 32, 16, 8, 4, then 4×4 -> 1×1
    assert not any(isinstance(m, nn.GroupNorm | nn.BatchNorm2d) for m in D.modules())
    D = Critic(64, width=2, norm="layernorm")
    assert (
        sum(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in D.modules()) == 3
    )  # all but the first


def test_dcgan_init():
    G = Generator(64, z_dim=128, width=32, rng=torch.Generator().manual_seed(0))
    convs = [m.weight for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    w = torch.cat([c.flatten() for c in convs])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1) < 0.01 and abs(bn.std().item() - 0.02) < 0.01
    assert all((m.bias == 0).all() for m in G.modules() if isinstance(m, nn.BatchNorm2d))
    same = Generator(64, z_dim=128, width=32, rng=torch.Generator().manual_seed(0))
    other = dcgan_init_(Generator(64, z_dim=128, width=32), torch.Generator().manual_seed(1))
    for a, b in zip(G.parameters(), same.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(G.net[0].weight, other.net[0].weight)


def test_generate_images_matches_hand_computation():
    G = Generator(32, z_dim=8, width=4).train()
    out = generate_images(G, 5, seed=7, batch_size=2)
    assert out.dtype == torch.uint8 and out.shape == (5, 1, 32, 32)
    assert G.training  # mode restored
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = ((G.eval()(z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(out, expected)
    assert torch.equal(generate_images(G, 5, seed=7, batch_size=100), out)  # independent of batch size
    assert not torch.equal(generate_images(G, 5, seed=8), out)


def test_vgg_layer_names():
    with torch.device("meta"):
        vgg16, vgg19 = torchvision.models.vgg16().features, torchvision.models.vgg19().features
    names = layer_names(vgg16)
    assert names.index("relu1_2") == 3 and names.index("relu2_2") == 8
    assert names.index("relu3_3") == 15 and names.index("relu4_3") == 22 and names[-1] == "pool5"
    assert layer_names(vgg19).index("relu4_4") == 26


def _hand_perceptual(net: nn.Sequential, fake, real, taps, distance, pairing):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(x):
        x = (torch.cat([(x + 1) / 2] * 3, dim=1) - mean) / std
        out = []
        for i, m in enumerate(net):
            x = F.relu(x) if isinstance(m, nn.ReLU) else m(x)  # out-of-place
            if i in taps:
                out.append(x)
        return out

    total = 0.0
    for f, r in zip(feats(fake), feats(real), strict=True):
        if pairing == "mean":
            f, r = f.mean(0), r.mean(0)
        d = (f - r).abs() if distance == "l1" else (f - r) ** 2
        total = total + d.mean()
    return total


@pytest.mark.parametrize("distance,pairing", [("l1", "paired"), ("mse", "paired"), ("l1", "mean")])
def test_perceptual_matches_hand_formula(distance, pairing):
    loss = PerceptualLoss("tiny-test", ("conv1_1", "relu2_2"), distance, pairing)
    fake = (torch.rand(3, 1, 16, 16) * 2 - 1).requires_grad_(True)
    real = torch.rand(3, 1, 16, 16) * 2 - 1
    value = loss(fake, real)
    # conv1_1 is tapped before an (originally in-place) ReLU: the tap must hold pre-activation values.
    expected = _hand_perceptual(tiny_features(False, None), fake, real, {0, 6}, distance, pairing)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    assert len(loss.features) == 7 and loss.weights == "pretrained"
    loss.train()
    assert not loss.training


def test_perceptual_truncates_and_rejects_bad_layers():
    assert len(PerceptualLoss("tiny-test", ("relu1_1",)).features) == 2
    with pytest.raises(ConfigError, match="relu9_9"):
        PerceptualLoss("tiny-test", ("relu9_9",))
    with pytest.raises(ConfigError, match="unknown perceptual network"):
        PerceptualLoss("nope")


def test_vgg_needs_weights_unless_random_is_explicit(tmp_path, monkeypatch):
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        PerceptualLoss("vgg16", weights_dir=str(tmp_path))
    # A stand-in weight file with torchvision's keys and shapes (stride-0 tensors: a few bytes each).
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    state = {k: torch.full((1,), float(i)).expand(shape) for i, (k, shape) in enumerate(shapes.items())}
    torch.save(state, tmp_path / "vgg16-397923af.pth")
    trust_file(monkeypatch, "vgg16", tmp_path / "vgg16-397923af.pth")
    loss = PerceptualLoss("vgg16", ("relu1_2",), weights_dir=str(tmp_path))
    assert loss.weights == "pretrained" and len(loss.features) == 4
    assert torch.equal(loss.features[2].weight, state["features.2.weight"])
    loss = PerceptualLoss("vgg19", ("relu1_2", "relu2_2"), random_weights=True)
    assert loss.weights == "random" and len(loss.features) == 9
    assert loss(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)).item() == 0


def test_random_vgg_is_the_same_network_whatever_the_global_rng_state():
    torch.manual_seed(1)
    a = PerceptualLoss("vgg16", ("relu2_2",), random_weights=True)
    torch.manual_seed(2)
    b = PerceptualLoss("vgg16", ("relu2_2",), random_weights=True)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    w = a.features[0].weight  # torchvision's VGG init: kaiming normal, fan_out, ReLU gain
    expected_std = (2 / (w.shape[0] * 9)) ** 0.5
    assert abs(w.std().item() - expected_std) < 0.2 * expected_std
