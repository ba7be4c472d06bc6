"""Training throughput and peak memory: stage 2 (GNN phase, SEG phase) and stage 3 versus stage 1.

Every configuration runs the real training engine (``Trainer``: AdamW, clipping, phase freezing,
AMP on CUDA) on the same backbone and the same fixed batch, with the real task modules:

- ``stage1``: segmenter + Multi-SegHead (``stages.stage1.Stage1Task``), everything trains;
- ``stage2-gnn``: segmenter frozen (eval), label GNN trains on the blended soft/hard loss + orthogonality,
  the mapping re-solved every ``--solve-every`` iterations (``training.unify.Stage2Hooks``);
- ``stage2-seg``: GNN frozen and not run, segmenter trains with fixed prototypes and mappings;
- ``stage3``: segmenter + trainable unified prototypes, no GNN.

Presets: ``demo`` (3 datasets of the synthetic world: 13/8/10 labels, N = 23, tiny backbone, D = 64,
384-d text features, GNN hidden 64, 64-px crops, 2 images per dataset) and ``paper`` (7 datasets with
448 labels, N = 231, D = 512, 4096-d features, hidden 2048; pick the backbone and crop with flags).

Figures: iterations/s and images/s over ``--iters`` timed iterations after ``--warmup``; on CPU the
rate uses process CPU time (robust on a shared machine; use ``--threads 1``) and the memory is the
peak RSS growth of a fresh process per configuration over its state before training; on CUDA wall
time after synchronisation and ``torch.cuda.max_memory_allocated``. Ratios are taken against
``stage1`` measured in the same run.

Usage:
    python bench/train.py [--preset demo|paper] [--backbone tiny] [--crop 64] [--images-per-dataset 2]
                          [--iters 20] [--warmup 3] [--device cpu] [--threads 1] [--json]
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing as mp
import resource
import sys
import time

import numpy as np
import torch

PRESETS = {
    "demo": dict(sizes=[13, 8, 10], nodes=23, embed_dim=64, feat_dim=384, gnn_hidden=64, backbone="tiny", crop=64, k=2),
    "paper": dict(sizes=[19, 64, 37, 19, 26, 150, 133], nodes=231, embed_dim=512, feat_dim=4096, gnn_hidden=2048,
                  backbone="hrnet_w48", crop=768, k=3),
}
CONFIGS = ["stage1", "stage2-gnn", "stage2-seg", "stage3"]


def _mappings(sizes, n_nodes, rng):
    """Every label one own node; remaining nodes spread over datasets (a plausible mid-training mapping)."""
    out = []
    for n in sizes:
        m = np.zeros((n, n_nodes), bool)
        nodes = rng.permutation(n_nodes)
        m[np.arange(n), nodes[:n]] = True
        extra = nodes[n:][rng.random(n_nodes - n) < 0.3]
        m[rng.integers(0, n, extra.size), extra] = True
        out.append(m)
    return out


def calibrate_bn(seg: torch.nn.Module, images: torch.Tensor, device) -> None:
    """Running BatchNorm statistics from a no-grad pass, as a segmenter trained in stage 1 has them.

    Stage 2's GNN phase runs the segmenter frozen in eval mode. Random-init, its running statistics are
    still 0 and 1, so HRNet's activations grow about tenfold per module (1e8 at stage 4) and overflow
    float16 under AMP.
    """
    bns = [m for m in seg.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    seg.to(device).train()
    with torch.no_grad():
        seg(images.to(device))
    for m in bns:
        m.momentum = 0.1


def build(config: str, a, device):
    """(task, phases, hooks, batch) for one configuration."""
    from uniseg_cli.models import GNNConfig, LabelGNN, MultiSegHead, SegmenterConfig, UniSegHead, build_segmenter
    from uniseg_cli.stages.stage1 import MultiHeadModel, Stage1Task
    from uniseg_cli.taxonomy.solver import MappingSolver
    from uniseg_cli.training.engine import Phase
    from uniseg_cli.training.unify import GNN, SEG, Stage2Hooks, UnifiedTask, stage3_phases

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sizes, n_nodes, D = a.sizes, a.nodes, a.embed_dim
    seg = build_segmenter(SegmenterConfig(backbone=a.backbone, embed_dim=D))
    k, c = a.images_per_dataset, a.crop
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(k * len(sizes), 3, c, c, generator=g),
             "label": torch.cat([torch.randint(-1, n, (k, c, c), generator=g) for n in sizes]),
             "dataset": torch.arange(len(sizes)).repeat_interleave(k)}
    ohem = {"thresh": 0.7, "min_kept_ratio": 1 / 16}
    if config == "stage1":
        task = Stage1Task(MultiHeadModel(seg, MultiSegHead(sizes, D)), [str(i) for i in range(len(sizes))],
                          [1.0] * len(sizes), 0.7, 1 / 16)
        return task, [Phase("stage1", a.warmup + a.iters)], None, batch
    maps = _mappings(sizes, n_nodes, rng)
    head = UniSegHead(n_nodes, D, maps)
    gnn = None
    if config.startswith("stage2"):
        feats = torch.randn(sum(sizes), a.feat_dim, generator=g)
        gnn = LabelGNN(GNNConfig(hidden=a.gnn_hidden, out_dim=D), feats, sizes, n_nodes, init_mapping=maps)
    task = UnifiedTask(seg, head, gnn, [1.0] * len(sizes), ohem=ohem)
    if config == "stage2-gnn":
        from uniseg_cli.taxonomy.solver import SolverConfig

        calibrate_bn(seg, batch["image"], device)

        hooks = Stage2Hooks(task, MappingSolver(SolverConfig()), a.solve_every)
        ph = Phase("gnn", a.warmup + a.iters, train=("gnn",), eval_modules=("segmenter",),
                   meta=(("kind", GNN), ("ramp", 10 ** 9)))  # inside the ramp: both soft and hard terms
        return task, [ph], hooks, batch
    if config == "stage2-seg":
        hooks = Stage2Hooks(task, MappingSolver(), a.solve_every)
        return task, [Phase("seg", a.warmup + a.iters, train=("segmenter",), eval_modules=("gnn",), meta=(("kind", SEG),))], hooks, batch
    head.prototypes.requires_grad_(True)
    return task, stage3_phases(a.warmup + a.iters, None), None, batch


def measure(config: str, a) -> dict:
    """Run one configuration; returns its rate and memory."""
    from uniseg_cli.training.engine import Hooks, OptimConfig, Trainer
    from uniseg_cli.training.distributed import DistContext

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    task, phases, hooks, batch = build(config, a, device)
    marks = {}

    class Clock(Hooks):
        def on_phase_start(self, trainer, info):
            if hooks:
                hooks.on_phase_start(trainer, info)

        def after_step(self, trainer, info, losses):
            if hooks:
                hooks.after_step(trainer, info, losses)
            if info.iteration + 1 == a.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                marks["t0"] = (time.perf_counter(), time.process_time())
    trainer = Trainer(task, phases, OptimConfig(lr=1e-4, warmup_iters=0), batches=lambda s: itertools.repeat(batch),
                      dist=DistContext(device=device), hooks=Clock(), progress=False, log_every=10 ** 9)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - marks["t0"][0], time.process_time() - marks["t0"][1]
    secs = wall if device.type == "cuda" else cpu
    out = {"config": config, "its_per_s": a.iters / secs, "images_per_s": a.iters * batch["image"].shape[0] / secs,
           "wall_its_per_s": a.iters / wall}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # KiB on Linux
    return out


def _child(config, a, q):
    q.put(measure(config, a))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--backbone")
    ap.add_argument("--crop", type=int)
    ap.add_argument("--images-per-dataset", type=int)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--solve-every", type=int, default=101)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=CONFIGS,
                    help="which configurations to run (the first is the ratios' baseline)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    pre = PRESETS[a.preset]
    a.sizes, a.nodes, a.embed_dim, a.feat_dim, a.gnn_hidden = pre["sizes"], pre["nodes"], pre["embed_dim"], pre["feat_dim"], pre["gnn_hidden"]
    a.backbone = a.backbone or pre["backbone"]
    a.crop = a.crop or pre["crop"]
    a.images_per_dataset = a.images_per_dataset or pre["k"]
    results = []
    for config in a.configs:
        if a.device.startswith("cuda"):
            try:
                results.append(measure(config, a))
            except torch.cuda.OutOfMemoryError as e:  # report it and go on with the next configuration
                results.append({"config": config, "error": f"CUDA out of memory: {str(e).splitlines()[0]}"})
            gc.collect()
            torch.cuda.empty_cache()
        else:  # a fresh process per configuration, so each peak RSS is its own
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            pr = ctx.Process(target=_child, args=(config, a, q))
            pr.start()
            results.append(q.get())
            pr.join()
    base = results[0]
    for r in results:
        if "error" in r or "error" in base:
            continue
        r["speed_ratio_vs_stage1"] = r["its_per_s"] / base["its_per_s"]
        r["memory_ratio_vs_stage1"] = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
    report = {"preset": a.preset, "backbone": a.backbone, "crop": a.crop, "images_per_dataset": a.images_per_dataset,
              "datasets": len(a.sizes), "labels": sum(a.sizes), "nodes": a.nodes, "device": a.device,
              "threads": a.threads, "iters": a.iters, "results": results}
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"# {a.preset}: {a.backbone}, {len(a.sizes)} datasets x {a.images_per_dataset} images of {a.crop}px, "
              f"{sum(a.sizes)} labels, N={a.nodes}, {a.device}, {a.iters} timed iterations")
        print(f"{'config':<12} {'it/s':>8} {'img/s':>8} {'peak MB':>9} {'speed/stage1':>13} {'mem/stage1':>11}")
        for r in results:
            if "error" in r or "speed_ratio_vs_stage1" not in r:
                print(f"{r['config']:<12} {r.get('error') or r}")
                continue
            print(f"{r['config']:<12} {r['its_per_s']:8.2f} {r['images_per_s']:8.1f} {r['peak_mb']:9.1f} "
                  f"{r['speed_ratio_vs_stage1']:13.2f} {r['memory_ratio_vs_stage1']:11.2f}")
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)
