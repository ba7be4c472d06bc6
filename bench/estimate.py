"""Bench: Appendix-B node clustering time at the paper's size, and how it grows from 2 to 7 datasets.

The confusion is simulated (``uniseg_cli.taxonomy.confusion``): hidden universal classes, the
paper's label-space sizes (CS 19, MPL 64, SUN 37, BDD 19, IDD 26, ADE 150, COCO 133 = 448 labels),
Zipf-popular classes shared across datasets, 10 % coarse labels, per-label head accuracy
U(0.45, 0.95) and a 5 % accuracy drop on another dataset's images. A "stress" row relaxes the
thresholds so that every size fills its max_new_nodes cap: the worst case the caps allow.

    OMP_NUM_THREADS=2 .venv/bin/python bench/estimate.py [--repeats 3] [--seed 0] [--json]

Prints one line per setting: datasets, labels, candidates per size, N, median seconds (rates,
growth, selection, total); ratios within one run only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from uniseg_cli.taxonomy.clustering import ClusterParams, estimate_nodes
from uniseg_cli.taxonomy.confusion import random_world, simulate_confusion

PAPER_SIZES = [19, 64, 37, 19, 26, 150, 133]
PAPER_NAMES = ["cityscapes", "mapillary", "sunrgbd", "bdd", "idd", "ade20k", "coco"]


def bench(k: int, params: ClusterParams, repeats: int, seed: int, universal: int = 300) -> dict:
    rng = np.random.default_rng(seed)
    M = random_world(PAPER_SIZES, universal, rng)[:k]
    H = simulate_confusion(M, rng, shift=0.95)
    names = PAPER_NAMES[:k]
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = estimate_nodes(H, names, params)
        runs.append((time.perf_counter() - t0, res))
    total = statistics.median(t for t, _ in runs)
    res = runs[-1][1]
    return {
        "datasets": k,
        "labels": sum(PAPER_SIZES[:k]),
        "candidates": res.candidates_per_size,
        "clusters": len(res.clusters),
        "N": res.num_nodes,
        "status": res.mip_status,
        "seconds": round(total, 4),
        "phases": {key: round(statistics.median(r.timings[key] for _, r in runs), 4) for key in res.timings},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    estimate_nodes([[np.eye(2)]], ["warm"])  # import scipy/HiGHS once outside the timings

    rows = [dict(bench(k, ClusterParams(), args.repeats, args.seed), setting="defaults") for k in range(2, 8)]
    stress = ClusterParams(tau=1.0, pair_cost_threshold=0.5, extension_cost_threshold=2.0)
    rows += [dict(bench(k, stress, 1, args.seed, universal=160), setting="stress (caps full)") for k in (4, 7)]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'setting':<20}{'ds':>3}{'labels':>7}{'N':>5}{'clusters':>9}  {'candidates per size':<44}"
          f"{'growth s':>9}{'select s':>9}{'total s':>9}")
    for r in rows:
        cand = " ".join(f"{s}:{n}" for s, n in sorted(r["candidates"].items()))
        print(f"{r['setting']:<20}{r['datasets']:>3}{r['labels']:>7}{r['N']:>5}{r['clusters']:>9}  {cand:<44}"
              f"{r['phases']['growth_s']:>9.3f}{r['phases']['selection_s']:>9.3f}{r['seconds']:>9.3f}")
    paper = next(r for r in rows if r["datasets"] == 7 and r["setting"] == "defaults")
    print(f"paper size (7 datasets, 448 labels): {paper['seconds']:.3f} s, target < 60 s: "
          f"{'met' if paper['seconds'] < 60 else 'MISSED'}")


if __name__ == "__main__":
    main()
