"""Confusion-matrix segmentation metrics (used by training's held-out checks and by ``uniseg evaluate``).

How pixels are counted (this is the definition the README quotes):

- A :class:`ConfusionMatrix` over ``n`` classes is an ``(n, n + 1)`` int64 matrix: rows are the
  ground-truth class, columns the predicted class, and the extra last column counts pixels whose
  prediction lies **outside** the label space (``pred < 0`` or ``pred >= n``, e.g. an unseen
  dataset's "unmapped" value).
- Ground-truth pixels equal to ``ignore_index`` (``-1``, the loader's ``IGNORE_INDEX``) are not
  counted at all. Any other ground-truth value outside ``[0, n)`` is an error.
- ``IoU_c = TP_c / (GT_c + P_c − TP_c)`` where ``GT_c`` is the row sum **including** the outside
  column and ``P_c`` the column sum. So a prediction outside the label space counts as an error
  (a false negative of its ground-truth class, a false positive of no class). detectron2's
  ``SemSegEvaluator`` instead drops such pixels from the denominators; we do not, so a model
  cannot gain by predicting "nothing".
- Classes with no ground-truth pixels are excluded from the mean (their IoU is reported as
  ``None``); ``mIoU`` is the mean over the remaining classes. Pixel accuracy is
  ``Σ TP / Σ GT`` over counted pixels.
- Under DDP every rank fills its own matrix on its shard; :meth:`ConfusionMatrix.all_reduce` sums
  them so every rank reports the same numbers.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uniseg_cli.errors import DataError

IGNORE_INDEX = -1


class ConfusionMatrix:
    """Accumulates (ground truth × prediction) pixel counts for one label space.

    Args:
        num_classes: ``n``, the size of the label space.
        ignore_index: ground-truth value that is not counted.
    Shapes:
        ``matrix``: (n, n + 1) int64; column n = predictions outside the label space.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.n = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.n, self.n + 1), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray, where: str = "ground truth") -> None:
        """Add a batch: ``pred`` and ``gt`` are integer arrays of the same shape (e.g. (B, H, W))."""
        pred = torch.as_tensor(pred)
        gt = torch.as_tensor(gt).to(pred.device)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(gt.shape)}")
        gt = gt.reshape(-1).long()
        pred = pred.reshape(-1).long()
        keep = gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        if gt.numel() == 0:
            return
        bad = (gt < 0) | (gt >= self.n)
        if bool(bad.any()):
            v = int(gt[bad][0])
            raise DataError(f"{where}: label value {v} is outside the label space of {self.n} classes",
                            hint="check the dataset's labels (`uniseg check-data`) and its ignore_index.")
        pred = torch.where((pred < 0) | (pred >= self.n), torch.full_like(pred, self.n), pred)
        idx = gt * (self.n + 1) + pred
        counts = torch.bincount(idx, minlength=self.n * (self.n + 1)).cpu().numpy()
        self.matrix += counts.reshape(self.n, self.n + 1)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrix over DDP ranks (no-op alone)."""
        from uniseg_cli.training.distributed import all_reduce_numpy

        self.matrix = all_reduce_numpy(self.matrix)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.matrix += other.matrix
        return self

    def iou(self) -> np.ndarray:
        """Per-class IoU, NaN for classes without ground-truth pixels. Shape (n,)."""
        return iou_from_confusion(self.matrix)

    def miou(self) -> float:
        v = self.iou()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, : self.n]) / total) if total else float("nan")

    def summary(self, class_names: Sequence[str] | None = None) -> dict:
        """``{"miou", "pixel_accuracy", "pixels", "classes_evaluated", "per_class": {name: IoU or None}}``."""
        ious = self.iou()
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.n)]
        return {
            "miou": _num(self.miou()),
            "pixel_accuracy": _num(self.pixel_accuracy()),
            "pixels": int(self.matrix.sum()),
            "outside_pixels": int(self.matrix[:, self.n].sum()),
            "classes_evaluated": int(np.isfinite(ious).sum()),
            "per_class": {names[i]: _num(ious[i]) for i in range(self.n)},
        }


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """IoU per row class of an (n, n) or (n, n + 1) ground-truth × prediction matrix (see module doc)."""
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0]
    tp = np.diag(m[:, :n])
    gt = m.sum(axis=1)
    pred = m[:, :n].sum(axis=0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(gt > 0, tp / np.where(union > 0, union, 1), np.nan)
    return iou


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)
