"""DGAN-WP-TL's networks: generator, critic (dgan.py) and the perceptual loss (perceptual.py)."""

from lossbench.models.dgan import Critic, Generator, dcgan_init_, generate_images, to_float, to_uint8
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
    "generate_images",
    "layer_names",
    "register_feature_network",
    "to_float",
    "to_uint8",
]
