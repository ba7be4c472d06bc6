"""Shared fixtures for the train/evaluate tests: the tiny synthetic world and its upstream artifacts.

The upstream artifacts are real files in their real formats (published through ``artifacts.publish``):
``label-features`` (features.h5 via embed-labels' writer, deterministic pseudo-text features) and
``node-estimate`` (init_mapping.parquet in the taxonomy schema + a stage-1 ``multihead`` checkpoint
of a tiny segmenter in the engine's checkpoint format).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from uniseg_cli import artifacts as A
from uniseg_cli.data import open_dataset
from uniseg_cli.data.synthetic import dataset_specs, make_world

EMBED_DIM = 16


def world(root: Path, preset: str = "tiny", seed: int = 0) -> tuple[dict, list]:
    """Render (once) the synthetic world under ``root``; (info, train DatasetSpecs)."""
    root = Path(root)
    if not (root / "world.json").exists():
        info = make_world(root, seed=seed, preset=preset)
    else:
        info = json.loads((root / "world.json").read_text())
        for d in info["datasets"]:
            d["root"] = str(root / d["root"])
    return info, dataset_specs(info)


def identity_mappings(classes: dict[str, list[str]]) -> list[np.ndarray]:
    """One unified node per dataset label (no merges): the estimate-nodes result with nothing merged."""
    n = sum(len(c) for c in classes.values())
    out, off = [], 0
    for c in classes.values():
        m = np.zeros((len(c), n), bool)
        m[np.arange(len(c)), off + np.arange(len(c))] = True
        off += len(c)
        out.append(m)
    return out


def upstream(root: Path, specs) -> tuple[A.Artifact, A.Artifact]:
    """Publish a label-features and a node-estimate artifact for the train datasets of ``specs``."""
    from uniseg_cli.models import SegmenterConfig, build_segmenter
    from uniseg_cli.stages.embed_labels import FeatureRow, write_features
    from uniseg_cli.taxonomy.schema import Taxonomy, write_taxonomy
    from uniseg_cli.training.checkpoint import write_checkpoint

    train = [s for s in specs if s.role == "train"]
    classes = {s.name: list(open_dataset(s).label_space.classes) for s in train}
    rows = [FeatureRow(d, i, c, f"{d}/{c}") for d, cs in classes.items() for i, c in enumerate(cs)]
    rng = np.random.default_rng(7)
    # pseudo text features: a label's vector depends on its lower-cased name, so equal names agree
    vec = {}
    feats = np.stack([vec.setdefault(r.label.lower(), rng.normal(size=12)) for r in rows]).astype(np.float32)
    with A.publish(root, "label-features", {"fixture": "tiny"}) as st:
        write_features(st.dir / "features.h5", feats, rows, run_id=st.run_id, attrs={"encoder": "fixture"})
    feat_art = st.artifact
    maps = identity_mappings(classes)
    from uniseg_cli.models import MultiSegHead

    torch.manual_seed(0)
    cfg = SegmenterConfig(backbone="tiny", embed_dim=EMBED_DIM)
    seg = build_segmenter(cfg)
    head = MultiSegHead([len(c) for c in classes.values()], EMBED_DIM)
    with A.publish(root, "node-estimate", {"fixture": "tiny"}) as st:
        write_taxonomy(Taxonomy.from_mappings(dict(zip(classes, maps)), datasets=classes), st.dir / "init_mapping.parquet",
                       kind="node-estimate", run_id=st.run_id)
        # the stage-1 checkpoint exactly as stages/stage1.py::save_multihead writes it
        tensors = {f"model.segmenter.{k}": v for k, v in seg.state_dict().items()}
        tensors.update({f"model.head.{k}": v for k, v in head.state_dict().items()})
        write_checkpoint(st.dir, "multihead", tensors, {"kind": "multihead", "segmenter": cfg.to_dict(),
                                                        "num_classes": [len(c) for c in classes.values()],
                                                        "datasets": list(classes), "classes": classes, "train": {}})
    return feat_art, st.artifact


def tiny_params(**over):
    from uniseg_cli.stages.train import Params

    base = dict(gnn_iters=6, seg_iters=6, first_gnn_iters=4, num_phases=3, final_iters=6, prune_at=3, gnn_hidden=16,
                crop_size=32, solve_every=2, checkpoint_every=2, log_every=2, warmup_iters=2)
    base.update(over)
    return Params(**base)


def context(root: Path, specs, params, feat_art, est_art):
    from uniseg_cli.stages import StageContext, get_stage

    return StageContext(spec=get_stage("train"), params=params, inputs={"embed-labels": feat_art, "estimate-nodes": est_art},
                        datasets=list(specs), root=Path(root), argv=["uniseg", "train"])
