"""Evaluating a model on a dataset it never saw: a many-to-one mapping of its outputs to the target's classes.

The protocol (METHOD.md §8 "Unseen datasets", DESIGN §5):

1. Run the model on the target dataset and count ``hist[c, u]``: pixels of target class ``c`` that the
   model labels with output class ``u`` (argmax over its output space: the unified nodes, or a
   single-dataset model's classes, or one Multi-SegHead head).
2. Cost ``C[u, c] = 1 - IoU(u, c)`` with ``IoU = hist[c,u] / (sum_c' hist[c',u] + sum_u' hist[c,u'] - hist[c,u])``.
3. A min-cost, many-to-one, complete assignment: every output class goes to exactly one target class and
   every target class receives at least one output class (the reference solves this as a min-cost flow).
4. Score on another split: predictions are mapped through the assignment and scored by mIoU.

The assignment is solved exactly, without a flow solver. Write ``m(u) = min_c C[u, c]``. Any feasible
assignment contains a matching that covers every target (pick one of its outputs per target); the other
outputs cost at least ``m(u)`` each. So the optimum equals ``sum_u m(u) + min over target-covering matchings
of sum (C[u, c] - m(u))``, a rectangular linear assignment problem (Hungarian, ``scipy.optimize.
linear_sum_assignment``), after which every unmatched output takes its cheapest target. When the model has
fewer outputs than the target has classes (U < T), not every target can be covered: each output then gets a
distinct target by a min-cost matching and the uncovered targets are reported (they score IoU 0).

Unlike the reference's integer costs ``int(100 * C)``, costs are kept as floats: no ties are created by
rounding.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from uniseg_cli.errors import UsageError


def unseen_hist(
    gt: np.ndarray,
    pred: np.ndarray,
    num_targets: int,
    num_outputs: int,
    *,
    ignore_index: int = -1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Count target class × model output class pixels.

    Args:
        gt: target-dataset labels, any shape; ``ignore_index`` (and anything outside ``[0, num_targets)``)
            is left out.
        pred: the model's argmax output class per pixel, same shape as ``gt``.
        num_targets: T, the target dataset's number of classes.
        num_outputs: U, the model's number of output classes.
        ignore_index: the unlabeled value in ``gt``.
        out: a running ``(T, U)`` int64 histogram to add to in place (for accumulating over images).

    Returns:
        ``hist`` int64 ``(T, U)``; ``hist[c, u]`` = pixels with ground truth ``c`` predicted as ``u``.
    """
    gt = np.asarray(gt).reshape(-1).astype(np.int64, copy=False)
    pred = np.asarray(pred).reshape(-1).astype(np.int64, copy=False)
    if gt.shape != pred.shape:
        raise UsageError(
            f"unseen histogram: ground truth has {gt.size} pixels, the prediction {pred.size}",
            hint="upsample the model's prediction to the label map's size before counting.",
        )
    if pred.size and (pred.min() < 0 or pred.max() >= num_outputs):
        raise UsageError(
            f"unseen histogram: prediction holds output class {int(pred.max()) if pred.max() >= num_outputs else int(pred.min())} "
            f"outside [0, {num_outputs})",
            hint="pass the argmax over the model's output channels and its number of outputs.",
        )
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_targets)
    idx = gt[keep] * num_outputs + pred[keep]
    h = np.bincount(idx, minlength=num_targets * num_outputs).reshape(num_targets, num_outputs)
    if out is not None:
        if out.shape != (num_targets, num_outputs):
            raise UsageError(f"unseen histogram: running histogram has shape {out.shape}, expected {(num_targets, num_outputs)}")
        out += h
        return out
    return h.astype(np.int64)


def iou_matrix(hist: np.ndarray) -> np.ndarray:
    """IoU between every target class and output class. Returns float64 ``(T, U)``; 0 where the union is empty."""
    hist = np.asarray(hist, dtype=np.float64)
    union = hist.sum(axis=1, keepdims=True) + hist.sum(axis=0, keepdims=True) - hist
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hist / np.maximum(union, 1e-300), 0.0)
    return iou


def assignment_cost(hist: np.ndarray) -> np.ndarray:
    """``C[u, c] = 1 - IoU(u, c)``, float64 ``(U, T)``; 1 for target classes with no pixels."""
    return 1.0 - iou_matrix(hist).T


def fit_unseen_mapping(hist: np.ndarray) -> np.ndarray:
    """The min-cost many-to-one assignment of output classes to target classes.

    Args:
        hist: ``(T, U)`` pixel counts from :func:`unseen_hist` on the fitting split.

    Returns:
        int64 ``(U,)``: the target class of each output class. Every output gets exactly one target; when
        ``U >= T`` every target gets at least one output, and the total cost ``sum_u C[u, a(u)]`` is minimal
        among all such assignments. When ``U < T`` the outputs get distinct targets at minimal cost.
    """
    hist = np.asarray(hist)
    if hist.ndim != 2 or hist.shape[0] == 0 or hist.shape[1] == 0:
        raise UsageError(
            f"unseen mapping: histogram must be a non-empty (targets, outputs) matrix, got shape {hist.shape}",
            hint="count pixels with unseen_hist() over at least one labelled image.",
        )
    if (hist < 0).any():
        raise UsageError("unseen mapping: histogram has negative counts", hint="pass pixel counts from unseen_hist().")
    cost = assignment_cost(hist)  # (U, T)
    n_out, n_tgt = cost.shape
    if n_out < n_tgt:
        rows, cols = linear_sum_assignment(cost)  # every output matched to a distinct target
        mapping = np.empty(n_out, dtype=np.int64)
        mapping[rows] = cols
        return mapping
    best = cost.min(axis=1)  # m(u)
    reduced = cost - best[:, None]  # extra cost of giving u to c instead of its cheapest target
    # Targets are the rows so that each target is matched (T <= U: all rows get a column).
    tgt, out = linear_sum_assignment(reduced.T)
    mapping = cost.argmin(axis=1).astype(np.int64)
    mapping[out] = tgt
    return mapping


def mapping_cost(hist: np.ndarray, mapping: np.ndarray) -> float:
    """Total assignment cost ``sum_u C[u, mapping[u]]``."""
    cost = assignment_cost(hist)
    return float(cost[np.arange(cost.shape[0]), np.asarray(mapping)].sum())


def mapped_confusion(hist: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Collapse ``hist[c, u]`` through ``mapping`` into a target × target confusion ``conf[gt, pred]``."""
    hist = np.asarray(hist, dtype=np.int64)
    mapping = np.asarray(mapping, dtype=np.int64)
    n_tgt, n_out = hist.shape
    if mapping.shape != (n_out,):
        raise UsageError(f"unseen mapping has {mapping.shape[0]} entries, the histogram {n_out} output classes",
                         hint="fit the mapping on a histogram of the same model.")
    if n_out and (mapping.min() < 0 or mapping.max() >= n_tgt):
        raise UsageError(f"unseen mapping points outside the {n_tgt} target classes",
                         hint="fit the mapping for this target dataset.")
    onehot = np.zeros((n_out, n_tgt), dtype=np.int64)
    onehot[np.arange(n_out), mapping] = 1
    return hist @ onehot


def miou_from_confusion(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """mIoU of a ``conf[gt, pred]`` matrix, detectron2-style: classes without ground-truth pixels are left out.

    Returns:
        (mIoU in [0, 1] (nan if no class has pixels), per-class IoU float64 ``(T,)`` with nan for left-out classes)
    """
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    gt = conf.sum(axis=1)
    union = gt + conf.sum(axis=0) - tp
    valid = (gt > 0) & (union > 0)
    iou = np.full(conf.shape[0], np.nan)
    iou[valid] = tp[valid] / union[valid]
    return (float(np.nanmean(iou)) if valid.any() else float("nan")), iou


def unseen_miou(hist: np.ndarray, mapping: np.ndarray) -> tuple[float, np.ndarray]:
    """mIoU on a scoring split's ``hist[c, u]`` with the outputs mapped through ``mapping``.

    Returns:
        (mIoU in [0, 1], per-class IoU ``(T,)``, nan for classes without pixels in this split)
    """
    return miou_from_confusion(mapped_confusion(hist, mapping))


@dataclasses.dataclass(frozen=True)
class UnseenResult:
    """The outcome of the unseen protocol on one target dataset."""

    mapping: np.ndarray  # int64 (U,): target class per output class, fitted on the fit split
    miou: float  # on the scoring split, in [0, 1]
    per_class_iou: np.ndarray  # float64 (T,), nan where the scoring split has no pixels of the class
    uncovered: tuple[int, ...]  # target classes that received no output (only when U < T)
    fit_iou: np.ndarray  # float64 (T, U): IoU on the fitting split (the assignment's evidence)

    def to_json(self, classes: Sequence[str] | None = None) -> dict:
        names = list(classes) if classes is not None else [str(i) for i in range(len(self.per_class_iou))]
        return {
            "miou": round(self.miou * 100, 2) if np.isfinite(self.miou) else None,
            "per_class": {n: (round(float(v) * 100, 2) if np.isfinite(v) else None) for n, v in zip(names, self.per_class_iou)},
            "mapping": [int(c) for c in self.mapping],
            "uncovered": [names[c] for c in self.uncovered],
        }


def evaluate_unseen(fit_hist: np.ndarray, score_hist: np.ndarray) -> UnseenResult:
    """Fit the assignment on ``fit_hist`` and score it on ``score_hist`` (both ``(T, U)``).

    Pass the same histogram twice to fit on the scored split (the reference's KITTI setting); say so in
    the report, as it flatters the score.
    """
    fit_hist = np.asarray(fit_hist)
    score_hist = np.asarray(score_hist)
    if fit_hist.shape != score_hist.shape:
        raise UsageError(f"unseen evaluation: fitting histogram {fit_hist.shape} and scoring histogram "
                         f"{score_hist.shape} differ", hint="count both splits with the same model and target dataset.")
    mapping = fit_unseen_mapping(fit_hist)
    miou, per_class = unseen_miou(score_hist, mapping)
    uncovered = tuple(int(c) for c in sorted(set(range(fit_hist.shape[0])) - set(mapping.tolist())))
    return UnseenResult(mapping=mapping, miou=miou, per_class_iou=per_class, uncovered=uncovered,
                        fit_iou=iou_matrix(fit_hist))


def unseen_taxonomy(
    mapping: np.ndarray,
    fit_hist: np.ndarray,
    target: str,
    target_classes: Sequence[str],
    node_names: Mapping[int, str] | None = None,
    sources: Mapping[str, str] | None = None,
):
    """The fitted mapping as a taxonomy (``uniseg.taxonomy/1``) that a team can reuse.

    One row per output class ``u`` with its target class: ``unified_id`` = the output channel, ``weight`` =
    IoU(u, c) on the fitting split, ``pixel_share`` = the share of class c's fitting pixels predicted as u.

    Args:
        mapping: int64 ``(U,)`` from :func:`fit_unseen_mapping`.
        fit_hist: ``(T, U)`` histogram the mapping was fitted on.
        target: the target dataset's name.
        target_classes: its ordered class names (T).
        node_names: optional names of the output classes (e.g. the training taxonomy's unified names).
        sources: run ids the mapping came from (stored in the file's metadata).

    Returns:
        a :class:`uniseg_cli.taxonomy.schema.Taxonomy` with the single dataset ``target``.
    """
    from uniseg_cli.taxonomy.schema import Taxonomy

    fit_hist = np.asarray(fit_hist, dtype=np.float64)
    n_tgt, n_out = fit_hist.shape
    if len(target_classes) != n_tgt:
        raise UsageError(f"unseen taxonomy: {target} has {len(target_classes)} classes, the histogram {n_tgt} rows")
    m = np.zeros((n_tgt, n_out), dtype=bool)
    m[np.asarray(mapping), np.arange(n_out)] = True
    uncovered = [target_classes[c] for c in np.flatnonzero(~m.any(axis=1))]
    if uncovered:
        raise UsageError(
            f"unseen mapping for {target}: the model has {n_out} output classes for {n_tgt} target classes, so "
            f"{', '.join(map(repr, uncovered[:5]))} get no node and the mapping is not a valid taxonomy",
            hint="report the mIoU (uncovered classes score 0), or evaluate a model with at least as many outputs.",
        )
    iou = iou_matrix(fit_hist)
    rows = fit_hist.sum(axis=1, keepdims=True)
    share = np.where(rows > 0, fit_hist / np.maximum(rows, 1), 0.0)
    names = dict(node_names) if node_names else None
    return Taxonomy.from_mappings(
        {target: m},
        datasets={target: list(target_classes)},
        names=names,
        weights={target: np.where(m, iou, 0.0).astype(np.float32)},
        pixel_share={target: np.where(m, share, 0.0).astype(np.float32)},
        sources=dict(sources or {}),
    )
