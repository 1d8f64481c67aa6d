"""Training: the DGAN-WP-TL loop (`train`: generator + critic + λ·perceptual loss, checkpoints,
resume), several cells of one shape trained as one fused group (`fused`, `fusable`), DiffAugment
(`augment`) and the per-run random streams (`randomness`)."""
