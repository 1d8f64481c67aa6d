"""Adversarial losses: the registry, the in-tree loss zoo and third-party plugins.

    from lossbench.losses import get_loss, available_losses
    loss = get_loss("wgangp", gp_weight=10.0)
    out = loss.discriminator_loss(D, real, fake.detach())   # LossOutput(loss, terms)

See base.py for the contract, registry.py for plugins (entry-point group `lossbench.losses`).
"""

from __future__ import annotations

from lossbench.losses import bce, hinge, lsgan, relativistic, wasserstein  # noqa: F401  (register)
from lossbench.losses.base import AdversarialLoss, LossOutput
from lossbench.losses.registry import available_losses, get_loss, register_loss

__all__ = ["AdversarialLoss", "LossOutput", "available_losses", "get_loss", "register_loss"]
