"""Bench: variants of the train stage (and of stage 1) on the demo world, scored as bench/quality.py scores.

Each variant is a JSON object of train-stage params laid over the demo pipeline's (``pipeline.yaml``);
a key ``_est`` holds estimate-nodes params to lay over the demo's. Every variant runs through the real
stages (describe-labels -> embed-labels -> estimate-nodes -> train -> export-taxonomy), reusing any
artifact of the same recipe under ``--out``, and prints one line per variant: the taxonomy against the
world's truth, mIoU (%) per training dataset in its own label space, and mean mIoU on the held-out
dataset through the unseen protocol.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_variants.py '{}' '{"lr": 0.01}' \\
        '{"label_logits": "sum"}' '{"_est": {"iters": 3000}, "final_iters": 2200, "prune_at": 1100}' \\
        [--out bench-out/quality] [--world default|anonymized] [--seed 0] [--preset quality] [--backbone tiny-wide] [--language] [--same-trainer] [--identity]

``--language`` also trains the language-only merge (bench/quality.py's) with each variant's train params,
from the same stage-1 model, and prints its line beside uniseg's: a variant that helps both is no lead.
``--same-trainer`` also trains the language-only baseline's trainer (fixed mapping, no stage 2) with
uniseg's own initial mapping: against ``--language`` it separates the mapping from the training.
``--identity`` trains that trainer with one node per label (no merges at all): Multi-SegHead's label
spaces through stage 3's schedule, which separates the schedule (stage 1, then a restart) from the taxonomy.

With ``--out`` shared with bench/quality.py the demo's own artifacts are reused. About 2-4 min per train
variant on 2 cores (plus stage 1 and the appearance encoder, about 4 min, when ``_est`` changes them).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import Method, language_taxonomy, score, taxonomy_scores, world  # noqa: E402
import quality_models  # noqa: E402
from quality_models import (demo_budget, demo_sections, run_stage, split_budget, train_fixed_mapping,  # noqa: E402
                            uniseg_model)

from uniseg_cli.data.synthetic import PRESETS  # noqa: E402
from uniseg_cli.taxonomy.schema import Taxonomy, read_taxonomy  # noqa: E402


def run_variant(out: Path, anonymize: bool, over: dict, seed: int = 0, language: bool = False,
                same_trainer: bool = False, preset: str = "quality", identity: bool = False) -> dict:
    info, train_specs, unseen_specs = world(out, preset, seed, anonymize)
    specs = [*train_specs, *unseen_specs]
    root = out / "artifacts"
    st = demo_sections()
    est, tr = split_budget(demo_budget())
    est.update(over.get("_est", {}))
    tr.update({k: v for k, v in over.items() if k != "_est"})
    t0 = time.time()
    desc = run_stage("describe-labels", root, specs, st.get("describe-labels", {}))
    feats = run_stage("embed-labels", root, specs, st.get("embed-labels", {}), {"describe-labels": desc})
    nodes = run_stage("estimate-nodes", root, specs, est)
    train = run_stage("train", root, specs, tr, {"embed-labels": feats, "estimate-nodes": nodes})
    tax = run_stage("export-taxonomy", root, [], st.get("export-taxonomy", {}), {"train": train})
    truth = read_taxonomy(info["truth"]).restrict([s.name for s in train_specs])
    t = taxonomy_scores(read_taxonomy(tax.path / "taxonomy.parquet"), truth)
    r = score(Method("uniseg", {"uniseg": uniseg_model(train)}), train_specs, unseen_specs)
    row = {"variant": over, "train": str(train.path),
           "seconds": round(time.time() - t0, 1), "f1": round(t["f1"], 3), "hard_recall": t["hard_recall"],
           "nodes": t["nodes"], "own": r["table2"], "held_out": r["table3_unseen_mean"],
           "held_out_by_dataset": r["table3_unseen_by_dataset"]}
    arts = {"estimate-nodes": nodes, "train_iters": demo_budget() - int(est.get("iters", 300))}
    fixed = {}
    if language:
        fixed["language"] = language_taxonomy(feats, train_specs, truth)[0]
    if same_trainer:
        fixed["same-trainer"] = read_taxonomy(nodes.path / "init_mapping.parquet")
    if identity:
        classes = {n: list(truth.datasets[n]) for n in truth.datasets}
        sizes = [len(c) for c in classes.values()]
        offsets = np.cumsum([0, *sizes])
        maps = {n: np.eye(offsets[-1], dtype=bool)[offsets[k]:offsets[k + 1]] for k, n in enumerate(classes)}
        fixed["identity"] = Taxonomy.from_mappings(maps, datasets=classes)
    for name, tax in fixed.items():
        t0 = time.time()
        model = train_fixed_mapping(root, train_specs, tax, demo_budget(), arts,
                                    {k: v for k, v in over.items() if k != "_est"})
        lr = score(Method(name, {name: model}), train_specs, unseen_specs)
        lt = taxonomy_scores(tax, truth)
        row[name] = {"seconds": round(time.time() - t0, 1), "f1": round(lt["f1"], 3),
                     "hard_recall": lt["hard_recall"], "nodes": lt["nodes"], "own": lr["table2"],
                     "held_out": lr["table3_unseen_mean"], "held_out_by_dataset": lr["table3_unseen_by_dataset"]}
    return row


def _line(r: dict, where: str) -> str:
    own = ", ".join(f"{k} {v:.1f}" for k, v in r["own"].items())
    each = ", ".join(f"{k} {v:.2f}" for k, v in r["held_out_by_dataset"].items())
    return (f"F1 {r['f1']:.3f}, hard recall {r['hard_recall']}, nodes {r['nodes']}; own space {own}; "
            f"held-out {r['held_out']:.2f} ({each})  ({r['seconds']} s{where})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="*", default=["{}"],
                    help="JSON objects of train params (key _est: estimate-nodes params); default: the demo as is")
    ap.add_argument("--out", default="bench-out/quality", help="world and artifacts (share with bench/quality.py)")
    ap.add_argument("--world", default="default", choices=("default", "anonymized"))
    ap.add_argument("--seed", type=int, default=0, help="world seed (the demo world is 0)")
    ap.add_argument("--preset", default="quality", choices=list(PRESETS),
                    help="world preset (quality: the demo world + a second held-out dataset, as bench/quality.py)")
    ap.add_argument("--backbone", default=None, help="segmentation backbone (default: the demo pipeline's, tiny)")
    ap.add_argument("--language", action="store_true", help="also train the language-only merge with each variant")
    ap.add_argument("--same-trainer", action="store_true",
                    help="also train the language-only trainer with uniseg's initial mapping")
    ap.add_argument("--identity", action="store_true",
                    help="also train that trainer with one node per label (Multi-SegHead's spaces, stage 3's schedule)")
    args = ap.parse_args()
    quality_models.use_backbone(args.backbone)
    for text in args.variants:
        try:
            over = json.loads(text)
        except ValueError as e:
            ap.error(f"variant {text!r} is not JSON ({e})")
        if not isinstance(over, dict):
            ap.error(f"variant {text!r} must be a JSON object")
        r = run_variant(Path(args.out), args.world == "anonymized", over, args.seed, args.language, args.same_trainer,
                        args.preset, args.identity)
        print(f"{json.dumps(over)}: uniseg {_line(r, ', ' + r['train'])}", flush=True)
        for key, label in (("language", "language-only"), ("same-trainer", "language-only trainer, uniseg's mapping"),
                           ("identity", "the same trainer, one node per label")):
            if key in r:
                print(f"{json.dumps(over)}: {label} {_line(r[key], '')}", flush=True)


if __name__ == "__main__":
    main()
