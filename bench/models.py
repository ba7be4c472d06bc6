"""Benchmarks of the model parts at the paper's sizes (7 datasets, 448 labels, N = 231 nodes).

(a) one training step (forward, backward, AdamW step) with UniSegHead vs Multi-SegHead on the same
    backbone and batch (target: ratio <= 1.10);
(b) one full mapping solve (UOT + discretisation for all 7 datasets; target <= 100 ms on 2 cores);
(c) label-GNN forward+backward (448 label nodes x 4096-d + 231 unified nodes, hidden 2048, D 512).

Usage:
    python bench/models.py [--backbone resnet18] [--size 64] [--device cpu] [--repeats 5] [--threads 1] [--only a|b|c]

Prints one line per figure; the ratio of (a) is measured in one run with interleaved repeats. On CPU the
step times are process CPU time (with ``--threads 1`` they do not depend on other jobs sharing the
machine); on CUDA they are wall time after synchronisation, under fp16 autocast.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from uniseg_cli.models import (GNN_PRESETS, LabelGNN, MultiSegHead, SegmenterConfig, UniSegHead, build_segmenter,
                               multi_dataset_ce)
from uniseg_cli.taxonomy.solver import MappingSolver

SIZES = [19, 64, 37, 19, 26, 150, 133]  # CS, MPL, SUN, BDD, IDD, ADE, COCO
N_NODES = 231


def paper_mapping(rng: np.random.Generator) -> list[np.ndarray]:
    """A plausible initial mapping: every label one own node, the rest spread over datasets."""
    out = []
    for n in SIZES:
        m = np.zeros((n, N_NODES), dtype=bool)
        nodes = rng.permutation(N_NODES)
        m[np.arange(n), nodes[:n]] = True
        extra = nodes[n:][rng.random(N_NODES - n) < 0.3]
        m[rng.integers(0, n, extra.size), extra] = True
        out.append(m)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clock(device: torch.device):
    """CPU time of this process on CPU (robust to other jobs on a shared machine), wall time on GPU."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def _kind(device: torch.device) -> str:
    return "wall" if device.type == "cuda" else "CPU"


def bench_heads(args, device: torch.device, mappings) -> None:
    torch.manual_seed(0)
    D = 512
    seg = build_segmenter(SegmenterConfig(backbone=args.backbone, embed_dim=D)).to(device)
    heads = {"multi": MultiSegHead(SIZES, D).to(device), "uni": UniSegHead(N_NODES, D, mappings).to(device)}
    opts = {k: torch.optim.AdamW(list(seg.parameters()) + list(h.parameters()), lr=1e-4) for k, h in heads.items()}
    B = len(SIZES) * args.per_dataset
    x = torch.randn(B, 3, args.size, args.size, device=device)
    dataset_idx = torch.arange(len(SIZES), device=device).repeat_interleave(args.per_dataset)
    y = torch.stack([torch.randint(0, SIZES[d], (args.size, args.size)) for d in dataset_idx.tolist()]).to(device)
    amp = device.type == "cuda"

    clock = _clock(device)

    def step(kind: str) -> float:
        _sync(device)
        t = clock()
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss, _ = multi_dataset_ce(heads[kind](seg(x), dataset_idx), y)
        opts[kind].zero_grad(set_to_none=True)
        loss.backward()
        opts[kind].step()
        _sync(device)
        return clock() - t

    for kind in heads:  # warm-up
        step(kind)
    times: dict[str, list[float]] = {"multi": [], "uni": []}
    for _ in range(args.repeats):
        for kind in ("multi", "uni"):
            times[kind].append(step(kind))
    tm, tu = min(times["multi"]), min(times["uni"])
    ratio_med = statistics.median(times["uni"]) / statistics.median(times["multi"])
    print(f"(a) train step, {args.backbone} {args.size}px, batch {B} ({args.per_dataset}/dataset), {device}, "
          f"{_kind(device)} time, best of {args.repeats}: Multi-SegHead {tm * 1e3:.1f} ms, "
          f"UniSegHead {tu * 1e3:.1f} ms, ratio {tu / tm:.3f} (median ratio {ratio_med:.3f}; target <= 1.10)")


def bench_solver(args, mappings) -> None:
    rng = np.random.default_rng(1)
    soft = []
    for m in mappings:  # GNN-like: initial 0/1 logits after some training noise
        logits = torch.as_tensor(m, dtype=torch.float64) + torch.as_tensor(rng.normal(0, 0.02, m.shape))
        soft.append(torch.softmax(logits / 0.07, dim=0).numpy())
    solver = MappingSolver()
    solver.solve(soft)
    times, cpu = [], []
    for _ in range(max(args.repeats, 5)):
        t, c = time.perf_counter(), time.process_time()
        out = solver.solve(soft)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    linked = sum(int(m.sum()) for m in out)
    print(f"(b) mapping solve, 7 datasets / 448 labels / {N_NODES} nodes: "
          f"wall median {statistics.median(times) * 1e3:.1f} ms, min {min(times) * 1e3:.1f} ms, "
          f"CPU time min {min(cpu) * 1e3:.1f} ms (target <= 100 ms; {linked} edges)")


def bench_gnn(args, device: torch.device, mappings) -> None:
    torch.manual_seed(0)
    feats = torch.randn(sum(SIZES), 4096)
    gnn = LabelGNN(GNN_PRESETS["paper"], feats, SIZES, N_NODES, init_mapping=mappings).to(device)
    gnn.train()
    times = []
    clock = _clock(device)
    for i in range(args.gnn_repeats + 1):
        _sync(device)
        t = clock()
        out = gnn()
        loss = out.prototypes.square().mean() + sum(s.square().mean() for s in out.soft)
        loss.backward()
        gnn.zero_grad(set_to_none=True)
        _sync(device)
        if i:
            times.append(clock() - t)
    params = sum(p.numel() for p in gnn.parameters())
    print(f"(c) GNN forward+backward, 448x4096 + {N_NODES} nodes, hidden 2048, D 512 ({params / 1e6:.1f} M params), "
          f"{device}: {_kind(device)} time, median {statistics.median(times) * 1e3:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--per-dataset", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gnn-repeats", type=int, default=3)
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    mappings = paper_mapping(np.random.default_rng(0))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    only = set(args.only or "abc")
    if "b" in only:
        bench_solver(args, mappings)
    if "a" in only:
        bench_heads(args, device, mappings)
    if "c" in only:
        bench_gnn(args, device, mappings)


if __name__ == "__main__":
    main()
