"""DGAN-WP-TL's networks: generator, critic (dgan.py) and the perceptual loss (perceptual.py)."""

from lossbench.models.dgan import Critic, Generator, dcgan_init_
from lossbench.models.perceptual import (
    PerceptualLoss,
    available_feature_networks,
    layer_names,
    register_feature_network,
)

__all__ = [
    "Critic",
    "Generator",
    "PerceptualLoss",
    "available_feature_networks",
    "dcgan_init_",
    "layer_names",
    "register_feature_network",
]
