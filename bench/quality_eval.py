"""Evaluation helpers of bench/quality.py: label spaces of a model, histograms, the language-only merge.

A *model* here is a :class:`SpaceModel`: one embedding and a head per label space (each Multi-SegHead
head, the unified nodes, each dataset through the mapping), so every label space of a model is scored
from the same forward pass, through the library's evaluation path (``full_res_logits``). Scores use the library's own metric code (:mod:`uniseg_cli.taxonomy.unseen`):

- own-space mIoU: ``hist[c, c']`` of a dataset's ground truth against the argmax of its own space;
- the unseen protocol: ``hist[c, u]`` on the target's fitting split, the min-cost many-to-one
  assignment, mIoU on the scoring split.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from uniseg_cli.data.base import DatasetAdapter
from uniseg_cli.data.loader import iter_eval
from uniseg_cli.taxonomy.unseen import evaluate_unseen, miou_from_confusion, unseen_hist
from uniseg_cli.training.unify import full_res_logits


class SpaceModel:
    """A segmenter whose embedding feeds several label spaces.

    Args:
        embed: normalised images (B, 3, H, W) -> pixel embedding (B, D, h, w).
        heads: space name -> (number of outputs, embedding -> logits (B, n, h, w)).
    """

    def __init__(self, embed: Callable, heads: dict[str, tuple[int, Callable]], device: str = "cpu"):
        self.embed, self.heads, self.device = embed, heads, device

    @property
    def spaces(self) -> dict[str, int]:
        return {k: n for k, (n, _) in self.heads.items()}


@torch.no_grad()
def space_hists(model: SpaceModel, adapter: DatasetAdapter, split: str, spaces: Sequence[str] | None = None,
                limit: int | None = None) -> dict[str, np.ndarray]:
    """``{space: hist (T, n_space)}``: the dataset's ground truth against each space's argmax, full images."""
    spaces = list(spaces or model.spaces)
    n_t = adapter.label_space.num_classes
    hists = {s: np.zeros((n_t, model.spaces[s]), dtype=np.int64) for s in spaces}
    sizes = [model.spaces[s] for s in spaces]
    fns = [model.heads[s][1] for s in spaces]
    for batch in iter_eval(adapter, split, limit=limit):
        img, lab = batch["image"].to(model.device), batch["label"][0]
        # the library's own evaluation path (pad to 32, embed once, upsample as in training, crop back), so
        # the bench scores every method exactly as `uniseg evaluate` does
        logits = full_res_logits(model.embed, lambda e: torch.cat([f(e) for f in fns], 1), img)
        for s, lg in zip(spaces, torch.split(logits, sizes, dim=1)):
            pred = lg[0].argmax(dim=0).cpu().numpy()
            unseen_hist(lab.numpy(), pred, n_t, model.spaces[s], ignore_index=-1, out=hists[s])
    return hists


def own_miou(hist: np.ndarray) -> float:
    """mIoU (%) of a square hist (the dataset scored in its own label space)."""
    return 100.0 * miou_from_confusion(hist)[0]


def unseen_miou_pct(fit_hist: np.ndarray, score_hist: np.ndarray) -> float:
    """mIoU (%) of the unseen protocol: fitted on one split, scored on another."""
    return 100.0 * evaluate_unseen(fit_hist, score_hist).miou


# --------------------------------------------------------------------------------------------- language-only


def language_merge(features: np.ndarray, groups: Sequence[int], threshold: float) -> np.ndarray:
    """Cluster labels by their text features alone: average-linkage agglomerative clustering on cosine
    similarity, never putting two labels of one dataset in a cluster, stopping below ``threshold``.

    This is the language-only baseline: it can only merge whole labels one-to-one, so it cannot express
    a coarse label that covers several finer ones (a split), and it trusts names, which mislead.

    Args:
        features: (n, D) text features of every label.
        groups: (n,) dataset index of each label.
        threshold: the lowest average cosine similarity at which two clusters merge.

    Returns:
        int (n,): the cluster (unified node) of each label, numbered 0..K-1.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    groups = np.asarray(groups, dtype=np.int64)
    n = len(x)
    sim = x @ x.T  # sums of pairwise similarities between clusters
    size = np.ones(n)
    members = np.zeros((n, int(groups.max()) + 1), dtype=np.int64)
    members[np.arange(n), groups] = 1
    alive = np.ones(n, dtype=bool)
    label = np.arange(n)
    while True:
        avg = sim / np.outer(size, size)
        bad = ((members @ members.T) > 0) | ~alive[:, None] | ~alive[None, :]
        avg[bad] = -np.inf
        i, j = np.unravel_index(int(np.argmax(avg)), avg.shape)
        if not np.isfinite(avg[i, j]) or avg[i, j] < threshold:
            break
        sim[i, :] += sim[j, :]
        sim[:, i] += sim[:, j]
        size[i] += size[j]
        members[i] += members[j]
        alive[j] = False
        label[label == j] = i
    return np.unique(label, return_inverse=True)[1]


def merge_mappings(clusters: np.ndarray, groups: Sequence[int], names: Sequence[str],
                   sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Bool mappings ``{dataset: (n_d, K)}`` from a cluster id per label (labels in dataset order)."""
    k = int(clusters.max()) + 1
    out, pos = {}, 0
    for d, (name, n) in enumerate(zip(names, sizes)):
        m = np.zeros((n, k), dtype=bool)
        m[np.arange(n), clusters[pos:pos + n]] = True
        out[name] = m
        pos += n
    if pos != len(groups):
        raise ValueError(f"{len(groups)} labels, but the dataset sizes add up to {pos}")
    return out
