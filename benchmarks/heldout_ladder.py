"""The sanity ladder and copy detection on real data, in a domain encoder's space.

Loads the data and the split the encoder was trained with (from its sidecar), then scores, against
the train part: the held-out part (fresh real images), the phantom at the same resolution and
size, uniform noise, and as a memorising "generator" training images (exact copies, copies with
Gaussian noise sd 3 grey levels, mirrored copies). Printed: FID/KID (with bootstrap SEs), density/
coverage, authenticity and C_T in the encoder's space and in pixel space, and every setting.
Expected: FID(held-out) < FID(phantom) < FID(noise); copies flagged, held-out images not.

    python benchmarks/heldout_ladder.py ENCODER_FILE [--data busi] [--n 156] [--bootstrap 20]
"""

from __future__ import annotations

import argparse
import json

import torch

from lossbench.config import DataConfig, EvalConfig
from lossbench.data import load_dataset
from lossbench.data.split import load_split
from lossbench.metrics import evaluate
from lossbench.metrics.encoder import load_encoder

KEYS = ("fid", "fid_se", "kid", "kid_se", "density", "coverage")
COPY_KEYS = ("authenticity_feat", "ct_feat", "authenticity_pixel", "ct_pixel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder")
    parser.add_argument("--data", default="busi")
    parser.add_argument("--n", type=int, default=0, help="fakes per set (0: as many as held-out images)")
    parser.add_argument("--bootstrap", type=int, default=20)
    args = parser.parse_args()
    _, sidecar = load_encoder(args.encoder)
    split_rec, resolution = sidecar["split"], sidecar["resolution"]
    split = load_split(DataConfig(args.data, resolution, None, split_rec["holdout"], split_rec["split_seed"]))
    assert split.train.fingerprint == split_rec["train_fingerprint"], "not the encoder's train part"
    held = split.heldout.images
    n = args.n or len(held)
    gen = torch.Generator().manual_seed(0)
    train = split.train.images[torch.randperm(len(split.train), generator=gen)[:n]]
    sets = {
        "held-out real": held[:n],
        "phantom": load_dataset(f"phantom:{n}", resolution).images,
        "uniform noise": torch.randint(
            0, 256, (n, 1, resolution, resolution), generator=gen, dtype=torch.uint8
        ),
        "train copies": train,
        "copies + noise": (train.float() + 3 * torch.randn(train.shape, generator=gen)).clamp(0, 255).byte(),
        "mirrored copies": train.flip(-1),
    }
    name = f"encoder:{args.encoder}"
    config = EvalConfig(
        metrics=("fid", "kid", "dc", "copy"), n_fake=n, feature_extractor=name, prc_extractor=name,
        kid_subsets=20, bootstrap=args.bootstrap, cache_dir="mlruns/feature-cache",
    )  # fmt: skip
    print(f"{'fakes':<16}" + "".join(f"{k:>19}" for k in KEYS + COPY_KEYS))
    settings = {}
    for label, fakes in sets.items():
        result = evaluate(fakes, split.train, config, heldout=split.heldout)
        m = result.metrics
        print(f"{label:<16}" + "".join(f"{m[k]:>19.4g}" for k in KEYS + COPY_KEYS))
        settings = result.settings
    print("held-out yardstick: authenticity_feat", f"{m['authenticity_heldout_feat']:.3f}",
          "authenticity_pixel", f"{m['authenticity_heldout_pixel']:.3f}")  # fmt: skip
    print("settings:", json.dumps(settings | {"split": split_rec}))


if __name__ == "__main__":
    main()
