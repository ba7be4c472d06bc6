"""Bench: how steady the taxonomy is across synthetic worlds (world seeds x default/anonymized names).

One synthetic world is one draw: its colour casts, layouts and class sizes come from the world seed,
and a recipe tuned on seed 0 can fail on seed 1. This bench runs the demo pipeline's recipe
(``pipeline.yaml``: describe-labels -> embed-labels -> estimate-nodes -> train -> export-taxonomy,
through the real stages, reusing any artifact of the same recipe under ``--out``) on every world of
the sweep and scores against each world's truth:

- ``init``: estimate-nodes' initial mapping (stage 1 + the clustering), pairwise F1;
- ``final``: the exported taxonomy (after the GNN/UOT stages), pairwise F1 and hard-relation recall;
- with ``--language``: the language-only merge of the label names at its best threshold (no images).

It ends with, per world kind: the mean and the minimum of each figure and how many worlds reach the
issue's targets (F1 >= 0.95 and hard recall >= 0.8 on the default names, F1 >= 0.9 anonymized).

    OMP_NUM_THREADS=1 .venv/bin/python bench/worlds.py [--seeds 0-9] [--worlds default,anonymized]
        [--out bench-out/worlds] [--init-only] [--language] [--json]

7.5-14 min per world on 2 cores with two or three processes running (``--init-only`` skips the train
stage, a bit under half of that). Two processes with disjoint ``--seeds`` and the same ``--out`` share the 2
cores well.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import language_taxonomy, taxonomy_scores, world  # noqa: E402
import quality_models  # noqa: E402
from quality_models import demo_budget, uniseg_pipeline  # noqa: E402

from uniseg_cli.taxonomy.schema import read_taxonomy  # noqa: E402

TARGETS = {"default": {"f1": 0.95, "hard_recall": 0.8}, "anonymized": {"f1": 0.9}}


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7"`` -> [0, 1, 2, 3, 7] (sorted, no repeats)."""
    seeds: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"--seeds: {part!r} is not a seed or a range such as 0-9") from None
        if a < 0 or b < a:
            raise ValueError(f"--seeds: bad range {part!r} (seeds are >= 0, low-high)")
        seeds.update(range(a, b + 1))
    if not seeds:
        raise ValueError("--seeds: no seed given")
    return sorted(seeds)


def run_one(out: Path, seed: int, kind: str, init_only: bool, language: bool) -> dict:
    info, train_specs, unseen_specs = world(out, "demo", seed, kind == "anonymized")
    truth = read_taxonomy(info["truth"]).restrict([s.name for s in train_specs])
    t0 = time.time()
    arts = uniseg_pipeline(out / "artifacts", [*train_specs, *unseen_specs], demo_budget(), train=not init_only)
    row: dict = {"seed": seed, "world": kind}
    row["init"] = taxonomy_scores(read_taxonomy(arts["estimate-nodes"].path / "init_mapping.parquet"), truth)
    if not init_only:
        tax = arts["export-taxonomy"].path
        row["final"] = taxonomy_scores(read_taxonomy(tax / "taxonomy.parquet"), truth)
        row["picture"] = str(tax / "taxonomy.svg")
    if language:
        lang, thr, _ = language_taxonomy(arts["embed-labels"], train_specs, truth)
        row["language"] = dict(taxonomy_scores(lang, truth), threshold=thr)
    row["seconds"] = round(time.time() - t0, 1)
    return row


def summarize(rows: list[dict]) -> dict:
    """Per world kind and scored taxonomy: mean / min of F1 and hard recall, and worlds on target."""
    out: dict = {}
    for kind in sorted({r["world"] for r in rows}):
        mine = [r for r in rows if r["world"] == kind]
        target = TARGETS.get(kind, {})
        for what in ("init", "final", "language"):
            scored = [r[what] for r in mine if r.get(what)]
            if not scored:
                continue
            s: dict = {"worlds": len(scored)}
            for key in ("f1", "hard_recall"):
                vals = [float(x[key]) for x in scored if x.get(key) is not None]
                if vals:
                    s[key] = {"mean": round(float(np.mean(vals)), 3), "min": round(float(np.min(vals)), 3)}
            s["on_target"] = sum(all(x.get(k) is not None and x[k] >= v for k, v in target.items()
                                     if not (k == "hard_recall" and what == "init"))
                                 for x in scored)
            out.setdefault(kind, {})[what] = s
    return out


def fmt(row: dict) -> str:
    parts = [f"seed {row['seed']:>2} {row['world']:<10}"]
    for what in ("init", "final", "language"):
        t = row.get(what)
        if t:
            hr = "n/a" if t.get("hard_recall") is None else f"{t['hard_recall']:.2f}"
            parts.append(f"{what} F1 {t['f1']:.3f}" + ("" if what == "init" else f" hard {hr}"))
    parts.append(f"({row['seconds']} s)")
    return "  ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="world seeds: 0-9, 0,2,4 ... [0-9]")
    ap.add_argument("--worlds", default="default,anonymized", help="default, anonymized or both")
    ap.add_argument("--out", default="bench-out/worlds", help="worlds and artifacts (reused across runs)")
    ap.add_argument("--init-only", action="store_true", help="score only estimate-nodes' initial mapping")
    ap.add_argument("--language", action="store_true", help="also score the language-only merge")
    ap.add_argument("--backbone", default=None, help="segmentation backbone (default: the demo pipeline's, tiny)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = ap.parse_args()
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(str(e))
    kinds = [w.strip() for w in args.worlds.split(",") if w.strip()]
    for k in kinds:
        if k not in TARGETS:
            ap.error(f"--worlds: unknown world {k!r} (default, anonymized)")
    quality_models.use_backbone(args.backbone)
    out = Path(args.out)
    rows, t0 = [], time.time()
    for seed in seeds:
        for kind in kinds:
            row = run_one(out, seed, kind, args.init_only, args.language)
            rows.append(row)
            if not args.json:
                print(fmt(row), flush=True)
    summary = summarize(rows)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary, "seconds": round(time.time() - t0, 1)}))
        return
    for kind, per in summary.items():
        for what, s in per.items():
            f1, hr = s.get("f1", {}), s.get("hard_recall")
            line = f"{kind:<10} {what:<8} F1 mean {f1.get('mean', float('nan')):.3f} min {f1.get('min', float('nan')):.3f}"
            if hr and what != "init":
                line += f"; hard recall mean {hr['mean']:.3f} min {hr['min']:.3f}"
            print(line + f"; on target {s['on_target']}/{s['worlds']}")
    print(f"total wall time: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
