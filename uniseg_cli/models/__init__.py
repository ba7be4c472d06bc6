"""The learning parts of the method: segmenter, heads, label GNN, losses (METHOD §4, §6, §7).

This package never touches files or the CLI. Entry points:

    seg = build_segmenter(SegmenterConfig(backbone="tiny", embed_dim=64))
    emb = seg(images)                                    # (B, D, H/4, W/4), unit norm over D
    head = UniSegHead(num_nodes, D, mappings)            # or MultiSegHead([n_1, ...], D)
    outs = head(emb, dataset_idx)                        # [DatasetLogits(d, index, logits)]
    loss, per_ds = multi_dataset_ce(outs, labels, weights)
    gnn = LabelGNN(GNN_PRESETS["paper"], features, sizes, N, init_mapping)
    out = gnn()                                          # prototypes (N, D), soft [(n_d, N)]
    params = set_phase("gnn", seg, head, gnn)            # requires_grad + train/eval for a phase

DDP. Which parameters train changes between phases (METHOD §7), and a Multi-SegHead's prototypes of
a dataset absent from a batch get no gradient. The trainer must therefore either wrap the model
anew for every phase (after :func:`set_phase`, DDP only registers parameters with
``requires_grad``) or use ``find_unused_parameters=True``; :func:`set_phase` returns exactly the
parameters that receive gradients in the phase, so an optimiser built from them never updates a
frozen one (no weight decay on frozen tensors, unlike the reference under torch 1.13).
"""
from __future__ import annotations

import dataclasses

from torch import nn

from uniseg_cli.errors import UsageError
from uniseg_cli.models.backbones import BACKBONES, Backbone, BackboneSpec, build_backbone
from uniseg_cli.models.heads import (DatasetLogits, MultiSegHead, SingleHead, UniSegHead, split_by_dataset,
                                     upsample_logits)
from uniseg_cli.models.label_gnn import GNN_PRESETS, GNNConfig, GNNOutput, LabelGNN
from uniseg_cli.models.losses import (IGNORE_INDEX, blend_ratio, blended_ce, multi_dataset_ce, ohem_ce,
                                      orthogonality_loss)
from uniseg_cli.models.segmenter import ProjectionHead, Segmenter, SegmenterConfig

__all__ = [
    "BACKBONES", "Backbone", "BackboneSpec", "DatasetLogits", "GNNConfig", "GNNOutput", "GNN_PRESETS",
    "IGNORE_INDEX", "LabelGNN", "MultiSegHead", "PHASES", "ProjectionHead", "Segmenter", "SegmenterConfig",
    "SingleHead", "UniSegHead", "blend_ratio", "blended_ce", "build_segmenter", "list_backbones",
    "multi_dataset_ce", "ohem_ce", "orthogonality_loss", "segmenter_config_from_dict", "set_phase", "split_by_dataset",
    "upsample_logits",
]


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(BACKBONES)


def build_segmenter(config: SegmenterConfig) -> Segmenter:
    """Build the segmentation network of ``config``.

    Raises:
        UsageError: unknown backbone name or bad sizes (the message lists the valid names).
        ServiceError: ``pretrained=True`` and the ImageNet weights cannot be loaded.
    """
    if config.backbone not in BACKBONES:
        raise UsageError(f"unknown backbone {config.backbone!r}; valid backbones: {', '.join(list_backbones())}",
                         hint="set backbone to one of the names listed")
    if config.embed_dim < 1 or (config.proj_hidden is not None and config.proj_hidden < 1):
        raise UsageError(f"segmenter: embed_dim and proj_hidden must be >= 1, got {config.embed_dim}, "
                         f"{config.proj_hidden}", hint="fix the model section of the params")
    return Segmenter(config, build_backbone(BACKBONES[config.backbone], config.pretrained))


def segmenter_config_from_dict(d: dict) -> SegmenterConfig:
    """Rebuild a :class:`SegmenterConfig` from ``to_dict()`` output (checkpoint JSON)."""
    names = {f.name for f in dataclasses.fields(SegmenterConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UsageError(f"segmenter config: unknown keys {unknown}", hint=f"valid keys: {sorted(names)}")
    return SegmenterConfig(**d)


PHASES = ("stage1", "gnn", "gnn_frozen_adj", "seg", "stage3")
"""Training phases (METHOD §1):

- ``stage1``: segmenter + head (Multi-SegHead, or any head) train; the GNN is idle.
- ``gnn``: the GNN trains (adjacency, unified features, weights); segmenter frozen and in eval
  mode (BN running stats, as the reference); the head's own prototypes are unused (the loss uses the
  GNN's live prototypes), so frozen.
- ``gnn_frozen_adj``: as ``gnn`` with the adjacency frozen (GNN sub-stage 2).
- ``seg``: segmenter trains with fixed head prototypes and mappings; GNN frozen.
- ``stage3``: segmenter + head prototypes train; GNN frozen.
"""


def set_phase(phase: str, segmenter: nn.Module, head: nn.Module | None = None,
              gnn: LabelGNN | None = None) -> list[tuple[str, nn.Parameter]]:
    """Set ``requires_grad`` and train/eval modes for a phase; return the trainable parameters.

    Args:
        phase: one of :data:`PHASES`.
        segmenter, head, gnn: the model parts (head and gnn may be None when absent).

    Returns:
        ``[(name, parameter)]`` with names prefixed ``segmenter.``, ``head.``, ``gnn.``; exactly the
        parameters that get gradients in this phase (build the optimiser from them).
    """
    if phase not in PHASES:
        raise UsageError(f"unknown training phase {phase!r}; valid phases: {', '.join(PHASES)}",
                         hint="use one of the listed phases")
    gnn_phase = phase in ("gnn", "gnn_frozen_adj")
    parts = {"segmenter": (segmenter, not gnn_phase), "head": (head, phase in ("stage1", "stage3")),
             "gnn": (gnn, gnn_phase)}
    trainable = []
    for prefix, (module, on) in parts.items():
        if module is None:
            continue
        module.train(on)
        for name, p in module.named_parameters():
            p.requires_grad_(on)
            if on:
                trainable.append((f"{prefix}.{name}", p))
    if gnn is not None and phase == "gnn_frozen_adj":
        gnn.freeze_adjacency(True)
        trainable = [(n, p) for n, p in trainable if p is not gnn.adjacency]
    return trainable
