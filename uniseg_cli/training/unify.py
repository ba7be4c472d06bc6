"""Stages 2 and 3 of the method on top of the engine: the task module, the phase plan, the hooks.

**Stage 2** alternates (METHOD §1, §4):

- *GNN phases*: the segmenter is frozen and in eval mode (BatchNorm on running statistics); the
  GNN (adjacency logits, unified features U, layers) trains on
  ``Σ_d w_d·[r·OHEM(M_d·z) + (1−r)·OHEM(S_d·z)] + λ_orth·L_orth(P)`` with ``z = emb·Pᵀ`` from the
  live GNN prototypes P, ``r = min(t / first_gnn_iters, 1)``, the boolean M_d re-solved from S every
  ``solve_every`` iterations. After ``first_gnn_iters`` iterations of the phase the adjacency is
  frozen (its own engine phase, ``<name>-fixed-adj``), M_d is solved once and only the hard term
  remains.
- *SEG phases*: at the switch a fresh solve gives the boolean mappings and the GNN in eval mode
  (no dropout) gives the prototypes; both are copied into the :class:`UniSegHead` as fixed. The
  GNN is frozen and not run; backbone and projection head train on ``Σ_d w_d·OHEM(M_d·z)``.

**Stage 3**: the GNN is dropped; its last prototypes (eval mode) and a fresh solve initialise the
head, the prototypes become trainable, the mappings stay fixed except for one pruning at
``prune_at``: an edge (c, u) is dropped when node u takes at most ``prune_threshold`` of the
held-out pixels of label c that land on c's nodes (argmax over all N unified logits), pixel counts
summed across ranks. Unlike the reference (which could leave a label with an all-zero row) a label
always keeps its best node, so the taxonomy invariants hold.

The solver's β EMA and the cached hard mapping are checkpointed (``extra_state``), so a resumed
run continues exactly where it stopped.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from uniseg_cli.models.heads import UniSegHead, split_by_dataset
from uniseg_cli.models.losses import blend_ratio, blended_ce, multi_dataset_ce, orthogonality_loss
from uniseg_cli.training.engine import Hooks, Phase, StepInfo

GNN, GNN_FIXED, SEG, FINAL = "gnn", "gnn-fixed-adj", "seg", "final"


# ------------------------------------------------------------------------------------------ phase plan


def stage2_phases(gnn_iters: int, seg_iters: int, first_gnn_iters: int, num_phases: int, start_with: str = "gnn") -> list[Phase]:
    """The alternation as engine phases (paper preset: 20000/20000/15000, 5 phases, GNN first → ends in GNN)."""
    out: list[Phase] = []
    kinds = [GNN, SEG] if start_with == "gnn" else [SEG, GNN]
    counts = {GNN: 0, SEG: 0}
    for k in range(num_phases):
        kind = kinds[k % 2]
        counts[kind] += 1
        name = f"{kind}{counts[kind]}"
        if kind == SEG:
            out.append(Phase(name, seg_iters, train=("segmenter",), eval_modules=("gnn",), meta=(("kind", SEG),)))
            continue
        first = min(first_gnn_iters, gnn_iters)
        out.append(Phase(name, first, train=("gnn",), eval_modules=("segmenter",), meta=(("kind", GNN), ("ramp", first_gnn_iters))))
        if gnn_iters > first:
            out.append(Phase(f"{name}-fixed-adj", gnn_iters - first, train=("gnn",), freeze=("gnn.adjacency",),
                             eval_modules=("segmenter",), meta=(("kind", GNN_FIXED),)))
    return [p for p in out if p.iters > 0]


def stage3_phases(iters: int, prune_at: int | None) -> list[Phase]:
    """Final stage: segmenter + head (prototypes included) train; one pruning at ``prune_at`` (None/≥iters: never)."""
    train = ("segmenter", "head")
    if prune_at is None or prune_at <= 0 or prune_at >= iters:
        return [Phase(FINAL, iters, train=train, meta=(("kind", FINAL),))]
    return [Phase(FINAL, prune_at, train=train, meta=(("kind", FINAL),)),
            Phase(f"{FINAL}-pruned", iters - prune_at, train=train, meta=(("kind", FINAL), ("prune", True)))]


# ------------------------------------------------------------------------------------------ task


class UnifiedTask(nn.Module):
    """Segmenter + UniSegHead (+ LabelGNN in stage 2); ``forward(batch, info)`` gives the phase's losses.

    Args:
        segmenter: images (B, 3, H, W) → emb (B, D, H/4, W/4), L2-normalised.
        head: :class:`UniSegHead` with N nodes and one mapping per dataset.
        gnn: :class:`LabelGNN` (stage 2) or None (stage 3).
        weights: CE weight per dataset index.
        orth_weight, orth_temperature: orthogonality loss on the GNN prototypes (GNN phases).
        ohem: keyword arguments of ``ohem_ce`` (thresh, min_kept_ratio).
    """

    def __init__(self, segmenter: nn.Module, head: UniSegHead, gnn: nn.Module | None, weights: Sequence[float],
                 orth_weight: float = 10.0, orth_temperature: float = 0.07, ohem: dict | None = None,
                 dataset_names: Sequence[str] | None = None):
        super().__init__()
        self.segmenter, self.head, self.gnn = segmenter, head, gnn
        self.weights = [float(w) for w in weights]
        self.orth_weight, self.orth_temperature = orth_weight, orth_temperature
        self.ohem = dict(ohem or {})
        self.names = list(dataset_names) if dataset_names else [str(i) for i in range(len(self.weights))]
        self.hard: list[torch.Tensor] | None = None  # boolean mappings used by the GNN phases' hard term
        self.unmapped_negatives = 0.0  # stage 3: weight of the CE in which a dataset's unmapped nodes are negatives

    def forward(self, batch: dict, info: StepInfo) -> dict[str, torch.Tensor]:
        kind = info.phase.get("kind")
        if kind in (GNN, GNN_FIXED):
            return self._gnn_losses(batch, info, kind)
        emb = self.segmenter(batch["image"])  # (B, D, h, w)
        total, per = multi_dataset_ce(self.head(emb, batch["dataset"]), batch["label"], self.weights, **self.ohem)
        lam = float(self.unmapped_negatives)
        if kind == FINAL and lam > 0:
            neg, _ = multi_dataset_ce(self._with_unmapped_negatives(emb, batch["dataset"]), batch["label"],
                                      self.weights, **self.ohem)
            total = (1.0 - lam) * total + lam * neg
        return {"loss": total, **{f"ce/{self.names[d]}": v for d, v in per.items()}}

    def _with_unmapped_negatives(self, emb: torch.Tensor, dataset_idx: torch.Tensor) -> list:
        """Per-dataset logits [M_d·z ; z_u for every node u with no label in d] (B, n_d + free, h, w).

        The targets stay the dataset's labels, so a node that dataset d does not use is pushed below
        the right label on d's pixels. The trainer mixes this CE with weight λ into the plain one:
        a node of another domain gets only this push on d's images and sinks, while a node that d's
        union label really contains keeps the full-weight push up from its own dataset, so it still
        shows where it belongs (a small λ keeps that asymmetry). Without it nothing constrains such a node on d's images (the
        reference avoided this only by linking every node to some label of every dataset, METHOD §5.3),
        and a node of another domain can take over pixels it was never trained on.
        """
        from uniseg_cli.models.heads import DatasetLogits

        outs = []
        for d, idx in split_by_dataset(dataset_idx):
            z = self.head.unified_logits(emb[idx])  # (b, N, h, w)
            m = self.head.mapping(d).to(z.dtype)  # (n_d, N)
            logits = self.head.map_logits(z, m)
            free = m.sum(dim=0) == 0
            if bool(free.any()):
                logits = torch.cat([logits, z[:, free]], dim=1)
            outs.append(DatasetLogits(d, idx, logits))
        return outs

    def _gnn_losses(self, batch: dict, info: StepInfo, kind: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            emb = self.segmenter(batch["image"])  # frozen, eval mode
        out = self.gnn()
        r = blend_ratio(info.phase_iter, info.phase.get("ramp", 0)) if kind == GNN else 1.0
        losses, total = {}, None
        for d, idx in split_by_dataset(batch["dataset"]):
            z = self.head.unified_logits(emb[idx], out.prototypes)  # (b, N, h, w)
            hard = self.hard[d].to(z.device)
            # the paper's sum, whatever the head's label_logits: under logsumexp an extra node costs a label
            # nothing, and the adjacency spread labels over other domains' nodes (measured, docs/quality.md)
            loss = blended_ce(z, out.soft[d], hard, r, batch["label"][idx], **self.ohem)
            losses[f"ce/{self.names[d]}"] = loss.detach()
            total = self.weights[d] * loss if total is None else total + self.weights[d] * loss
        orth = orthogonality_loss(out.prototypes, self.orth_temperature)
        total = total + self.orth_weight * orth
        return {"loss": total, "orth": orth.detach(), "blend_r": torch.tensor(float(r)), **losses}

    # -------------------------------------------------------------- mapping and prototypes

    @torch.no_grad()
    def soft_adjacency(self) -> list[np.ndarray]:
        return [s.detach().float().cpu().numpy() for s in self.gnn.soft_adjacency()]

    @torch.no_grad()
    def gnn_prototypes_eval(self) -> torch.Tensor:
        """P from the GNN without dropout (the reference's ``get_optimal_matching``)."""
        was = self.gnn.training
        self.gnn.eval()
        p = self.gnn().prototypes.detach().clone()
        self.gnn.train(was)
        return p


class Stage2Hooks(Hooks):
    """Solves mappings during GNN phases and fixes mappings + prototypes at each SEG switch."""

    def __init__(self, task: UnifiedTask, solver, solve_every: int = 101):
        self.task, self.solver, self.solve_every = task, solver, max(1, int(solve_every))
        self.solves = 0

    def solve(self) -> list[np.ndarray]:
        maps = self.solver.solve(self.task.soft_adjacency())
        self.task.hard = [torch.as_tensor(m, dtype=torch.float32) for m in maps]
        self.solves += 1
        return maps

    def on_phase_start(self, trainer, info: StepInfo) -> None:
        kind = info.phase.get("kind")
        if kind in (GNN, GNN_FIXED):
            self.solve()
        elif kind == SEG:
            maps = self.solve()  # fresh solve at the GNN -> SEG switch
            self.task.head.set_mappings(maps)
            self.task.head.set_prototypes(self.task.gnn_prototypes_eval(), trainable=False)

    def after_step(self, trainer, info: StepInfo, losses) -> None:
        if info.phase.get("kind") == GNN and (info.phase_iter + 1) % self.solve_every == 0:
            self.solve()  # the adjacency moved: refresh the hard mapping (reference: every 101 forwards)

    def extra_state(self):
        tensors = {f"solver.{k}": torch.from_numpy(v) for k, v in self.solver.state_dict().items()}
        if self.task.hard is not None:
            tensors.update({f"hard.{d}": m for d, m in enumerate(self.task.hard)})
        return tensors, {"solves": self.solves}

    def load_extra_state(self, tensors, doc) -> None:
        self.solver.load_state_dict({k[len("solver."):]: v for k, v in tensors.items() if k.startswith("solver.")})
        hard = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("hard."))
        self.task.hard = [v.float() for _, v in hard] if hard else None
        self.solves = int(doc.get("solves", 0))


# ------------------------------------------------------------------------------------------ stage 3 pruning


@torch.no_grad()
def unified_hist(task: UnifiedTask, images: Sequence, num_classes: Sequence[int], device, amp: bool = False,
                 cosine: bool = False) -> list[np.ndarray]:
    """hist[d][c, u]: held-out pixels of label c of dataset d whose argmax over all N unified logits is u.

    With ``cosine`` the argmax is over cosine similarities (prototypes L2-normalised): a node whose
    prototype norm grew large in its own datasets cannot take over pixels of another domain that
    it was never trained on, where nothing kept its logits down.

    Args:
        images: per dataset, an iterable of (image (1, 3, H, W) normalised, label (1, H, W) with -1 ignore).
    Returns:
        int64 (n_d, N) per dataset, summed over ranks.
    """
    from uniseg_cli.training.distributed import all_reduce_numpy

    was = task.training
    task.eval()
    n_nodes = task.head.num_nodes
    out = []
    for d, pairs in enumerate(images):
        h = torch.zeros(num_classes[d] * n_nodes, dtype=torch.int64, device=device)
        for img, lab in pairs:
            img, lab = img.to(device), lab.to(device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
                head_fn = task.head.unified_logits
                if cosine:
                    protos = nn.functional.normalize(task.head.prototypes.detach(), dim=1)
                    head_fn = lambda e: task.head.unified_logits(e, protos)  # noqa: E731
                z = full_res_logits(task.segmenter, head_fn, img)  # (1, N, H, W)
            pred = z.argmax(dim=1)  # (1, H, W)
            keep = (lab >= 0) & (lab < num_classes[d])
            h += torch.bincount(lab[keep] * n_nodes + pred[keep], minlength=num_classes[d] * n_nodes)
        out.append(all_reduce_numpy(h.cpu().numpy(), device).reshape(num_classes[d], n_nodes))
    task.train(was)
    return out


def prune_mappings(mappings: Sequence[np.ndarray], hist: Sequence[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Keep edge (c, u) iff hist[c, u] / Σ_{u' mapped to c} hist[c, u'] > threshold; a label keeps ≥ 1 node.

    Labels with no held-out pixels on their nodes keep all their edges (reference behaviour).
    """
    out = []
    for m, h in zip(mappings, hist):
        m = np.asarray(m, bool)
        on = np.where(m, h, 0).astype(np.float64)
        denom = on.sum(axis=1, keepdims=True)
        share = np.divide(on, denom, out=np.zeros_like(on), where=denom > 0)
        keep = m & ((share > threshold) | (denom == 0))
        for c in np.flatnonzero(m.any(axis=1) & ~keep.any(axis=1)):
            keep[c, int(np.argmax(np.where(m[c], share[c], -1)))] = True
        out.append(keep)
    return out


def reestimate_mappings(mappings: Sequence[np.ndarray], hist: Sequence[np.ndarray], min_row_share: float = 0.01,
                        min_col_share: float = 0.5, min_presence: float = 0.002) -> list[np.ndarray]:
    """Re-estimate every edge from held-out pixels: add the links the images show, drop those they don't.

    ``hist[d][c, u]`` counts held-out pixels of label c of dataset d whose argmax over all N unified
    logits is u. Edge (c, u) is kept iff, in dataset d,

    - ``col = hist[c, u] / Σ_c' hist[c', u] ≥ min_col_share``: most of the pixels the model gives to
      node u carry label c (so u is part of what c means in this dataset),
    - ``row = hist[c, u] / Σ_u' hist[c, u'] > min_row_share``: u takes a real share of c's pixels
      (the reference's stage-3 pruning test, METHOD §5.5, applied to every node, not only mapped ones),
    - ``presence = Σ_c' hist[c', u] / Σ hist ≥ min_presence``: node u is seen in this dataset at all
      (a node of another domain that wins a few scattered pixels links nowhere).

    This is the reference's one-off pixel-share pruning extended in the one direction it lacks:
    a union label (citydrive ``road`` = road + lane marking + crosswalk) gains the nodes whose pixels
    it labels, which the learned adjacency may not have linked in a short schedule. Then the
    invariants are restored: a node has at most one label per dataset (the first test picks at most
    one label when ``min_col_share > 0.5``; ties go to the larger count), and a label without a node
    gets, in order: its best previously mapped node that is still free, the free node with most of
    its pixels, a node taken from a label that has more than one, or any free node.

    Args:
        mappings: the current boolean mappings, bool (n_d, N) per dataset.
        hist: int (n_d, N) per dataset, as from :func:`unified_hist` (summed over ranks).
    Returns:
        bool (n_d, N) per dataset.
    """
    out = []
    for m_old, h in zip(mappings, hist):
        m_old = np.asarray(m_old, bool)
        h = np.asarray(h, np.float64)
        n, N = h.shape
        total = h.sum()
        col_tot = h.sum(axis=0)  # (N,)
        row_tot = h.sum(axis=1)  # (n,)
        col = np.divide(h, col_tot[None, :], out=np.zeros_like(h), where=col_tot[None, :] > 0)
        row = np.divide(h, row_tot[:, None], out=np.zeros_like(h), where=row_tot[:, None] > 0)
        presence = col_tot / total if total > 0 else np.zeros(N)
        best = np.argmax(col, axis=0)  # one candidate label per node
        m = np.zeros((n, N), bool)
        cand = (col[best, np.arange(N)] >= min_col_share) & (row[best, np.arange(N)] > min_row_share) & (presence >= min_presence)
        m[best[cand], np.flatnonzero(cand)] = True
        for c in np.flatnonzero(~m.any(axis=1)):
            free = ~m.any(axis=0)
            u = _pick(m_old[c] & free, h[c])
            if u is None:
                u = _pick(free & (h[c] > 0), h[c])
            if u is None:
                counts = m.sum(axis=1)
                stealable = np.array([m[:, v].any() and counts[np.argmax(m[:, v])] > 1 for v in range(N)])
                u = _pick(stealable & (h[c] > 0), h[c])
                if u is not None:
                    m[:, u] = False
            if u is None:
                u = _pick(~m.any(axis=0), np.where(m_old[c], 1.0, 0.0))
            if u is None:  # N < n_d: no free node can exist; keep the previous mapping of this label
                m[c] = m_old[c] & ~m.any(axis=0)
                continue
            m[c, u] = True
        out.append(m)
    return out


def _pick(mask: np.ndarray, score: np.ndarray) -> int | None:
    """The index with the highest score among ``mask`` (lowest index on ties), or None."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return int(idx[np.argmax(score[idx])])


def pixel_shares(hist: Sequence[np.ndarray]) -> list[np.ndarray]:
    """share[c, u] = hist[c, u] / Σ_u hist[c, u] (0 for labels without pixels), float32."""
    res = []
    for h in hist:
        h = np.asarray(h, np.float64)
        s = h.sum(axis=1, keepdims=True)
        res.append(np.divide(h, s, out=np.zeros_like(h), where=s > 0).astype(np.float32))
    return res


class Stage3Hooks(Hooks):
    """Prunes the mapping once, at the start of the ``prune`` phase, from held-out pixel shares."""

    def __init__(self, task: UnifiedTask, held_out_images, threshold: float, device, amp: bool = False,
                 mode: str = "prune", min_col_share: float = 0.5, min_presence: float = 0.002, cosine: bool = True):
        self.task, self.images, self.threshold, self.device, self.amp = task, held_out_images, threshold, device, amp
        self.mode, self.min_col_share, self.min_presence, self.cosine = mode, min_col_share, min_presence, cosine
        self.prune_hist: list[np.ndarray] | None = None

    def on_phase_start(self, trainer, info: StepInfo) -> None:
        if not info.phase.get("prune"):
            return
        sizes = self.task.head.num_classes
        trainer.sync_buffers()  # every rank measures with rank 0's BN statistics
        self.prune_hist = unified_hist(self.task, self.images(), sizes, self.device, self.amp,
                                       cosine=self.mode == "reestimate" and self.cosine)
        maps = [m.cpu().numpy() > 0.5 for m in self.task.head.mappings]
        if self.mode == "reestimate":
            new = reestimate_mappings(maps, self.prune_hist, self.threshold, self.min_col_share, self.min_presence)
        else:
            new = prune_mappings(maps, self.prune_hist, self.threshold)
        self.task.head.set_mappings(new)

    def extra_state(self):
        if self.prune_hist is None:
            return {}, {}
        return {f"prune_hist.{d}": torch.from_numpy(h) for d, h in enumerate(self.prune_hist)}, {}

    def load_extra_state(self, tensors, doc) -> None:
        hs = sorted((int(k.split(".")[1]), v.numpy()) for k, v in tensors.items() if k.startswith("prune_hist."))
        self.prune_hist = [h for _, h in hs] if hs else None


def full_res_logits(segmenter: nn.Module, head_fn, img: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Single-scale full-resolution logits: pad (B, 3, H, W) to a multiple of ``multiple``, embed, apply
    ``head_fn`` (emb → logits), upsample bilinearly (align_corners=True, as in training) to the padded
    size and crop back to (B, C, H, W). Zero padding is the mean colour after normalisation."""
    from uniseg_cli.models.heads import upsample_logits

    h, w = img.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = nn.functional.pad(img, (0, pw, 0, ph)) if (ph or pw) else img
    logits = upsample_logits(head_fn(segmenter(x)).float(), x.shape[-2:])
    return logits[..., :h, :w]
