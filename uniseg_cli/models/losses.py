"""Losses of METHOD §4 and §6: OHEM cross-entropy, orthogonality of prototypes, soft→hard blend.

Targets use ``ignore_index = -1`` (the multi-dataset loader's ``IGNORE_INDEX``). Logits may be at
the embedding's resolution: they are upsampled bilinearly (align_corners=True) to the target size
before the loss, as the reference does. Cross-entropies are computed in float32 under autocast.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from uniseg_cli.models.heads import DatasetLogits, label_logits, upsample_logits

IGNORE_INDEX = -1
OHEM_THRESH = 0.7


def ohem_ce(logits: torch.Tensor, target: torch.Tensor, thresh: float = OHEM_THRESH,
            min_kept_ratio: float = 1.0 / 16, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Online hard-example-mined cross-entropy (the reference's ``OhemCELoss``).

    Keeps the pixels whose CE exceeds −log(thresh) (0.357 for 0.7); if fewer than
    ``n_min = ⌊valid · min_kept_ratio⌋`` (at least 1) pass, keeps the n_min largest instead; averages.

    Args:
        logits: (B, C, h, w), upsampled to the target size if smaller.
        target: (B, H, W) int class ids, ``ignore_index`` for unlabelled pixels.

    Returns:
        scalar loss; 0 (still attached to the graph) when no pixel is labelled.
    """
    logits = upsample_logits(logits, target.shape[-2:]).float()
    loss = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="none").flatten()
    valid = target.flatten() != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0
    loss = loss[valid]
    n_min = max(1, int(n_valid * min_kept_ratio))
    hard = loss[loss > -math.log(thresh)]
    if hard.numel() >= n_min:
        return hard.mean()
    return torch.topk(loss, n_min, sorted=False).values.mean()


def multi_dataset_ce(outputs: Sequence[DatasetLogits], target: torch.Tensor,
                     weights: Sequence[float] | Mapping[int, float] | None = None,
                     **ohem_kwargs) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Σ_d w_d · OHEM-CE of dataset d's images (METHOD §6's per-dataset weights).

    Args:
        outputs: a head's per-dataset logits for a mixed batch.
        target: (B, H, W) labels of the whole batch.
        weights: w_d per dataset index (default 1).

    Returns:
        (total loss, {d: unweighted loss_d}).
    """
    per: dict[int, torch.Tensor] = {}
    total = None
    for out in outputs:
        loss = ohem_ce(out.logits, target[out.index], **ohem_kwargs)
        per[out.dataset] = loss.detach()
        w = 1.0 if weights is None else float(weights[out.dataset])
        total = loss * w if total is None else total + loss * w
    if total is None:
        raise ValueError("multi_dataset_ce: no dataset in the batch")
    return total, per


def orthogonality_loss(prototypes: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """L = −mean_ij[softmax(Z)_ij · log_softmax(Z)_ij] with Z = P Pᵀ / T (METHOD §6).

    The mean row entropy of the prototype similarity divided by N; low when each prototype is most
    similar to itself only. P is not normalised (as in the reference), so growing norms lower it too.

    Shapes:
        prototypes: (N, D) → scalar.
    """
    z = prototypes.float() @ prototypes.float().t() / temperature
    return -(torch.softmax(z, dim=1) * torch.log_softmax(z, dim=1)).mean()


def blend_ratio(step: int, ramp_steps: int = 15000) -> float:
    """r = min(step / ramp_steps, 1): the weight of the hard mapping in :func:`blended_ce`."""
    return 1.0 if ramp_steps <= 0 else min(max(step, 0) / ramp_steps, 1.0)


def blended_ce(z: torch.Tensor, soft: torch.Tensor, hard: torch.Tensor, r: float, target: torch.Tensor,
               **ohem_kwargs) -> torch.Tensor:
    """r·CE(M_d·z) + (1 − r)·CE(S_d·z): GNN sub-stage 1 moves from the soft to the hard mapping (§4).

    Args:
        z: unified logits of dataset d's images (b, N, h, w).
        soft: S_d (n_d, N), differentiable (gradients reach the adjacency).
        hard: boolean M_d (n_d, N) from the mapping solver.
        r: blend ratio in [0, 1] (:func:`blend_ratio`).
        target: (b, H, W) labels.

    Returns:
        scalar loss (terms with weight 0 are skipped).
    """
    loss = None
    if r > 0:
        loss = r * ohem_ce(label_logits(z, hard), target, **ohem_kwargs)
    if r < 1:
        soft_loss = (1.0 - r) * ohem_ce(label_logits(z, soft), target, **ohem_kwargs)
        loss = soft_loss if loss is None else loss + soft_loss
    return loss
