"""lossbench: benchmark GAN adversarial losses and perceptual-loss weights with evidence."""

__version__ = "0.1.0"
