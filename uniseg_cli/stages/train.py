"""Stage ``train``: stage 2 (alternating GNN / segmentation training) and stage 3 (final training, pruning).

Inputs: ``embed-labels`` (label text features, the GNN's input) and ``estimate-nodes`` (N and the
initial mapping from ``init_mapping.parquet``; the stage-1 Multi-SegHead checkpoint whose segmenter
warm-starts this one — its dataset prototypes are not used, as in the reference). The method is in
:mod:`uniseg_cli.training.unify`; the loop, optimiser, schedule and checkpoints in
:mod:`uniseg_cli.training.engine`.

Writes ``training/<run_id>/``:

- ``model.safetensors`` + ``model.json``: the final segmenter and UniSegHead (prototypes, pruned
  boolean mappings) and what rebuilds them (:mod:`uniseg_cli.training.model_io`);
- ``taxonomy_state.h5``: per dataset ``adjacency/<d>`` (the GNN's soft S_d at the end of stage 2),
  ``mapping/<d>`` (the final boolean mapping), ``pixel_share/<d>`` (share of d's held-out pixels of
  label c whose argmax over all N nodes is u, final model); root attrs schema, kind, run_id,
  num_nodes, datasets (layout of ``export_taxonomy.read_taxonomy_state``); also
  ``stage3_init_mapping/<d>`` (the mapping before pruning) and ``prune_hist/<d>`` (the held-out
  pixel counts the pruning decided on);
- ``metrics.jsonl``: stage 2 and stage 3 logs (field ``stage``); ``summary.json``.

Resume: checkpoints live in ``<artifacts>/training/.work-<run_id>/{stage2,stage3}/`` until the
artifact is published, so re-running the same recipe after a crash or a kill continues from the last
checkpoint and ends with the same weights as an uninterrupted run (batches, augmentation and dropout
are functions of (seed, rank, iteration)). Under ``torchrun`` every rank trains on its own shard and
rank 0 alone writes.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from uniseg_cli import artifacts as A
from uniseg_cli.errors import UsageError
from uniseg_cli.stages import StageContext, StageSpec, register

KIND = "training"
STATE_FILE = "taxonomy_state.h5"


@dataclasses.dataclass(frozen=True)
class Params:
    # ---- batches (METHOD §7)
    images_per_dataset: int = 2  # images of every dataset in each batch, per rank (paper: 3)
    crop_size: int = 64  # square training crop in pixels (paper: 768)
    channel_gain: float = 0.0  # augment: scale each colour channel by 1 + U(-g, g) (0: off, as the paper)
    channel_offset: float = 0.0  # augment: shift each colour channel by U(-o, o) grey levels (0: off)
    workers: int = 0  # data-loader worker processes
    seed: int = 0  # random seed (batches, augmentation, dropout)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    # ---- optimiser (both stages; the schedule restarts per stage, as in the reference)
    lr: float = 1e-3  # AdamW base learning rate (paper: 1e-4)
    backbone_lr_mult: float = 0.1  # LR multiplier of the backbone
    weight_decay: float = 0.05  # AdamW decoupled weight decay (0 on norms, biases, embeddings)
    warmup_iters: int = 10  # linear warmup iterations per stage (paper config: 1000)
    warmup_factor: float = 0.001  # LR factor at the first warmup iteration
    poly_power: float = 0.9  # poly decay power
    clip_grad_norm: float | None = 1.0  # full-model gradient L2-norm clip; 0 or none = off (paper: 0.01)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    ohem_thresh: float = 0.7  # OHEM: keep pixels whose true-class probability is below this
    ohem_min_kept: float = 0.0625  # OHEM: ... but at least this fraction of the valid pixels
    # ---- stage 2: alternation (paper: 20000 / 20000 / 15000, 5 phases starting with gnn)
    gnn_iters: int = 40  # iterations of each GNN phase
    seg_iters: int = 40  # iterations of each segmentation phase
    first_gnn_iters: int = 30  # GNN-phase iterations with a trainable adjacency (then frozen)
    num_phases: int = 5  # GNN and SEG phases in total
    start_with: str = "gnn"  # gnn or seg: the first phase
    solve_every: int = 10  # re-solve the hard mapping every this many GNN iterations (paper: 101)
    orth_weight: float = 10.0  # weight of the orthogonality loss in GNN phases
    orth_temperature: float = 0.07  # temperature of the orthogonality loss
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # stage-2 CE weight per dataset (default 1)
    # ---- label GNN (METHOD §4)
    gnn_hidden: int = 64  # hidden width (paper: 2048)
    gnn_layers: int = 3  # GraphSAGE layers
    gnn_dropout: float = 0.5  # dropout rate
    adj_temperature: float = 0.07  # temperature of the adjacency column softmax
    gnn_lr_mult: float = 1.0  # LR multiplier of every GNN parameter (paper: 1)
    adjacency_lr_mult: float = 1.0  # extra LR multiplier of the adjacency logits (paper: 1)
    dataset_embedding: bool = False  # add a learnable per-dataset vector to label features (paper Eq. 1)
    # ---- mapping solver (METHOD §5)
    uot_reg: float = 0.01  # entropic regularisation of the unbalanced OT
    uot_reg_m: float = 5.0  # marginal KL weight
    beta_ema: float = 0.7  # EMA of the target marginal
    prune_ratio: float = 1.0  # UOT pruning below prune_ratio / (N * n_d)
    min_link_weight: float = 0.5  # keep a node's edge only if S[c, u] exceeds this (0: reference)
    # ---- stage 3 (paper: 100000 iterations, pruning at 50000 below 1 %)
    final_iters: int = 100  # iterations of the final stage
    prune_at: int = 50  # final-stage iteration of the one edge pruning (0: never)
    prune_threshold: float = 0.01  # drop edge (c, u) when u gets at most this share of c's pixels
    prune_mode: str = "reestimate"  # prune (reference: drop weak edges) or reestimate (also add the edges held-out pixels show)
    link_min_col_share: float = 0.5  # reestimate: link (c, u) only if >= this share of u's pixels in the dataset are c's
    link_min_presence: float = 0.002  # reestimate: ... and u takes >= this share of the dataset's labelled pixels
    link_cosine: bool = True  # reestimate: measure with L2-normalised prototypes (no node wins by its norm alone)
    label_logits: str = "sum"  # a label's logit from its nodes': sum (paper Eq. 4-5) or logsumexp (its probability is theirs summed)
    final_unmapped_negatives: float = 0.2  # stage 3: weight of a CE where a dataset's unused nodes are negatives (0: reference)
    final_loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # stage-3 CE weight per dataset
    held_out_split: str | None = None  # split for pruning and pixel shares (default: each dataset's val split)
    holdout_fraction: float = 0.0  # > 0: hold this share of each train split out of training and measure on it
    held_out_max_images: int = 0  # at most this many held-out images per dataset (0: all)
    # ---- bookkeeping
    checkpoint_every: int = 50  # iterations between resumable checkpoints (0: only at stage ends)
    log_every: int = 10  # iterations between metrics.jsonl lines

    def transform_config(self):
        """The training transform of stages 2 and 3 (crop size and the channel shift)."""
        from uniseg_cli.data.transforms import TrainTransformConfig

        return TrainTransformConfig.of(self)

    def validate(self) -> None:
        if self.images_per_dataset < 1 or self.crop_size < 16:
            raise ValueError("images_per_dataset must be >= 1 and crop_size >= 16")
        self.transform_config()  # the crop and channel-shift settings check themselves
        if min(self.gnn_iters, self.seg_iters, self.first_gnn_iters, self.final_iters) < 0 or self.num_phases < 0:
            raise ValueError("phase lengths and num_phases must be >= 0")
        if self.start_with not in ("gnn", "seg"):
            raise ValueError(f"start_with must be gnn or seg, got {self.start_with!r}")
        if self.lr <= 0 or min(self.backbone_lr_mult, self.gnn_lr_mult, self.adjacency_lr_mult, self.weight_decay) < 0:
            raise ValueError("lr must be > 0; the LR multipliers and weight_decay >= 0")
        if self.warmup_iters < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError("warmup_iters must be >= 0 and warmup_factor in (0, 1]")
        if self.clip_grad_norm is not None and self.clip_grad_norm < 0:
            raise ValueError("clip_grad_norm must be >= 0 (0 or none: off)")
        if not 0 <= self.prune_threshold < 1 or self.prune_at < 0:
            raise ValueError("prune_threshold must lie in [0, 1) and prune_at >= 0")
        if not 0 <= self.final_unmapped_negatives <= 1:
            raise ValueError(f"final_unmapped_negatives must lie in [0, 1], got {self.final_unmapped_negatives}")
        if self.label_logits not in ("sum", "logsumexp"):
            raise ValueError(f"label_logits must be sum or logsumexp, got {self.label_logits!r}")
        if self.prune_mode not in ("prune", "reestimate"):
            raise ValueError(f"prune_mode must be prune or reestimate, got {self.prune_mode!r}")
        if not 0.5 <= self.link_min_col_share <= 1 or not 0 <= self.link_min_presence < 1:
            raise ValueError("link_min_col_share must lie in [0.5, 1] and link_min_presence in [0, 1)")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must lie in [0, 1), got {self.holdout_fraction}")
        if self.holdout_fraction > 0 and self.held_out_split:
            raise ValueError("give either held_out_split or holdout_fraction, not both")
        if self.solve_every < 1 or self.checkpoint_every < 0 or self.log_every < 1 or self.workers < 0:
            raise ValueError("solve_every and log_every must be >= 1, checkpoint_every and workers >= 0")
        if any(w < 0 for w in [*self.loss_weights.values(), *self.final_loss_weights.values()]):
            raise ValueError("loss weights must be >= 0")

    def optim(self):
        from uniseg_cli.training.engine import OptimConfig

        return OptimConfig(lr=self.lr, backbone_lr_mult=self.backbone_lr_mult, weight_decay=self.weight_decay,
                           warmup_iters=self.warmup_iters, warmup_factor=self.warmup_factor, poly_power=self.poly_power,
                           lr_mults=(("gnn", self.gnn_lr_mult), ("gnn.adjacency", self.adjacency_lr_mult)),
                           clip_grad_norm=self.clip_grad_norm or None, amp=self.amp)

    def solver_config(self):
        from uniseg_cli.taxonomy.solver import SolverConfig

        return SolverConfig(reg=self.uot_reg, reg_m=self.uot_reg_m, beta_ema=self.beta_ema,
                            prune_ratio=self.prune_ratio, min_link_weight=self.min_link_weight)


def work_dir(ctx: StageContext) -> Path:
    """In-progress checkpoints of this recipe (kept until the artifact is published)."""
    return Path(ctx.root) / KIND / f".work-{ctx.run_id()}"


def run(ctx: StageContext) -> A.Artifact:
    """Stage 2 then stage 3, resuming from ``work_dir(ctx)``; rank 0 publishes ``training/<run_id>/``."""
    from uniseg_cli.training import setup as S
    from uniseg_cli.training import train_run as R
    from uniseg_cli.training.distributed import barrier, init_distributed

    p: Params = ctx.params
    datasets = ctx.train_datasets
    if not datasets:
        raise UsageError("train needs at least one dataset with role train",
                         hint="pass --dataset PATH (repeatable) or --pipeline pipeline.yaml.")
    names = [d.name for d in datasets]
    for field in ("loss_weights", "final_loss_weights"):
        unknown = sorted(set(getattr(p, field)) - set(names))
        if unknown:
            raise UsageError(f"{field} names unknown dataset(s) {', '.join(unknown)}", hint=f"datasets: {', '.join(names)}.")
    inputs = S.read_inputs(ctx.inputs["embed-labels"], ctx.inputs["estimate-nodes"], datasets)
    data = S.open_training_data(datasets, p)
    dist = init_distributed(p.device)
    work = work_dir(ctx)
    result = R.train_all(p, inputs, data, dist, work, config=ctx.params_dict())
    art = None
    if dist.is_main:
        with ctx.publish() as st:
            R.write_outputs(st.dir, result, inputs, run_id=st.run_id, config=ctx.params_dict(), work=work)
            st.extra["summary"] = result.summary
        art = st.artifact
        shutil.rmtree(work, ignore_errors=True)
    barrier()
    if art is None:
        art = A.find_artifact(ctx.root, KIND, ctx.run_id())
    return art


def _summary(art: A.Artifact) -> dict:
    return dict(art.manifest.get("extra", {}).get("summary", {}))


SPEC = register(StageSpec("train", KIND, Params, run, needs=("embed-labels", "estimate-nodes"), datasets="full",
                          summary=_summary))
