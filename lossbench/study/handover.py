"""Checkpoints that travel through the tracking server, so that a cell taken over by another machine
resumes where the dead one stopped instead of from step 0 (docs/cluster.md).

With a tracking server (an http or https URI), each checkpoint of a trial is uploaded as artifacts of
its MLflow run, alternately into two slots (`checkpoint/a`, `checkpoint/b`): the training checkpoint
and, when the cell keeps one, its best generator. Only once every file is up does the run's tag
HANDOVER_TAG name the slot, the step and each file's SHA-256; a worker killed during an upload
therefore leaves the slot the tag names intact. Two slots per run: at most twice a checkpoint's size
in the artifact store per cell.

A trial looks through the earlier trials of its cell (the trials it retries, or a dead trial whose
retry a duplicate pre-empted: two machines queueing at once can queue one cell twice) for the
furthest uploaded checkpoint. When it is further than the one in the local checkpoint folder, or
there is none, it is downloaded, its digests checked and its files moved into place; training then
resumes from it as from a local checkpoint, bit for bit. A download that fails or does not match its
digests is reported in one line and the cell resumes from what the machine has (or from scratch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lossbench.errors import first_line
from lossbench.files import load_tensors
from lossbench.study import record
from lossbench.study.queue import trial_cell

SLOTS = ("checkpoint/a", "checkpoint/b")
HANDOVER_TAG = "lossbench.handover"  # JSON {"step", "slot", "sha256": {file name: digest}}
PARTIAL = ".handover-"  # a download in progress, inside the checkpoint folder


def travels(tracking_uri: str) -> bool:
    """Whether checkpoints are uploaded: only a tracking server is reachable from other machines."""
    return urlparse(tracking_uri).scheme in ("http", "https")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload(client: MlflowClient, run_id: str, step: int, files: list[Path]) -> None:
    """Upload the existing ones of `files` (a checkpoint and what belongs with it) into the slot the
    run's last upload did not use, then name it in HANDOVER_TAG."""
    last = _handover(client, run_id)
    slot = SLOTS[1] if last is not None and last["slot"] == SLOTS[0] else SLOTS[0]
    digests = {}
    for path in files:
        if path.exists():
            digests[path.name] = _sha256(path)
            client.log_artifact(run_id, str(path), slot)
    client.set_tag(run_id, HANDOVER_TAG, json.dumps({"step": step, "slot": slot, "sha256": digests}))


def _handover(client: MlflowClient, run_id: str) -> dict | None:
    tag = client.get_run(run_id).data.tags.get(HANDOVER_TAG)
    return json.loads(tag) if tag else None


def _local_step(checkpoint: Path) -> int:
    """The step of the local checkpoint; -1 when there is none or it cannot be read."""
    try:
        return int(load_tensors(checkpoint)["step"])
    except Exception:  # absent, truncated or garbled: training sets a damaged one aside itself
        return -1


def _earlier_runs(trial: optuna.Trial) -> list[str]:
    """The MLflow run ids of the trials of `trial`'s cell with lower numbers, the most recent first."""
    cell = trial_cell(trial)
    if cell is None:
        return []
    earlier = sorted(trial.study.get_trials(deepcopy=False), key=lambda t: -t.number)
    return [
        t.user_attrs[record.RUN_ID]
        for t in earlier
        if t.number < trial.number and record.RUN_ID in t.user_attrs and trial_cell(t) == cell
    ]


def take_over(trial: optuna.Trial, tracking_uri: str, checkpoint: Path) -> str | None:
    """Bring the furthest checkpoint that an earlier attempt of `trial`'s cell uploaded into
    `checkpoint`'s folder, when it is further than `checkpoint` (see the module docstring). Returns
    a line saying what was taken over or why not, or None when there was nothing to take."""
    client = MlflowClient(tracking_uri)
    best: tuple[int, str, dict] | None = None
    for run_id in _earlier_runs(trial):
        try:
            handover = _handover(client, run_id)
        except MlflowException:
            continue
        if handover is not None and (best is None or handover["step"] > best[0]):
            best = (handover["step"], run_id, handover)
    if best is None or best[0] <= _local_step(checkpoint):
        return None
    step, run_id, handover = best
    what = f"the checkpoint of step {step} from run {run_id}"
    folder = checkpoint.parent
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{PARTIAL}*"):  # a download killed before its clean-up
        shutil.rmtree(stale, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=PARTIAL) as tmp:
            got = Path(client.download_artifacts(run_id, handover["slot"], tmp))
            for name, digest in handover["sha256"].items():
                if _sha256(got / name) != digest:
                    return f"{what} does not match its digest; not taken"
            for name in handover["sha256"]:
                os.replace(got / name, folder / name)
    except (MlflowException, OSError) as e:
        return f"{what} could not be downloaded ({first_line(e)})"
    return f"took over {what}"
