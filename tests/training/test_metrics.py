"""Confusion-matrix mIoU against a computation by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from uniseg_cli.errors import DataError
from uniseg_cli.training.metrics import ConfusionMatrix, iou_from_confusion


def test_miou_by_hand():
    gt = torch.tensor([[0, 0, 1, 1],
                       [0, 2, 2, -1],
                       [-1, -1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 2, 0, 0],   # the -1 ground truth pixel is not counted, whatever its prediction
                         [3, 3, 2, 7]])  # 7 is outside the 4-class space (class 3 has no ground truth)
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    # class 0: gt {(0,0),(0,1),(1,0)}, pred {(0,0),(1,0),(1,2)} -> TP 2, union 4 -> 0.5
    # class 1: gt {(0,2),(0,3)}, pred {(0,1),(0,2),(0,3)}        -> TP 2, union 3 -> 2/3
    # class 2: gt {(1,1),(1,2),(2,2),(2,3)}, pred {(1,1),(2,2)}  -> TP 2, union 4 -> 0.5 ((2,3) -> outside: an error)
    # class 3: no ground truth -> left out of the mean (its 2 predictions sit on ignore pixels)
    iou = cm.iou()
    assert iou[:3] == pytest.approx([0.5, 2 / 3, 0.5])
    assert np.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(6 / 9)
    s = cm.summary(["a", "b", "c", "d"])
    assert s["pixels"] == 9 and s["outside_pixels"] == 1 and s["classes_evaluated"] == 3
    assert s["per_class"]["d"] is None


def test_accumulates_over_batches_and_numpy_inputs():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    rng = np.random.default_rng(0)
    gts = [rng.integers(-1, 3, (2, 5, 5)) for _ in range(3)]
    preds = [rng.integers(0, 3, (2, 5, 5)) for _ in range(3)]
    for g, p in zip(gts, preds):
        a.update(p, g)
    b.update(np.concatenate(preds), np.concatenate(gts))
    assert np.array_equal(a.matrix, b.matrix)
    m = a.matrix[:, :3].astype(float)
    expect = np.diag(m) / (m.sum(1) + m.sum(0) - np.diag(m))
    assert np.allclose(iou_from_confusion(a.matrix), expect)


def test_label_outside_space_is_a_data_error():
    with pytest.raises(DataError, match="label value 5"):
        ConfusionMatrix(3).update(torch.zeros(2, 2), torch.tensor([[0, 5], [1, 1]]), where="ds/img0")
