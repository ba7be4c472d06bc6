"""Models of bench/quality.py: the real stages with a small budget, and the language-only model.

Every model is trained through the project's own code (stages for uniseg, Multi-SegHead and the
single-dataset models; the training engine's stage-3 task for the language-only merge), on the
same backbone, crop and batch settings, and cached in the artifact root, so a re-run only scores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from quality_eval import SpaceModel

from uniseg_cli import artifacts as A
from uniseg_cli import stages as S
from uniseg_cli.pipeline import stage_context

#: The demo pipeline's stage-2/3 schedule (pipeline.yaml), scaled to the iterations left after stage 1.
DEMO_STAGE23 = {"gnn_iters": 40, "seg_iters": 40, "first_gnn_iters": 30, "num_phases": 5, "final_iters": 100}
COMMON = {"crop_size": 64, "images_per_dataset": 2, "device": "auto"}


def run_stage(name: str, root: Path, datasets: Sequence, flags: dict, inputs: dict | None = None) -> A.Artifact:
    """Run one stage through the stage protocol, reusing an existing artifact of the same recipe."""
    ctx = stage_context(None, name, flags=flags, inputs=inputs or {}, datasets=list(datasets), root=Path(root),
                        force=False, argv=["bench/quality.py", name])
    art, _ = S.execute(ctx, skip_existing=True)
    return art


def split_budget(budget: int) -> tuple[int, dict]:
    """(stage-1 iterations, train flags) whose iterations add up to ``budget``."""
    i1 = budget // 2
    i2 = budget - i1
    f = i2 / 300.0
    gnn, seg, first = max(1, round(40 * f)), max(1, round(40 * f)), max(1, round(30 * f))
    final = i2 - (3 * gnn + 2 * seg)
    if final < 1:
        raise ValueError(f"budget {budget} is too small for stage 2 and stage 3")
    return i1, {"gnn_iters": gnn, "seg_iters": seg, "first_gnn_iters": min(first, gnn), "num_phases": 5,
                "final_iters": final, "prune_at": final // 2}


def uniseg_pipeline(work: Path, root: Path, train_specs, unseen_specs, info: dict, budget: int, seed: int) -> dict:
    """describe-labels -> embed-labels -> estimate-nodes -> train -> export-taxonomy; the artifacts by stage."""
    ds = [*train_specs, *unseen_specs]
    i1, train_flags = split_budget(budget)
    out = {}
    out["describe-labels"] = run_stage("describe-labels", root, ds, {"provider": "template"})
    out["embed-labels"] = run_stage("embed-labels", root, ds, {"model": "minilm", "pooling": "mean"},
                                    {"describe-labels": out["describe-labels"]})
    out["estimate-nodes"] = run_stage("estimate-nodes", root, ds,
                                      {"iters": i1, "seed": seed, "checkpoint_every": 0, **COMMON})
    out["train"] = run_stage("train", root, ds, {**train_flags, "seed": seed, "checkpoint_every": 0, **COMMON},
                             {"embed-labels": out["embed-labels"], "estimate-nodes": out["estimate-nodes"]})
    out["export-taxonomy"] = run_stage("export-taxonomy", root, [], {"picture": True},
                                       {"train": out["train"]})
    out["stage1_iters"] = i1
    out["train_iters"] = budget - i1
    return out


def stage1_flags(iters: int, seed: int) -> dict:
    return {"iters": iters, "seed": seed, "checkpoint_every": 0, **COMMON}


# --------------------------------------------------------------------------------------------- loaders


def _device() -> torch.device:
    from uniseg_cli.training.distributed import resolve_device

    return resolve_device("auto")


def multihead_model(art: A.Artifact, specs) -> SpaceModel:
    """A stage-1 checkpoint (estimate-nodes) as one label space per head, named after its dataset."""
    from uniseg_cli.stages.stage1 import build_model
    from uniseg_cli.training.checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(art.path, "multihead")
    model = build_model(dict(meta["segmenter"], pretrained=False), meta["num_classes"])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    dev = _device()
    model = model.to(dev).eval()
    heads = {name: (n, (lambda emb, d=d: model.head.dataset_logits(emb, d)))
             for d, (name, n) in enumerate(zip(meta["datasets"], meta["num_classes"]))}
    return SpaceModel(model.segmenter, heads, str(dev))


def unified_space_model(model) -> SpaceModel:
    """A :class:`~uniseg_cli.training.model_io.UnifiedModel`: the unified nodes plus each dataset via M_d."""
    heads = {"unified": (model.num_nodes, model.head.unified_logits)}
    for d, (name, classes) in enumerate(model.datasets.items()):
        heads[name] = (len(classes), (lambda emb, d=d: model.head.dataset_logits(emb, d)))
    return SpaceModel(model.segmenter, heads, str(next(model.parameters()).device))


def uniseg_model(train_art: A.Artifact) -> SpaceModel:
    from uniseg_cli.training.model_io import load_unified_model

    return unified_space_model(load_unified_model(train_art, _device()))


# --------------------------------------------------------------------------------------------- language-only


def train_fixed_mapping(root: Path, train_specs, tax, budget: int, seed: int, arts: dict) -> SpaceModel:
    """The language-only baseline: a UniSegHead with the given fixed mapping, trained like stage 3.

    Same budget as uniseg: it warm-starts from the same stage-1 segmenter (``budget // 2`` iterations,
    uniseg's estimate-nodes run) and trains segmenter and prototypes for the other half, mapping fixed,
    no GNN, no pruning. Cached under ``<root>/bench-language/<hash>/``.
    """
    from uniseg_cli.models import UniSegHead, build_segmenter
    from uniseg_cli.stages.train import Params
    from uniseg_cli.training.distributed import init_distributed
    from uniseg_cli.training.engine import Trainer
    from uniseg_cli.training.model_io import load_unified_model, save_unified_model
    from uniseg_cli.training.setup import batch_source, open_training_data, read_stage1_segmenter
    from uniseg_cli.training.unify import UnifiedTask, stage3_phases

    names = [s.name for s in train_specs]
    maps = [np.asarray(tax.mapping(n), bool) for n in names]
    iters = budget - budget // 2
    key = hashlib.sha256(json.dumps({"maps": [m.astype(int).tolist() for m in maps], "iters": iters, "seed": seed,
                                     "stage1": arts["estimate-nodes"].run_id, **COMMON}).encode()).hexdigest()[:12]
    out = Path(root) / "bench-language" / key
    if (out / "model.json").exists():
        return unified_space_model(load_unified_model(out, _device()))
    p = Params(seed=seed, checkpoint_every=0, final_iters=iters, prune_at=0, **COMMON)
    seg_cfg, seg_state, _ = read_stage1_segmenter(arts["estimate-nodes"])
    torch.manual_seed(seed)
    seg = build_segmenter(dataclasses.replace(seg_cfg, pretrained=False))
    seg.load_state_dict(seg_state)
    head = UniSegHead(maps[0].shape[1], seg_cfg.embed_dim, maps)
    task = UnifiedTask(seg, head, None, [1.0] * len(names), ohem={"thresh": p.ohem_thresh, "min_kept_ratio": p.ohem_min_kept},
                       dataset_names=names)
    data = open_training_data(train_specs, p)
    dist = init_distributed(p.device)
    trainer = Trainer(task, stage3_phases(iters, None), p.optim(), batches=batch_source(data, p, dist), stage="language",
                      dist=dist, work_dir=out.parent / f".work-{key}", checkpoint_every=0, log_every=p.log_every,
                      seed=seed, config={"bench": "language-only", "key": key}, progress=False)
    trainer.run()
    save_unified_model(out, task.segmenter.eval(), task.head, {n: list(tax.datasets[n]) for n in names})
    return unified_space_model(load_unified_model(out, _device()))
