"""Copy detection: are the fakes closer to the training images than unseen real images are?

Distances are Euclidean, in a feature space (an extractor's features) or in pixel space (the uint8
images flattened, scaled to [0, 1]); "train" is what the generator was trained on, "held-out" real
images it never saw. Pixel space is mirror-aware: each fake and each held-out image is taken in
whichever orientation (as is, or flipped left-right) lies nearer the training set, so a mirrored
copy counts as a copy (`orient`). The feature space relies on the extractor for that (the domain
encoder is trained with flips).

- Data-copying statistic C_T (Meehan, Chaudhuri & Dasgupta, AISTATS 2020): the training set is
  partitioned into k cells by k-means; in each cell, the distances of fakes and of held-out images
  to their nearest training image of that cell are compared by the Mann-Whitney U statistic
  (U counts pairs where the fake is farther than the held-out image), z-scored under the null:
  Z = (U - mn/2) / sqrt(mn(m + n + 1)/12). C_T is the average of the cells' Z weighted by their
  share of held-out images, over the cells holding at least `CT_MIN_FAKES` fakes and one held-out
  image. C_T << 0: fakes sit closer to the training images than fresh data do (copying); >> 0:
  underfitting; about 0: neither. (The paper keeps cells with at least 20/m of the fakes; a fixed
  minimum lets small test sets keep their cells.)
- Authenticity (Alaa et al., ICML 2022, as in synthcity): a fake is unauthentic when its distance
  to its nearest training image is below that training image's distance to its own nearest other
  training image; authenticity is the share of authentic fakes (1 = none copied). The same share
  for held-out images is the yardstick: what real unseen data scores.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

CT_MIN_FAKES = 5  # fakes a cell needs to count in C_T
CT_HELDOUT_PER_CELL = 15  # k = n_heldout // 15 cells, clamped to [1, CT_MAX_CELLS]
CT_MAX_CELLS = 10


def ct_cells(n_heldout: int) -> int:
    """The number of k-means cells for `n_heldout` held-out images."""
    return int(np.clip(n_heldout // CT_HELDOUT_PER_CELL, 1, CT_MAX_CELLS))


def _nearest(reference: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance and index of each query point's nearest reference point."""
    dist, idx = NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)
    return dist[:, 0], idx[:, 0]


def data_copying_ct(
    train: np.ndarray, heldout: np.ndarray, fake: np.ndarray, cells: int, seed: int = 0
) -> float:
    """Meehan et al.'s C_T of `fake` (N×D arrays, one space); NaN when no cell qualifies."""
    km = KMeans(n_clusters=cells, n_init=10, random_state=seed).fit(train)
    in_train, in_held, in_fake = km.labels_, km.predict(heldout), km.predict(fake)
    zs, weights = [], []
    for c in range(cells):
        t, p, q = train[in_train == c], heldout[in_held == c], fake[in_fake == c]
        if len(p) == 0 or len(q) < CT_MIN_FAKES:
            continue
        d_p, _ = _nearest(t, p)
        d_q, _ = _nearest(t, q)
        m, n = len(q), len(p)
        u = mannwhitneyu(d_q, d_p).statistic
        zs.append((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
        weights.append(n / len(heldout))
    if not zs:
        return float("nan")
    return float(np.dot(weights, zs) / np.sum(weights))


def authenticity(train: np.ndarray, query: np.ndarray) -> float:
    """Share of `query` points farther from their nearest training point than that point is from
    its nearest other training point (Alaa et al. 2022)."""
    dist, idx = NearestNeighbors(n_neighbors=2).fit(train).kneighbors(train)
    radius = dist[:, 1]
    d_query, nearest = _nearest(train, query)
    return float(np.mean(d_query > radius[nearest]))


def closest_to_train(train: np.ndarray, fake: np.ndarray, n: int) -> list[tuple[int, int, float]]:
    """The `n` fakes nearest to a training point: (fake index, train index, distance), nearest first."""
    dist, idx = _nearest(train, fake)
    order = np.argsort(dist, kind="stable")[:n]
    return [(int(i), int(idx[i]), float(dist[i])) for i in order]


def pixels(images: torch.Tensor) -> np.ndarray:
    """uint8 images N×C×R×R flattened to float64 N×(C·R·R) in [0, 1]: the pixel space."""
    return images.reshape(len(images), -1).double().numpy() / 255.0


def orient(train: np.ndarray, images: torch.Tensor) -> np.ndarray:
    """Pixel vectors of `images`, each as is or mirrored left-right, whichever is nearer `train`."""
    plain, mirrored = pixels(images), pixels(images.flip(-1))
    keep = _nearest(train, plain)[0] <= _nearest(train, mirrored)[0]
    return np.where(keep[:, None], plain, mirrored)


def closest_fakes_png(fakes: torch.Tensor, train: torch.Tensor, distances: list[float]) -> bytes:
    """The fakes nearest a training image (top row, uint8 N×1×R×R) above those training images
    (bottom row), each titled with its pixel-space distance (RMS-scaled L2 on [0, 1] values)."""
    import io

    from matplotlib.figure import Figure  # loaded only where a run draws its copies

    n = len(fakes)
    fig = Figure(figsize=(1.3 * n, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    side = fakes.shape[-1]
    for i in range(n):
        for row, images in enumerate((fakes, train)):
            ax = axes[row][i]
            ax.imshow(np.asarray(images[i][0]), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][i].set_title(f"d={distances[i] / side:.3f}", fontsize=8)
    axes[0][0].set_ylabel("fake")
    axes[1][0].set_ylabel("train")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()
