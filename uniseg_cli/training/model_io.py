"""The trained model on disk (``model.safetensors`` + ``model.json``) and back, with no code execution.

``training/<run>/model.json`` is a :mod:`~uniseg_cli.training.checkpoint` JSON (schema
``uniseg.checkpoint/1``) whose ``model`` entry says how to rebuild the network::

    {"model": {"schema": "uniseg.model/1", "kind": "unified",
               "segmenter": {SegmenterConfig fields}, "num_nodes": N, "embed_dim": D,
               "label_logits": "sum" or "logsumexp",   # absent in older models: sum
               "datasets": [[name, [class names, in id order]], ...],   # training datasets, in order
               "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},   # 0..255 RGB
     "config": {resolved train params}, "run_id": "...", ...}

and ``model.safetensors`` holds ``segmenter.*`` (backbone + projection head) and ``head.prototypes``
(N, D) and ``head.mapping_<d>`` (n_d, N) — the final, pruned boolean mappings in dataset order.

:func:`load_unified_model` rebuilds it (``predict`` and ``evaluate`` use it)::

    m = load_unified_model("artifacts/training/0a1b2c3d4e5f", device="cpu")
    z = m.unified_logits(images)          # (B, N, H/4, W/4)
    s = m.dataset_logits(images, "citydrive")   # (B, n_d, H/4, W/4) from z through M_d
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from uniseg_cli.errors import ArtifactError
from uniseg_cli.training.checkpoint import read_checkpoint, write_checkpoint

MODEL_SCHEMA = "uniseg.model/1"
MODEL_STEM = "model"
NORM_MEAN = (123.675, 116.28, 103.53)
NORM_STD = (58.395, 57.12, 57.375)


class UnifiedModel(nn.Module):
    """A trained segmenter + UniSegHead, with the datasets it was trained on.

    Shapes:
        - unified_logits(images (B, 3, H, W)) → (B, N, h, w)
        - dataset_logits(images, name) → (B, n_d, h, w)
    """

    def __init__(self, segmenter: nn.Module, head: nn.Module, datasets: Mapping[str, Sequence[str]], meta: dict):
        super().__init__()
        self.segmenter, self.head = segmenter, head
        self.datasets = {k: list(v) for k, v in datasets.items()}
        self.meta = meta

    @property
    def num_nodes(self) -> int:
        return self.head.num_nodes

    def index(self, dataset: str) -> int:
        names = list(self.datasets)
        if dataset not in names:
            raise KeyError(dataset)
        return names.index(dataset)

    def unified_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.unified_logits(self.segmenter(images))

    def dataset_logits(self, images: torch.Tensor, dataset: str | int) -> torch.Tensor:
        d = dataset if isinstance(dataset, int) else self.index(dataset)
        return self.head.dataset_logits(self.segmenter(images), d)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unified_logits(images)


def save_unified_model(directory: str | Path, segmenter, head, datasets: Mapping[str, Sequence[str]], *,
                       run_id: str | None = None, config: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory``; returns the JSON path."""
    tensors = {f"segmenter.{k}": v for k, v in segmenter.state_dict().items()}
    tensors.update({f"head.{k}": v for k, v in head.state_dict().items()})
    seg_cfg = segmenter.config.to_dict() if hasattr(segmenter.config, "to_dict") else dataclasses.asdict(segmenter.config)
    meta = {"model": {"schema": MODEL_SCHEMA, "kind": "unified", "segmenter": seg_cfg,
                      "num_nodes": int(head.num_nodes), "embed_dim": int(head.prototypes.shape[1]),
                      "label_logits": head.label_logits,
                      "datasets": [[k, list(v)] for k, v in datasets.items()],  # a list: JSON keys get sorted
                      "mean": list(NORM_MEAN), "std": list(NORM_STD)},
            "run_id": run_id, "config": config or {}, **(extra or {})}
    return write_checkpoint(directory, MODEL_STEM, tensors, meta)


def _model_dir(src) -> Path:
    p = Path(getattr(src, "path", src))
    if p.is_file():
        p = p.parent
    return p


def load_unified_model(src, device: str | torch.device = "cpu") -> UnifiedModel:
    """Rebuild the model of a training artifact (its directory, an Artifact, or model.json)."""
    from uniseg_cli.models import SegmenterConfig, UniSegHead, build_segmenter
    from uniseg_cli.models.heads import LABEL_LOGITS

    d = _model_dir(src)
    tensors, meta = read_checkpoint(d, MODEL_STEM)
    m = meta.get("model") or {}
    hint = "rebuild it with `uniseg train --force`."
    if m.get("schema") != MODEL_SCHEMA or m.get("kind") != "unified":
        raise ArtifactError(f"{d / 'model.json'} does not describe a unified model (model.schema {m.get('schema')!r}, "
                            f"kind {m.get('kind')!r})", hint=hint)
    try:
        seg_cfg = SegmenterConfig(**{**m["segmenter"], "pretrained": False})
        datasets = {str(k): list(v) for k, v in m["datasets"]}
        n_nodes, sizes = int(m["num_nodes"]), [len(v) for v in datasets.values()]
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{d / 'model.json'}: bad model description ({e})", hint=hint) from None
    mode = m.get("label_logits", "sum")  # models written before the option existed summed
    if mode not in LABEL_LOGITS:
        raise ArtifactError(f"{d / 'model.json'}: model.label_logits {mode!r} is not one of {', '.join(LABEL_LOGITS)}",
                            hint=hint)
    seg = build_segmenter(seg_cfg)
    head = UniSegHead(n_nodes, seg_cfg.embed_dim, num_classes=sizes, label_logits=mode)
    model = UnifiedModel(seg, head, datasets, meta)
    state = {k: v for k, v in tensors.items() if k.startswith(("segmenter.", "head."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{d / 'model.safetensors'} does not fit its model.json (missing {list(missing)[:4]}, "
                            f"unexpected {list(unexpected)[:4]})", hint=hint)
    return model.to(device).eval()
