"""Classification heads on the pixel embedding: Multi-SegHead, UniSegHead, single-dataset head.

All heads take the L2-normalised embedding ``emb`` (B, D, h, w) of :class:`Segmenter` and give
logits at the same resolution; :func:`upsample_logits` brings them to the label size before the
loss (bilinear, align_corners=True as the reference).

A batch mixes datasets: ``dataset_idx`` (B,) says which dataset each image comes from, and the
multi-dataset heads return one :class:`DatasetLogits` per dataset present in the batch.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uniseg_cli.errors import UsageError


class DatasetLogits(NamedTuple):
    """Logits of the images of one dataset in a mixed batch.

    Attributes:
        dataset: dataset index d.
        index: positions (b_d,) of these images in the batch.
        logits: (b_d, n_d, h, w) in dataset d's label space.
    """

    dataset: int
    index: torch.Tensor
    logits: torch.Tensor


def split_by_dataset(dataset_idx: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``[(d, positions of d's images)]`` for every dataset present, in increasing d."""
    return [(int(d), torch.nonzero(dataset_idx == d).flatten()) for d in torch.unique(dataset_idx).tolist()]


def upsample_logits(logits: torch.Tensor, size: Sequence[int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear upsampling of (B, C, h, w) logits to ``size`` = (H, W)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


#: How a dataset label's logit is formed from the logits of the unified nodes mapped to it.
LABEL_LOGITS = ("sum", "logsumexp")


def _check_label_logits(mode: str) -> None:
    if mode not in LABEL_LOGITS:
        raise UsageError(f"label_logits {mode!r}: unknown (expected one of {', '.join(LABEL_LOGITS)})",
                         hint="use sum (the paper) or logsumexp (a label's probability is the sum of its nodes')")


def label_logits(z: torch.Tensor, mapping: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Dataset logits from unified logits through a mapping; the node axis is the third from the end.

    - ``sum`` (paper Eq. 4–5, the public code): ``s_c = Σ_u M[c, u]·z_u``. A coarse label mapped to
      several nodes asks *every* one of them to be high on its pixels.
    - ``logsumexp``: ``s_c = log Σ_u M[c, u]·exp(z_u)``, so ``softmax(s)_c`` is the summed probability of
      c's nodes: a coarse label's pixel is explained by *any* of its parts. With a 0/1 mapping and a
      label mapped to one node this equals ``sum``. Computed in float32 with one shift (the best mapped
      node), so a label whose nodes all lie more than ~69 below it is floored there (its probability is
      below 1e-30 either way; the ranking of labels is unchanged). A label with no node gets that floor.

    Args:
        z: (..., N, h, w) unified logits.
        mapping: (n_d, N) 0/1 (or soft, non-negative) weights.
        mode: one of :data:`LABEL_LOGITS`.

    Returns:
        (..., n_d, h, w); float32 for ``logsumexp``.
    """
    _check_label_logits(mode)
    if mode == "sum":
        return torch.einsum("...nhw,kn->...khw", z, mapping.to(device=z.device, dtype=z.dtype))
    with torch.autocast(device_type=z.device.type, enabled=False):
        m = mapping.to(device=z.device, dtype=torch.float32)
        zf = z.float()
        used = m.sum(dim=0) > 0  # shift by the largest *mapped* node, so no other node's scale can underflow them
        top = zf[..., used, :, :].amax(dim=-3, keepdim=True) if bool(used.any()) else zf.new_zeros(())
        e = torch.einsum("...nhw,kn->...khw", torch.exp((zf - top).clamp_max(80.0)), m)
        return torch.log(e.clamp_min(1e-30)) + top


def _project(emb: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) · (K, D)ᵀ → (B, K, h, w)."""
    return torch.einsum("bdhw,kd->bkhw", emb, weights.to(emb.dtype))


def _check_dataset(d: int, n: int) -> None:
    if not 0 <= d < n:
        raise UsageError(f"dataset index {d} is out of range: the head has {n} datasets",
                         hint="dataset_idx must hold positions in the pipeline's training datasets")


class MultiSegHead(nn.Module):
    """One prototype matrix per dataset: logits_d = emb · P_dᵀ (stage 1 and the baseline).

    Args:
        num_classes: n_d for each dataset.
        embed_dim: D.

    Shapes:
        - prototypes[d]: (n_d, D), trunc_normal(0.02), unnormalised.
        - forward(emb (B, D, h, w), dataset_idx (B,)) → list of DatasetLogits with (b_d, n_d, h, w).

    Under DDP, prototypes of datasets absent from a batch get no gradient: wrap with
    ``find_unused_parameters=True`` unless every batch holds every dataset.
    """

    def __init__(self, num_classes: Sequence[int], embed_dim: int):
        super().__init__()
        self.num_classes = [int(n) for n in num_classes]
        self.prototypes = nn.ParameterList(
            [nn.Parameter(nn.init.trunc_normal_(torch.empty(n, embed_dim), std=0.02)) for n in self.num_classes])

    def dataset_logits(self, emb: torch.Tensor, d: int) -> torch.Tensor:
        _check_dataset(d, len(self.num_classes))
        return _project(emb, self.prototypes[d])

    def forward(self, emb: torch.Tensor, dataset_idx: torch.Tensor) -> list[DatasetLogits]:
        return [DatasetLogits(d, idx, self.dataset_logits(emb[idx], d)) for d, idx in split_by_dataset(dataset_idx)]


def _as_mapping(m, n_nodes: int, where: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(m) if not torch.is_tensor(m) else m.detach()).float()
    if t.ndim != 2 or t.shape[1] != n_nodes:
        raise UsageError(f"{where}: expected a (labels, {n_nodes}) mapping, got shape {tuple(t.shape)}",
                         hint="mappings are (n_d, N) boolean matrices, one per dataset")
    return t


class UniSegHead(nn.Module):
    """Unified prototypes with fixed boolean label mappings (METHOD §6, paper Eq. 4–5).

    ``z = emb · Pᵀ`` are the unified logits (no temperature, no bias; P is unnormalised, its norm acts
    as the temperature). With ``label_logits="sum"`` (the paper) the logit of label c of dataset d is
    the sum of the unified logits of the nodes mapped to c: ``s_c = Σ_u M_d[c, u] · z_u``. By linearity
    ``M_d · (emb · Pᵀ) = emb · (M_d P)ᵀ``, so :meth:`forward` projects onto the n_d summed
    prototypes ``M_d P`` and costs the same as a Multi-SegHead (never materialising the N-channel z).
    With ``"logsumexp"`` a label's probability is the sum of its nodes' (:func:`label_logits`).

    Args:
        num_nodes: N.
        embed_dim: D.
        mappings: one (n_d, N) 0/1 matrix per dataset (bool arrays or tensors), or None with
            ``num_classes`` given (all-zero mappings, e.g. before ``load_state_dict``).
        num_classes: n_d per dataset when ``mappings`` is None.
        label_logits: ``sum`` or ``logsumexp`` (:func:`label_logits`).

    Shapes:
        - prototypes: (N, D) parameter, trunc_normal(0.02); replace with :meth:`set_prototypes`.
        - mapping_<d>: (n_d, N) float buffers (saved in the state dict).
        - forward(emb (B, D, h, w), dataset_idx (B,)) → list of DatasetLogits with (b_d, n_d, h, w).
        - unified_logits(emb) → (B, N, h, w).
    """

    def __init__(self, num_nodes: int, embed_dim: int, mappings: Sequence | None = None,
                 num_classes: Sequence[int] | None = None, label_logits: str = "sum"):
        super().__init__()
        _check_label_logits(label_logits)
        self.label_logits = label_logits
        if mappings is None and num_classes is None:
            raise UsageError("UniSegHead needs the mappings or the number of classes per dataset",
                             hint="pass mappings=[bool (n_d, N), ...] or num_classes=[n_1, ...]")
        self.num_nodes = int(num_nodes)
        self.prototypes = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_nodes, embed_dim), std=0.02))
        if mappings is not None:
            mats = [_as_mapping(m, num_nodes, f"mapping of dataset #{d}") for d, m in enumerate(mappings)]
        else:
            mats = [torch.zeros(int(n), num_nodes) for n in num_classes]
        self.num_classes = [m.shape[0] for m in mats]
        for d, m in enumerate(mats):
            self.register_buffer(f"mapping_{d}", m)

    def mapping(self, d: int) -> torch.Tensor:
        _check_dataset(d, len(self.num_classes))
        return getattr(self, f"mapping_{d}")

    @property
    def mappings(self) -> list[torch.Tensor]:
        return [self.mapping(d) for d in range(len(self.num_classes))]

    def set_mappings(self, mappings: Sequence) -> None:
        """Replace all boolean mappings (shapes must match the datasets' label counts)."""
        if len(mappings) != len(self.num_classes):
            raise UsageError(f"UniSegHead.set_mappings: got {len(mappings)} mappings for {len(self.num_classes)} "
                             "datasets", hint="pass one (n_d, N) mapping per training dataset, in order")
        for d, m in enumerate(mappings):
            t = _as_mapping(m, self.num_nodes, f"mapping of dataset #{d}")
            if t.shape[0] != self.num_classes[d]:
                raise UsageError(f"mapping of dataset #{d} has {t.shape[0]} rows, the dataset has "
                                 f"{self.num_classes[d]} labels", hint="pass mappings in the datasets' order")
            self.mapping(d).copy_(t)

    @torch.no_grad()
    def set_prototypes(self, prototypes: torch.Tensor, trainable: bool) -> None:
        """Copy unified prototypes (N, D) in (e.g. from the GNN) and set whether they train."""
        if tuple(prototypes.shape) != tuple(self.prototypes.shape):
            raise UsageError(f"UniSegHead.set_prototypes: expected shape {tuple(self.prototypes.shape)}, "
                             f"got {tuple(prototypes.shape)}", hint="the GNN's out_dim must equal embed_dim")
        self.prototypes.copy_(prototypes.detach().to(self.prototypes))
        self.prototypes.requires_grad_(trainable)

    def unified_logits(self, emb: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """z = emb · Pᵀ, (B, N, h, w); ``prototypes`` overrides P (the GNN's live output)."""
        return _project(emb, self.prototypes if prototypes is None else prototypes)

    def map_logits(self, z: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
        """Dataset logits from unified logits: (B, N, h, w), (n_d, N) → (B, n_d, h, w)."""
        return label_logits(z, mapping, self.label_logits)

    def dataset_logits(self, emb: torch.Tensor, d: int, prototypes: torch.Tensor | None = None,
                       mapping: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of dataset d, (B, n_d, h, w); ``mapping`` overrides M_d (e.g. the soft S_d)."""
        p = self.prototypes if prototypes is None else prototypes
        m = self.mapping(d) if mapping is None else mapping
        if self.label_logits != "sum":
            return self.map_logits(_project(emb, p), m)
        return _project(emb, m.to(p.dtype) @ p)

    def forward(self, emb: torch.Tensor, dataset_idx: torch.Tensor,
                prototypes: torch.Tensor | None = None) -> list[DatasetLogits]:
        return [DatasetLogits(d, idx, self.dataset_logits(emb[idx], d, prototypes))
                for d, idx in split_by_dataset(dataset_idx)]


class SingleHead(nn.Module):
    """Linear per-pixel classifier for the single-dataset baseline.

    Plain logits ``W·emb + b`` (the reference's ``HRNet_W48_Ori`` L2-normalised the *logits*, bug
    B10, which bounds them to the unit sphere and cripples the softmax; we do not).

    Args:
        num_classes: n.
        embed_dim: D.

    Shapes:
        - forward(emb (B, D, h, w)) → (B, n, h, w).
    """

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.classifier(emb)
