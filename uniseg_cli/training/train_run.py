"""The train stage's body: stage 2, the switch to stage 3, stage 3, final pixel shares, outputs.

Both stages are :class:`~uniseg_cli.training.engine.Trainer` runs with their own work directory
(``<work>/stage2``, ``<work>/stage3``). Re-running after an interruption: a finished stage 2 is
reloaded from its final checkpoint (including the solver's β EMA), the switch to stage 3 is
recomputed from it (deterministic), and stage 3 resumes from its own newest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from uniseg_cli.training.setup import TrainInputs, TrainingData, batch_source, held_out_pairs


@dataclasses.dataclass
class TrainResult:
    segmenter: torch.nn.Module
    head: torch.nn.Module
    soft: list[np.ndarray]  # S_d (n_d, N) at the end of stage 2
    stage3_init: list[np.ndarray]  # the boolean mappings stage 3 started with
    mappings: list[np.ndarray]  # final boolean mappings (after pruning)
    pixel_share: list[np.ndarray]  # final model, held-out images
    prune_hist: list[np.ndarray] | None
    summary: dict


def build_stage2(p, inputs: TrainInputs, device="cpu"):
    """(UnifiedTask with segmenter warm-started from stage 1, head, GNN from the initial mapping; MappingSolver)."""
    from uniseg_cli.models import GNNConfig, LabelGNN, UniSegHead, build_segmenter
    from uniseg_cli.taxonomy.solver import MappingSolver
    from uniseg_cli.training.unify import UnifiedTask

    torch.manual_seed(p.seed)
    seg = build_segmenter(dataclasses.replace(inputs.seg_config, pretrained=False))
    missing, unexpected = seg.load_state_dict(inputs.seg_state, strict=False)
    if missing or unexpected:
        from uniseg_cli.errors import ArtifactError

        raise ArtifactError(f"the stage-1 segmenter weights do not fit {inputs.seg_config} (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})", hint="rebuild with `uniseg estimate-nodes --force`.")
    D, N = inputs.seg_config.embed_dim, inputs.num_nodes
    sizes = [len(c) for c in inputs.classes.values()]
    gnn = LabelGNN(GNNConfig(hidden=p.gnn_hidden, out_dim=D, layers=p.gnn_layers, dropout=p.gnn_dropout,
                             temperature=p.adj_temperature, dataset_embedding=p.dataset_embedding),
                   torch.from_numpy(inputs.features), sizes, N, init_mapping=inputs.init_mappings)
    head = UniSegHead(N, D, inputs.init_mappings, label_logits=p.label_logits)
    names = list(inputs.classes)
    task = UnifiedTask(seg, head, gnn, [p.loss_weights.get(n, 1.0) for n in names], p.orth_weight,
                       p.orth_temperature, {"thresh": p.ohem_thresh, "min_kept_ratio": p.ohem_min_kept}, names)
    return task, MappingSolver(p.solver_config())


def to_stage3(task2, hooks2, p, names, maps=None):
    """The switch: a fresh solve (``maps``: these mappings instead) and the GNN's eval-mode prototypes (now
    trainable) in a new head; GNN dropped."""
    from uniseg_cli.models import UniSegHead
    from uniseg_cli.training.unify import UnifiedTask

    maps = hooks2.solve() if maps is None else [np.asarray(m, bool) for m in maps]
    protos = task2.gnn_prototypes_eval()
    head = UniSegHead(task2.head.num_nodes, protos.shape[1], maps, label_logits=p.label_logits).to(protos.device)
    head.set_prototypes(protos, trainable=True)
    task3 = UnifiedTask(task2.segmenter, head, None, [p.final_loss_weights.get(n, 1.0) for n in names],
                        ohem={"thresh": p.ohem_thresh, "min_kept_ratio": p.ohem_min_kept}, dataset_names=names)
    task3.unmapped_negatives = float(p.final_unmapped_negatives)
    return task3, maps


def train_all(p, inputs: TrainInputs, data: TrainingData, dist, work: Path, config: dict | None = None,
              progress: bool = True, until: dict | None = None) -> TrainResult:
    """Run (or resume) stage 2 and stage 3; every rank returns the same result.

    ``until``: {"stage2": it} or {"stage3": it} stops early there (checkpointed) — for tests and benchmarks.
    """
    from uniseg_cli.training.engine import Trainer
    from uniseg_cli.training.unify import Stage2Hooks, Stage3Hooks, stage2_phases, stage3_phases, unified_hist

    names = list(inputs.classes)
    batches = batch_source(data, p, dist)
    task2, solver = build_stage2(p, inputs)
    hooks2 = Stage2Hooks(task2, solver, p.solve_every)
    phases2 = stage2_phases(p.gnn_iters, p.seg_iters, p.first_gnn_iters, p.num_phases, p.start_with)
    common = dict(batches=batches, dist=dist, checkpoint_every=p.checkpoint_every, log_every=p.log_every, seed=p.seed,
                  config=config or {}, progress=progress)
    # num_phases 0 (or all phase lengths 0): no stage 2; stage 3 starts from the initial mapping
    t2 = Trainer(task2, phases2, p.optim(), stage="stage2", work_dir=Path(work) / "stage2", hooks=hooks2,
                 **common) if phases2 else None
    s2 = t2.run(until=(until or {}).get("stage2")) if t2 else {"iterations": 0}
    if until and "stage2" in until:
        return None
    soft = task2.soft_adjacency()
    task3, init_maps = to_stage3(task2, hooks2, p, names, None if t2 else inputs.init_mappings)
    del t2
    images = held_out_pairs(data, dist.rank, dist.world_size)
    hooks3 = Stage3Hooks(task3, images, p.prune_threshold, dist.device, p.amp, mode=p.prune_mode,
                         min_col_share=p.link_min_col_share, min_presence=p.link_min_presence,
                         cosine=p.link_cosine)
    phases3 = stage3_phases(p.final_iters, p.prune_at or None)
    t3 = Trainer(task3, phases3, p.optim(), stage="stage3", work_dir=Path(work) / "stage3", hooks=hooks3, **common)
    s3 = t3.run(until=(until or {}).get("stage3"))
    if until and "stage3" in until:
        return None
    sizes = [len(c) for c in inputs.classes.values()]
    final_hist = unified_hist(task3, images(), sizes, dist.device, p.amp)
    from uniseg_cli.training.unify import pixel_shares

    maps = [m.detach().cpu().numpy() > 0.5 for m in task3.head.mappings]
    active = np.zeros(inputs.num_nodes, bool)
    for m in maps:
        active |= m.any(axis=0)
    summary = {"num_nodes": inputs.num_nodes, "active_nodes": int(active.sum()),
               "edges": int(sum(m.sum() for m in maps)), "edges_before_pruning": int(sum(m.sum() for m in init_maps)),
               "stage2": {"iterations": t2_total(phases2), "phases": [f"{ph.name}:{ph.iters}" for ph in phases2],
                          "last": s2.get("last"), "solves": hooks2.solves},
               "stage3": {"iterations": p.final_iters, "pruned_at": p.prune_at or None, "last": s3.get("last")},
               "held_out": data.held_out_from, "world_size": dist.world_size}
    return TrainResult(task3.segmenter, task3.head, soft, init_maps, maps, pixel_shares(final_hist),
                       hooks3.prune_hist, summary)


def t2_total(phases) -> int:
    return int(sum(ph.iters for ph in phases))


def write_outputs(out: Path, result: TrainResult, inputs: TrainInputs, *, run_id: str, config: dict, work: Path) -> None:
    """model.safetensors/json, taxonomy_state.h5, metrics.jsonl, summary.json into the staging dir ``out``."""
    import h5py

    from uniseg_cli.stages.export_taxonomy import write_taxonomy_state
    from uniseg_cli.training.model_io import save_unified_model

    names = list(inputs.classes)
    save_unified_model(out, result.segmenter, result.head, inputs.classes, run_id=run_id, config=config,
                       extra={"sources": inputs.sources})
    path = out / "taxonomy_state.h5"
    write_taxonomy_state(path, inputs.classes, dict(zip(names, result.mappings)), dict(zip(names, result.soft)),
                         dict(zip(names, result.pixel_share)), run_id=run_id)
    with h5py.File(path, "a") as f:
        f.attrs["kind"] = "training"
        f.attrs["num_nodes"] = int(inputs.num_nodes)
        f.attrs["sources"] = json.dumps(inputs.sources)
        grp = f.create_group("stage3_init_mapping")
        for n, m in zip(names, result.stage3_init):
            grp.create_dataset(n, data=np.asarray(m, bool))
        if result.prune_hist is not None:
            grp = f.create_group("prune_hist")
            for n, h in zip(names, result.prune_hist):
                grp.create_dataset(n, data=np.asarray(h, np.int64))
    lines = []
    for stage in ("stage2", "stage3"):
        mp = Path(work) / stage / "metrics.jsonl"
        if mp.exists():
            lines += [ln for ln in mp.read_text().splitlines() if ln.strip()]
    (out / "metrics.jsonl").write_text("".join(ln + "\n" for ln in lines))
    (out / "summary.json").write_text(json.dumps(result.summary, indent=1, sort_keys=True, default=float) + "\n")
