"""Losses: OHEM CE (threshold, n_min, ignore), orthogonality, soft→hard blend, per-dataset weights."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from uniseg_cli.models import DatasetLogits, blend_ratio, blended_ce, multi_dataset_ce, ohem_ce, orthogonality_loss
from uniseg_cli.models.heads import label_logits


def test_ohem_keeps_pixels_above_the_threshold():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8) * 3
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, :4] = -1
    per_pixel = F.cross_entropy(logits, target, ignore_index=-1, reduction="none")[target != -1]
    hard = per_pixel[per_pixel > -math.log(0.7)]
    assert hard.numel() >= per_pixel.numel() // 16
    torch.testing.assert_close(ohem_ce(logits, target), hard.mean())


def test_ohem_falls_back_to_the_n_min_hardest_pixels():
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 0] = 10.0  # every pixel confidently class 0
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 0, :3] = 1  # three wrong pixels: n_min = 64 // 16 = 4
    per_pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    expected = torch.topk(per_pixel, 4).values.mean()
    torch.testing.assert_close(ohem_ce(logits, target), expected)


def test_ohem_ignores_and_handles_empty_targets_and_upsamples():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 16, 16), -1)
    loss = ohem_ce(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    target[0, 5, 5] = 2
    assert ohem_ce(logits, target).item() > 0


def test_multi_dataset_ce_applies_weights():
    torch.manual_seed(0)
    y = torch.randint(0, 3, (3, 8, 8))
    outs = [DatasetLogits(0, torch.tensor([0, 2]), torch.randn(2, 3, 8, 8)),
            DatasetLogits(1, torch.tensor([1]), torch.randn(1, 3, 8, 8))]
    total, per = multi_dataset_ce(outs, y, weights=[1.0, 15.0])
    torch.testing.assert_close(per[0], ohem_ce(outs[0].logits, y[[0, 2]]))
    torch.testing.assert_close(total, per[0] + 15.0 * per[1])


def test_orthogonality_lower_for_orthogonal_than_collinear_prototypes():
    orthogonal = torch.eye(4, 8)
    collinear = torch.ones(4, 8) / math.sqrt(8)
    lo, hi = orthogonality_loss(orthogonal), orthogonality_loss(collinear)
    assert lo < hi
    torch.testing.assert_close(hi, torch.tensor(math.log(4) / 4))  # uniform rows: entropy log N, / N
    z = orthogonal @ orthogonal.t() / 0.07
    expected = -(torch.softmax(z, 1) * torch.log_softmax(z, 1)).mean()
    torch.testing.assert_close(lo, expected)


def test_blended_ce_interpolates_and_reaches_the_adjacency():
    torch.manual_seed(0)
    z = torch.randn(2, 5, 4, 4)
    adj = torch.randn(3, 5, requires_grad=True)
    soft = torch.softmax(adj / 0.07, dim=0)
    hard = torch.as_tensor(np.eye(3, 5, dtype=bool))
    y = torch.randint(0, 3, (2, 4, 4))
    ce_hard = ohem_ce(label_logits(z, hard), y)
    ce_soft = ohem_ce(label_logits(z, soft), y)
    torch.testing.assert_close(blended_ce(z, soft, hard, 1.0, y), ce_hard)
    torch.testing.assert_close(blended_ce(z, soft, hard, 0.0, y), ce_soft)
    mixed = blended_ce(z, soft, hard, 0.25, y)
    torch.testing.assert_close(mixed, 0.25 * ce_hard + 0.75 * ce_soft)
    mixed.backward()
    assert adj.grad is not None and adj.grad.abs().sum() > 0


def test_blend_ratio_ramp():
    assert blend_ratio(0) == 0.0 and blend_ratio(7500) == 0.5 and blend_ratio(30000) == 1.0
    assert blend_ratio(5, ramp_steps=0) == 1.0
