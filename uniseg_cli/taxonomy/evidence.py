"""Appearance evidence: which labels of two datasets the *images* say can be the same thing.

The held-out confusion of the stage-1 heads cannot see a domain boundary. No dataset labels a car
and a bed in one image, so no loss ever separates them. A driving head calls a bed "car" and an
indoor head calls a car "bed", and the rates read that analogy as an equivalence (docs/quality.md,
``bench/cross_domain.py``). The label losses shaped the stage-1 embedding, so it inherits the
same blind spot. This module adds the missing evidence from the images alone:

1. **A generic pixel encoder** (:func:`train_generic_encoder`): the segmenter's architecture
   trained on the training images without labels. The objective is a dense contrastive loss:
   the same pixel seen in two views (shifted crops, different colour gain and offset, noise)
   must embed closer than any other sampled pixel of the batch (InfoNCE). It learns what things
   look like, whatever the label spaces say. The colour jitter also teaches it to ignore a
   dataset's colour shift. A pretrained backbone plays this role in the paper; this works with
   a backbone trained from scratch and needs no download.
2. **Label transfer with an out-of-distribution test** (:func:`transfer_shares`): for every held-out
   pixel x of label a in dataset A and every other dataset B, take the k nearest pixels of B in
   the generic space. The pixel counts for B's label b when most of them carry b *and* they lie
   closer than x's own nearest pixels of another label of A, and within 1.5 times the spread of
   x's own label. Otherwise B has nothing like x, and x counts for no label of B. ``share[A, B][a, b]`` is the fraction of a's pixels that count
   for b.
3. **Its uses** (:mod:`.clustering`): a pair of labels may merge only if
   ``max(share[a→b], share[b→a]) ≥ min_generic_share`` (one direction suffices: a coarse label's
   pixels spread over several fine labels, while each fine label's pixels land in the coarse one);
   and :func:`add_unions` links a coarse label to the nodes of the finer labels it is the union
   of, which Appendix B by design never does.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class GenericParams:
    iters: int = 3000  # dense contrastive iterations (0: no generic encoder, no appearance evidence)
    batch: int = 8  # image windows per iteration (two views each)
    crop: int = 64  # view size in pixels (a multiple of 4); the window is crop + 16
    lr: float = 2e-3  # AdamW learning rate
    temperature: float = 0.2  # InfoNCE temperature
    points: int = 48  # corresponding pixels sampled per window
    gain: float = 0.1  # colour jitter per view and channel: gain in 1 ± gain ...
    offset: float = 12.0  # ... and offset in ± offset (uint8 levels): about a dataset's colour shift, no more
    seed: int = 0


def _view(window: np.ndarray, y: int, x: int, size: int, rng: np.random.Generator, mean, std,
          gain: float, offset: float) -> torch.Tensor:
    v = window[y:y + size, x:x + size].astype(np.float32)
    v = v * rng.uniform(1 - gain, 1 + gain, 3) + rng.uniform(-offset, offset, 3) + rng.normal(0, 4, v.shape)
    t = torch.from_numpy(np.clip(v, 0, 255).astype(np.float32)).permute(2, 0, 1)
    return (t - mean) / std


def train_generic_encoder(segmenter: nn.Module, load_image: Callable[[int], np.ndarray], num_images: int,
                          p: GenericParams, device: torch.device | str = "cpu",
                          on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train ``segmenter`` (images → L2-normalised (B, D, H/4, W/4)) in place with the dense contrastive loss.

    Args:
        load_image: index → uint8 (H, W, 3); images smaller than a window are scaled up.
        num_images: how many indices ``load_image`` accepts.
        on_step: called with (iteration, loss) after every step (progress).
    Returns:
        {"iterations", "seconds", "last_loss"}.
    """
    from uniseg_cli.data.transforms import MEAN, STD, resize

    if p.crop % 4 or p.crop < 16:
        raise ValueError(f"generic crop must be a multiple of 4 and >= 16, got {p.crop}")
    rng = np.random.default_rng(p.seed)
    torch.manual_seed(p.seed)
    mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
    segmenter.to(device).train()
    opt = torch.optim.AdamW(segmenter.parameters(), lr=p.lr, weight_decay=0.05)
    win = p.crop + 16
    t0, loss_v = time.perf_counter(), float("nan")
    for it in range(p.iters):
        v1, v2, shifts = [], [], []
        for _ in range(p.batch):
            img = load_image(int(rng.integers(num_images)))
            h, w = img.shape[:2]
            if h < win or w < win:
                s = win / min(h, w)
                img, _ = resize(img, None, (max(win, round(h * s)), max(win, round(w * s))))
                h, w = img.shape[:2]
            y, x = int(rng.integers(0, h - win + 1)), int(rng.integers(0, w - win + 1))
            window = img[y:y + win, x:x + win]
            if rng.random() < 0.5:
                window = window[:, ::-1]
            a1, b1, a2, b2 = (int(rng.integers(0, 5)) * 4 for _ in range(4))
            v1.append(_view(window, a1, b1, p.crop, rng, mean, std, p.gain, p.offset))
            v2.append(_view(window, a2, b2, p.crop, rng, mean, std, p.gain, p.offset))
            shifts.append(((a1 - a2) // 4, (b1 - b2) // 4))
        e1 = segmenter(torch.stack(v1).to(device))
        e2 = segmenter(torch.stack(v2).to(device))
        n = e1.shape[-1]
        q, k = [], []
        for i, (dy, dx) in enumerate(shifts):  # view-1 cell (y, x) shows what view-2 cell (y + dy, x + dx) shows
            ys = torch.arange(max(0, -dy), min(n, n - dy))
            xs = torch.arange(max(0, -dx), min(n, n - dx))
            yy, xx = (t.flatten() for t in torch.meshgrid(ys, xs, indexing="ij"))
            pick = torch.from_numpy(rng.choice(len(yy), size=min(p.points, len(yy)), replace=False))
            yy, xx = yy[pick], xx[pick]
            q.append(e1[i][:, yy, xx].T)
            k.append(e2[i][:, yy + dy, xx + dx].T)
        q, k = torch.cat(q), torch.cat(k)
        logits = q @ k.T / p.temperature
        target = torch.arange(len(q), device=logits.device)
        loss = 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        if on_step is not None:
            on_step(it, loss_v)
    segmenter.eval()
    return {"iterations": p.iters, "seconds": round(time.perf_counter() - t0, 3), "last_loss": round(loss_v, 4)}


# --------------------------------------------------------------------------------------------- transfer


def sample_pixels(feat: torch.Tensor, label: torch.Tensor, num_classes: int, cap: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labelled cells of one image: features (P, D) float32 and labels (P,), at most ``cap`` per class.

    ``feat`` (D, h, w); ``label`` (H, W) with negatives/out-of-range as ignore, resized (nearest) to (h, w).
    """
    h, w = feat.shape[-2:]
    lab = nn.functional.interpolate(label.reshape(1, 1, *label.shape[-2:]).float(), size=(h, w), mode="nearest")
    lab = lab.reshape(h, w).long().cpu().numpy()
    f = feat.detach().float().permute(1, 2, 0).cpu().numpy()
    keep = []
    for c in np.unique(lab):
        if c < 0 or c >= num_classes:
            continue
        idx = np.flatnonzero(lab.ravel() == c)
        if len(idx) > cap:
            idx = rng.choice(idx, size=cap, replace=False)
        keep.append(idx)
    if not keep:
        return np.zeros((0, f.shape[-1]), np.float32), np.zeros(0, np.int64)
    idx = np.sort(np.concatenate(keep))
    return f.reshape(-1, f.shape[-1])[idx], lab.ravel()[idx]


def limit_per_class(feats: np.ndarray, labels: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """At most ``cap`` pixels of every label (a random subset), order kept."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(idx if len(idx) <= cap else rng.choice(idx, size=cap, replace=False))
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return feats[idx], labels[idx]


def _sqdist(q: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((q * q).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * q @ b.T, 0.0)


def _knn_mean(d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(1, min(k, d2.shape[1]))
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(d2, idx, 1)).mean(1), idx


def transfer_shares(feats: Sequence[np.ndarray], labels: Sequence[np.ndarray], sizes: Sequence[int],
                    k: int = 5, spread: float = 1.5, chunk: int = 2048) -> list[list[np.ndarray]]:
    """share[a][b] (n_a, n_b): the fraction of label x's pixels of dataset a that dataset b's pixels call y.

    A pixel of a counts for y when most of its k nearest pixels of b carry y and their mean distance
    d_b is within what its own dataset would allow a match: below the mean distance to its k nearest
    pixels of *another* label of a (the class margin; otherwise it would sooner be another class of
    its own) and below ``spread`` times the mean distance to its k nearest pixels of its *own* label
    (the class spread; otherwise b's pixels merely resemble it more than anything else of b).
    Otherwise b has nothing like it and it counts for no label. ``share[a][a]`` is 0.
    """
    m = len(feats)
    limit = []
    for a in range(m):
        f, y = np.asarray(feats[a], np.float32), np.asarray(labels[a])
        out = np.full(len(y), np.inf)
        for s in range(0, len(y), chunk):
            d2 = _sqdist(f[s:s + chunk], f)
            same = y[s:s + chunk, None] == y[None, :]
            rows = np.arange(len(d2))
            d2_other = np.where(same, 1e30, d2)
            d2_same = np.where(same, d2, 1e30)
            d2_same[rows, s + rows] = 1e30  # not itself
            other, _ = _knn_mean(d2_other, k)
            own, _ = _knn_mean(d2_same, k)
            out[s:s + chunk] = np.minimum(np.where(other < 1e14, other, np.inf), np.where(own < 1e14, spread * own, np.inf))
        limit.append(out)
    shares = [[np.zeros((sizes[a], sizes[b])) for b in range(m)] for a in range(m)]
    for a in range(m):
        fa, ya = np.asarray(feats[a], np.float32), np.asarray(labels[a])
        if len(ya) == 0:
            continue
        counts = np.bincount(ya, minlength=sizes[a]).astype(np.float64)
        for b in range(m):
            fb, yb = np.asarray(feats[b], np.float32), np.asarray(labels[b])
            if a == b or len(yb) == 0:
                continue
            hist = np.zeros((sizes[a], sizes[b]))
            for s in range(0, len(ya), chunk):
                dist, idx = _knn_mean(_sqdist(fa[s:s + chunk], fb), k)
                votes = yb[idx]  # (c, k)
                onehot = np.zeros((len(votes), sizes[b]))
                np.add.at(onehot, (np.repeat(np.arange(len(votes)), votes.shape[1]), votes.ravel()), 1)
                major = onehot.argmax(axis=1)
                inside = dist < limit[a][s:s + chunk]
                np.add.at(hist, (ya[s:s + chunk][inside], major[inside]), 1)
            shares[a][b] = np.divide(hist, counts[:, None], out=np.zeros_like(hist), where=counts[:, None] > 0)
    return shares


def pair_support(shares: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """(L, L) symmetric, labels in dataset order: max(share[a→b][x, y], share[b→a][y, x]); 0 within a dataset."""
    m = len(shares)
    sizes = [shares[a][a].shape[0] for a in range(m)]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    out = np.zeros((off[-1], off[-1]))
    for a in range(m):
        for b in range(m):
            if a != b:
                out[off[a]:off[a + 1], off[b]:off[b + 1]] = np.maximum(shares[a][b], np.asarray(shares[b][a]).T)
    return out
