"""Appearance evidence: the label transfer with its out-of-distribution test, and the generic encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from uniseg_cli.taxonomy import evidence as E


def _blob(rng, centre, n):
    return np.asarray(centre, np.float32)[None] + 0.05 * rng.standard_normal((n, len(centre))).astype(np.float32)


def test_transfer_names_the_same_concept_and_leaves_what_the_other_dataset_lacks_unlabelled():
    rng = np.random.default_rng(0)
    # A: x0 at (0,0), x1 at (1,0), x2 at (1,0.4); B: y0 at (0,0) (= x0), y1 at (0,1). B has nothing like x1, x2.
    fa = np.concatenate([_blob(rng, (0, 0), 60), _blob(rng, (1, 0), 60), _blob(rng, (1, 0.4), 60)])
    ya = np.repeat([0, 1, 2], 60)
    fb = np.concatenate([_blob(rng, (0, 0), 50), _blob(rng, (0, 1), 50)])
    yb = np.repeat([0, 1], 50)
    sh = E.transfer_shares([fa, fb], [ya, yb], [3, 2], k=5, chunk=37)  # chunking must not change anything
    assert sh[0][1].shape == (3, 2) and sh[1][0].shape == (2, 3)
    assert sh[0][1][0, 0] > 0.85 and sh[0][1][1:].sum() < 0.05
    assert sh[1][0][0, 0] > 0.85
    assert not sh[0][0].any() and not sh[1][1].any()
    sup = E.pair_support(sh)
    assert sup.shape == (5, 5) and np.allclose(sup, sup.T)
    assert sup[0, 3] == max(sh[0][1][0, 0], sh[1][0][0, 0]) and sup[0, 1] == 0  # within a dataset: 0


def test_sample_pixels_caps_every_class_and_skips_ignore():
    rng = np.random.default_rng(0)
    feat = torch.randn(4, 8, 8)
    lab = torch.full((32, 32), -1, dtype=torch.long)
    lab[:16] = 0
    lab[16:, :4] = 1
    f, y = E.sample_pixels(feat, lab, 2, cap=10, rng=rng)
    assert f.shape == (len(y), 4) and set(np.unique(y)) == {0, 1}
    assert (y == 0).sum() == 10 and (y == 1).sum() == 4  # 32 cells of class 0 capped; class 1 has 4 cells
    f2, y2 = E.limit_per_class(f, y, 3, rng)
    assert np.bincount(y2).tolist() == [3, 3]


def _stripes(i: int) -> np.ndarray:
    """Two kinds of texture: red vertical stripes or blue checks, 40 x 48."""
    yy, xx = np.mgrid[:40, :48]
    img = np.zeros((40, 48, 3), np.uint8)
    if i % 2:
        img[..., 0] = np.where((xx // 3) % 2, 220, 60)
    else:
        img[..., 2] = np.where(((xx // 4) + (yy // 4)) % 2, 200, 40)
    return img


def test_generic_encoder_learns_and_is_deterministic():
    from uniseg_cli.models import SegmenterConfig, build_segmenter

    def run(iters):
        torch.manual_seed(0)
        seg = build_segmenter(SegmenterConfig(backbone="tiny", embed_dim=16))
        losses = []
        info = E.train_generic_encoder(seg, _stripes, 4, E.GenericParams(iters=iters, batch=4, crop=16, points=16),
                                       on_step=lambda it, loss: losses.append(loss))
        return seg, losses, info

    seg, losses, info = run(40)
    assert info["iterations"] == 40 and len(losses) == 40 and not seg.training
    assert np.mean(losses[-10:]) < np.mean(losses[:5])  # the contrastive loss goes down
    seg2, _, _ = run(40)
    for (k, a), (_, b) in zip(seg.state_dict().items(), seg2.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="multiple of 4"):
        E.train_generic_encoder(seg, _stripes, 4, E.GenericParams(iters=1, crop=18))


def test_a_lookalike_that_is_farther_than_the_class_spread_counts_for_nothing():
    rng = np.random.default_rng(1)
    # A: x0 tight at (0,0), x1 far away; B's only class sits at (0.5, 0): nearer x0 than x1 is, but far
    # outside x0's own spread (a sky next to a ceiling: alike, yet never the same pixels)
    fa = np.concatenate([_blob(rng, (0, 0), 60), _blob(rng, (5, 0), 60)])
    fb = _blob(rng, (0.5, 0), 60)
    ya, yb = np.repeat([0, 1], 60), np.zeros(60, int)
    loose = E.transfer_shares([fa, fb], [ya, yb], [2, 1], k=5, spread=100.0)
    strict = E.transfer_shares([fa, fb], [ya, yb], [2, 1], k=5, spread=1.5)
    assert loose[0][1][0, 0] > 0.95  # the class margin alone lets it through
    assert strict[0][1][0, 0] < 0.05
