"""The prepared GPU check (issues #15 and #17): one table, at most about 8 minutes on one GPU.

Rows (R = 128, batch 64, widths 64 unless `--quick`):
- `train <loss>` for wgangp, bce and ns-r1: the trainer's `build`/`train_step` with bf16 autocast
  and channels_last, λ = 5 with a random-weight VGG16 (cost only). Checked: every logged term finite
  (`mean_terms`, as the trainer does), the critic ran in bf16 outside the penalties, every penalty
  pass (input gradients) ran in fp32 with autocast and TF32 off, the networks are channels_last.
- `resume`: wgangp run straight against the same run checkpointed half-way and resumed through
  `train(..., resume=True)`, with `torch.use_deterministic_algorithms(True)` (cuDNN benchmarking is
  then off): the final G, EMA G and critic and the losses' saved RNG state (a CUDA
  generator) must be bit-identical.
- `trainer/bare`: images/s of the trainer and of the bare CUDA loop of benchmarks/train_step.py
  (wgangp, λ = 5 with its tiny perceptual network), and their ratio (goal ≤ 1.1).
- `fused K=…`: images/s of K seeds trained as one fused group, K = 1, 4, 8, 16, through
  `lossbench.training.fused.train_fused` (set-up included; compare K=1 with K=16 for the fused speed-up).
- `inception`: torch-fidelity's `inception-v3-compat` with RANDOM weights (timing only) run through
  lossbench's feature extraction (fp32, TF32 off), images/s.
Every row gives the peak device memory it reached (MiB, CUDA only); the last row the process's
peak resident memory. images/s counts images through the generator: batch × (n_critic + 1) per
generator step. The device is synchronised before the clock is read. A failed check prints FAIL
and the exit status is 1.

    python benchmarks/gpu_check.py                      # on cuda
    python benchmarks/gpu_check.py --device cpu --quick # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the resume row

import torch  # noqa: E402
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception  # noqa: E402

from lossbench import precision  # noqa: E402
from lossbench.config import TrainConfig, check_device  # noqa: E402
from lossbench.errors import ConfigError  # noqa: E402
from lossbench.metrics import fidelity  # noqa: E402
from lossbench.training.train import build, mean_terms, train, train_step  # noqa: E402

TIME_LIMIT_S = 7 * 60  # rows that would start later are skipped
HEADER = ("check", "setting", "result", "images/s", "peak MiB")
Row = tuple[str, str, str, str, str]


def _train_step_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "train_step_bench", Path(__file__).with_name("train_step.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sizes(quick: bool) -> SimpleNamespace:
    """Run sizes: the real check, or tiny ones for a CPU smoke test."""
    if quick:
        return SimpleNamespace(R=32, batch=8, width=4, z_dim=16, steps=4, warmup=1, repeats=1, n_images=4)
    return SimpleNamespace(
        R=128, batch=64, width=64, z_dim=128, steps=40, warmup=10, repeats=3, n_images=1000
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "-"


def _data(s: SimpleNamespace) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (780, 1, s.R, s.R), dtype=torch.uint8, generator=g)
    return SimpleNamespace(images=images, source="random", fingerprint="random")


def _config(s: SimpleNamespace, device: str, **kw: Any) -> TrainConfig:
    base = dict(
        batch_size=s.batch,
        g_width=s.width,
        d_width=s.width,
        z_dim=s.z_dim,
        steps=s.steps,
        device=device,
        progress=False,
        random_weights=True,
        perceptual="none" if s.R < 64 else "vgg16",
    )
    return TrainConfig(**{**base, **kw})


class CriticProbe:
    """Forward hooks on the critic: dtypes and flags of the penalty passes (a leaf input that requires
    grad) and of the other passes."""

    def __init__(self, D: torch.nn.Module) -> None:
        self.penalty: set[tuple] = set()
        self.plain: set[torch.dtype] = set()
        D.register_forward_hook(self.hook)

    def hook(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        if x.is_leaf and x.requires_grad:
            flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            self.penalty.add((out.dtype, torch.is_autocast_enabled(x.device.type), *flags))
        else:
            self.plain.add(out.dtype)


def check_training(loss: str, s: SimpleNamespace, device: torch.device, data: Any) -> Row:
    config = _config(s, str(device), loss=loss)
    run = build(data.images, config)
    probe = CriticProbe(run.D)
    pending, t0, problems = [], 0.0, []
    for step in range(s.steps):
        pending.append((step + 1, train_step(run, step)))
        if step + 1 == s.warmup:
            _sync(device)
            t0 = time.perf_counter()
    _sync(device)
    seconds = time.perf_counter() - t0
    try:
        mean_terms(pending)
    except Exception as e:  # DivergedError: a NaN/Inf term
        problems.append(f"NaN: {e}")
    amp = run.precision == "bf16"
    if probe.plain != {torch.bfloat16 if amp else torch.float32}:
        problems.append(f"critic dtypes {sorted(map(str, probe.plain))}")
    if any(p != (torch.float32, False, False, False) for p in probe.penalty):
        problems.append(f"penalty passes {sorted(map(str, probe.penalty))}")
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    conv = next(p for p in run.D.parameters() if p.dim() == 4 and p.shape[1] > 1)  # C = 1 fits any layout
    if not conv.is_contiguous(memory_format=layout):
        problems.append("critic not channels_last")
    penalty = "penalty fp32, TF32 off" if probe.penalty else "no penalty"
    result = "FAIL: " + "; ".join(problems) if problems else f"ok: finite, {penalty}"
    precision_text = ("bf16 autocast" if amp else "fp32") + (
        ", channels_last" if device.type == "cuda" else ""
    )
    img_s = (s.steps - s.warmup) * s.batch * (run.n_critic + 1) / seconds
    return (
        f"train {loss}",
        f"{precision_text}, λ={config.lam:g} {config.perceptual}",
        result,
        f"{img_s:.0f}",
        _peak_mib(device),
    )


def check_resume(s: SimpleNamespace, device: torch.device, data: Any) -> Row:
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            full_cfg = _config(s, str(device), loss="wgangp", lam=0.0, steps=s.steps // 2, log_every=1)
            half_cfg = _config(s, str(device), loss="wgangp", lam=0.0, steps=s.steps // 4, log_every=1)
            train(data, full_cfg, Path(tmp) / "full")
            train(data, half_cfg, Path(tmp) / "part")
            train(data, full_cfg, Path(tmp) / "part", resume=True)
            a, b = (torch.load(Path(tmp) / d / "checkpoint.pt", weights_only=True) for d in ("full", "part"))
    finally:
        torch.use_deterministic_algorithms(False)
    diffs = [
        (a[net][k].float() - b[net][k].float()).abs().max().item()
        for net in ("G", "G_ema", "D")
        for k in a[net]
        if a[net][k].is_floating_point()
    ]
    losses_rng = torch.equal(a["rng"]["losses"], b["rng"]["losses"])
    same = max(diffs) == 0 and losses_rng and a["history"] == b["history"]
    result = "ok: bit-identical" if same else f"FAIL: max |Δ| {max(diffs):.3g}, same RNG {losses_rng}"
    setting = f"wgangp {s.steps // 4}+{s.steps // 4} vs {s.steps // 2} steps, deterministic algorithms"
    return ("resume", setting, result, "-", _peak_mib(device))


def check_trainer_vs_bare(s: SimpleNamespace, device: torch.device, data: Any) -> Row:
    bench = _train_step_module()
    config = _config(
        s, str(device), loss="wgangp", lam=5.0, perceptual="bench-tiny", perceptual_layers=bench.LAYERS
    )
    ours, bare = [], []
    for _ in range(s.repeats):
        ours.append(bench.time_trainer(data, config, s.warmup))
        bare.append(bench.time_bare(data.images, config, s.warmup))
    per_step = s.batch * (get_n_critic(config) + 1)
    ratio = min(ours) / min(bare)
    result = f"{'ok' if ratio <= 1.1 else 'slow'}: ratio {ratio:.3f} (bare {per_step / min(bare):.0f} img/s)"
    return (
        "trainer/bare",
        f"wgangp λ=5 tiny perceptual, best of {s.repeats}",
        result,
        f"{per_step / min(ours):.0f}",
        _peak_mib(device),
    )


def get_n_critic(config: TrainConfig) -> int:
    from lossbench.losses import get_loss

    return config.n_critic or get_loss(config.loss).n_critic


def check_fused(k: int, s: SimpleNamespace, device: torch.device, data: Any) -> Row:
    """K seeds of wgangp (λ = 0) through `lossbench.training.fused.train_fused`, set-up included; every member
    must finish (no DivergedError)."""
    from lossbench.training.fused import train_fused

    configs = [_config(s, str(device), loss="wgangp", lam=0.0, seed=seed) for seed in range(k)]
    _sync(device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = train_fused(configs, data, [Path(tmp) / str(i) for i in range(k)])
    _sync(device)
    img_s = k * s.steps * s.batch * (get_n_critic(configs[0]) + 1) / (time.perf_counter() - start)
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    result = f"FAIL: members {failed} diverged" if failed else "ok: every member finished"
    return (f"fused K={k}", "wgangp, seeds 0..K-1, incl. set-up", result, f"{img_s:.0f}", _peak_mib(device))


def random_inception(device: torch.device) -> fidelity.Extractor:
    """torch-fidelity's inception-v3-compat with its constructor's weight loading skipped: the
    random initialisation of its layers (timing only; never for a reported FID)."""
    cls = tf_inception.FeatureExtractorInceptionV3
    with (
        mock.patch.object(tf_inception.torch, "load", lambda *a, **k: {}),
        mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None),
    ):
        module = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path="random")
    return fidelity.Extractor("inception-v3-compat", "2048", module.to(device), "random(timing only)")


def check_inception(s: SimpleNamespace, device: torch.device, data: Any) -> Row:
    ext = random_inception(device)
    images = data.images[: s.n_images].repeat(
        (s.n_images + len(data.images) - 1) // len(data.images), 1, 1, 1
    )
    with precision.fp32():
        fidelity.extract_features(ext, images[: min(len(images), 100)], 100, str(device))  # warm-up
        _sync(device)
        start = time.perf_counter()
        features = fidelity.extract_features(ext, images, 100, str(device))
        _sync(device)
    seconds = time.perf_counter() - start
    ok = torch.isfinite(features).all().item() and features.shape == (len(images), 2048)
    result = "ok: finite 2048-d features" if ok else "FAIL: non-finite features"
    setting = f"random weights, {len(images)} images {s.R} px -> 299, fp32"
    return ("inception", setting, result, f"{len(images) / seconds:.0f}", _peak_mib(device))


def run_checks(args: argparse.Namespace | SimpleNamespace) -> list[Row]:
    """Every row of the table, in order; rows that would start after TIME_LIMIT_S are skipped."""
    device = torch.device(args.device)
    s = sizes(args.quick)
    data = _data(s)
    checks = [
        (f"train {loss}", lambda loss=loss: check_training(loss, s, device, data))
        for loss in ("wgangp", "bce", "ns-r1")
    ]
    checks += [("resume", lambda: check_resume(s, device, data))]
    checks += [("trainer/bare", lambda: check_trainer_vs_bare(s, device, data))]
    checks += [(f"fused K={k}", lambda k=k: check_fused(k, s, device, data)) for k in (1, 4, 8, 16)]
    checks += [("inception", lambda: check_inception(s, device, data))]
    rows, start = [], time.perf_counter()
    for name, check in checks:
        if time.perf_counter() - start > TIME_LIMIT_S:
            rows.append((name, "-", "skipped (time limit)", "-", "-"))
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            rows.append(check())
        except Exception as e:  # one broken check must not hide the others
            rows.append(
                (name, "-", f"FAIL: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", "-", "-")
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak memory", f"{time.perf_counter() - start:.0f} s in all", "-", "-", f"host {rss:.0f}"))
    return rows


def format_table(rows: list[Row]) -> str:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [HEADER, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test, seconds)")
    args = ap.parse_args()
    try:
        check_device(args.device)
    except ConfigError as e:
        ap.error(str(e))  # one line, exit status 2
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"gpu_check on {args.device} ({name}), torch {torch.__version__}, quick={args.quick}")
    rows = run_checks(args)
    print(format_table(rows))
    sys.exit(1 if any(r[2].startswith("FAIL") for r in rows) else 0)


if __name__ == "__main__":
    main()
