"""Models of bench/quality.py: the real stages with a small budget, and the language-only model.

Every model is trained through the project's own code (stages for uniseg, Multi-SegHead and the
single-dataset models; the training engine's stage-3 task for the language-only merge), on the
same backbone, crop and batch settings, and cached in the artifact root, so a re-run only scores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from quality_eval import SpaceModel

from uniseg_cli import artifacts as A
from uniseg_cli import stages as S
from uniseg_cli.pipeline import stage_context

#: The demo pipeline (pipeline.yaml at the repository root): its stage sections are the bench's params,
#: so a bench run at the demo's budget reuses the demo's artifacts (same recipe, same run ids).
DEMO_PIPELINE = Path(__file__).resolve().parent.parent / "pipeline.yaml"


#: The segmentation backbone of every method (None: the demo pipeline's); set by ``--backbone``.
BACKBONE: str | None = None


def use_backbone(name: str | None) -> None:
    """Give every method ``name`` as its segmentation backbone (None: the demo pipeline's)."""
    global BACKBONE
    BACKBONE = name or None


def demo_sections() -> dict:
    import yaml

    st = (yaml.safe_load(DEMO_PIPELINE.read_text()) or {}).get("stages", {})
    if BACKBONE:  # stage 1 builds the segmenter; the train stage and the baselines inherit it
        st.setdefault("estimate-nodes", {})["backbone"] = BACKBONE
    return st


def demo_budget() -> int:
    """Iterations of one uniseg model in the demo: stage 1 + stage 2 + stage 3."""
    st = demo_sections()
    t = st.get("train", {})
    n, start = int(t.get("num_phases", 5)), t.get("start_with", "gnn")
    n_gnn = (n + 1) // 2 if start == "gnn" else n // 2
    stage2 = n_gnn * int(t.get("gnn_iters", 40)) + (n - n_gnn) * int(t.get("seg_iters", 40))
    return int(st.get("estimate-nodes", {}).get("iters", 300)) + stage2 + int(t.get("final_iters", 100))


def run_stage(name: str, root: Path, datasets: Sequence, flags: dict, inputs: dict | None = None) -> A.Artifact:
    """Run one stage through the stage protocol, reusing an existing artifact of the same recipe.

    Bench processes side by side under one ``--out`` share artifacts (the label text of every world is
    the same): while another process publishes the same run id this one waits, then reuses its result.
    """
    from uniseg_cli.errors import BusyError

    while True:
        ctx = stage_context(None, name, flags=flags, inputs=inputs or {}, datasets=list(datasets), root=Path(root),
                            force=False, argv=["bench/quality.py", name])
        try:
            art, _ = S.execute(ctx, skip_existing=True)
            return art
        except BusyError:
            time.sleep(5.0)


def split_budget(budget: int) -> tuple[dict, dict]:
    """(estimate-nodes flags, train flags): the demo's sections, iterations scaled to add up to ``budget``."""
    st = demo_sections()
    est, tr = dict(st.get("estimate-nodes", {})), dict(st.get("train", {}))
    if budget == demo_budget():
        return est, tr
    f = budget / demo_budget()
    est["iters"] = max(1, round(int(est.get("iters", 300)) * f))
    for k, default in (("gnn_iters", 40), ("seg_iters", 40), ("first_gnn_iters", 30)):
        tr[k] = max(1, round(int(tr.get(k, default)) * f))
    tr["first_gnn_iters"] = min(tr["first_gnn_iters"], tr["gnn_iters"])
    n, start = int(tr.get("num_phases", 5)), tr.get("start_with", "gnn")
    n_gnn = (n + 1) // 2 if start == "gnn" else n // 2
    tr["final_iters"] = budget - est["iters"] - n_gnn * tr["gnn_iters"] - (n - n_gnn) * tr["seg_iters"]
    if tr["final_iters"] < 2:
        raise ValueError(f"budget {budget} is too small for stage 1, stage 2 and stage 3")
    tr["prune_at"] = tr["final_iters"] // 2
    return est, tr


def uniseg_pipeline(root: Path, datasets, budget: int, train: bool = True) -> dict:
    """describe-labels -> embed-labels -> estimate-nodes -> train -> export-taxonomy; the artifacts by stage
    (``train=False``: the first three only)."""
    st = demo_sections()
    est, tr = split_budget(budget)
    out = {}
    out["describe-labels"] = run_stage("describe-labels", root, datasets, st.get("describe-labels", {}))
    out["embed-labels"] = run_stage("embed-labels", root, datasets, st.get("embed-labels", {}),
                                    {"describe-labels": out["describe-labels"]})
    out["estimate-nodes"] = run_stage("estimate-nodes", root, datasets, est)
    out["stage1_iters"] = int(est.get("iters", 300))
    out["train_iters"] = budget - out["stage1_iters"]
    if not train:
        return out
    out["train"] = run_stage("train", root, datasets, tr,
                             {"embed-labels": out["embed-labels"], "estimate-nodes": out["estimate-nodes"]})
    out["export-taxonomy"] = run_stage("export-taxonomy", root, [], st.get("export-taxonomy", {}),
                                       {"train": out["train"]})
    return out


def stage1_flags(iters: int) -> dict:
    """estimate-nodes flags of a baseline model trained for ``iters`` iterations (demo settings otherwise).

    A baseline uses only the stage-1 model, so it skips the appearance encoder (it would not change the model)."""
    flags = {**demo_sections().get("estimate-nodes", {}), "iters": iters}
    flags.update(generic_iters=0, min_generic_share=0.0, unions=False, grow_from_admissible=False,
                 channel_gain=0.0, channel_offset=0.0)  # the baselines as the paper trains them
    return flags


# --------------------------------------------------------------------------------------------- loaders


def _device() -> torch.device:
    from uniseg_cli.training.distributed import resolve_device

    return resolve_device("auto")


def multihead_model(art: A.Artifact) -> SpaceModel:
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


def train_fixed_mapping(root: Path, train_specs, tax, budget: int, arts: dict, over: dict | None = None) -> SpaceModel:
    """The language-only baseline: a UniSegHead with the given fixed mapping, trained like stage 3.

    Same budget as uniseg: it warm-starts from the same stage-1 segmenter (uniseg's estimate-nodes run)
    and trains segmenter and prototypes for the iterations uniseg spends in stages 2 and 3, mapping
    fixed, no GNN, no pruning, the train stage's other settings (``over``: train params laid over the
    demo's, as bench/train_variants.py lays them over uniseg's). Cached under
    ``<root>/bench-language/<hash>/``.
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
    iters = arts["train_iters"]
    train_flags = {**split_budget(budget)[1], **(over or {})}
    key = hashlib.sha256(json.dumps({"maps": [m.astype(int).tolist() for m in maps], "iters": iters,
                                     "stage1": arts["estimate-nodes"].run_id, "train": train_flags},
                                    sort_keys=True).encode()).hexdigest()[:12]
    out = Path(root) / "bench-language" / key
    if (out / "model.json").exists():
        return unified_space_model(load_unified_model(out, _device()))
    tr = {k: v for k, v in train_flags.items() if k in {f.name for f in dataclasses.fields(Params)}}
    p = dataclasses.replace(Params(**tr), final_iters=iters, prune_at=0, num_phases=0)
    seg_cfg, seg_state, _ = read_stage1_segmenter(arts["estimate-nodes"])
    torch.manual_seed(p.seed)
    seg = build_segmenter(dataclasses.replace(seg_cfg, pretrained=False))
    seg.load_state_dict(seg_state)
    head = UniSegHead(maps[0].shape[1], seg_cfg.embed_dim, maps, label_logits=p.label_logits)
    task = UnifiedTask(seg, head, None, [1.0] * len(names), ohem={"thresh": p.ohem_thresh, "min_kept_ratio": p.ohem_min_kept},
                       dataset_names=names)
    data = open_training_data(train_specs, p)
    dist = init_distributed(p.device)
    trainer = Trainer(task, stage3_phases(iters, None), p.optim(), batches=batch_source(data, p, dist), stage="language",
                      dist=dist, work_dir=out.parent / f".work-{key}", checkpoint_every=0, log_every=p.log_every,
                      seed=p.seed, config={"bench": "language-only", "key": key}, progress=False)
    trainer.run()
    save_unified_model(out, task.segmenter.eval(), task.head, {n: list(tax.datasets[n]) for n in names})
    return unified_space_model(load_unified_model(out, _device()))
