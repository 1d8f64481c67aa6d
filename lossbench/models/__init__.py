"""Architectures by name (registry.py), DGAN-WP-TL's generator and critic (dgan.py, registered as
"dgan") and the perceptual loss (perceptual.py)."""

from lossbench.models.dgan import Critic, Generator, dcgan_init_
from lossbench.models.perceptual import (
    PerceptualLoss,
    available_feature_networks,
    layer_names,
    register_feature_network,
)
from lossbench.models.registry import available_models, build_model, register_model

__all__ = [
    "Critic",
    "Generator",
    "PerceptualLoss",
    "available_feature_networks",
    "available_models",
    "build_model",
    "dcgan_init_",
    "layer_names",
    "register_feature_network",
    "register_model",
]
