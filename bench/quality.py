"""Bench: the paper's Tables 2 and 3 on the synthetic world, for uniseg and three baselines.

On the same backbone and the same iteration budget ``B`` (training iterations of one model):

- **single**: one model per training dataset (estimate-nodes' stage-1 model trained on that dataset
  alone: a Multi-SegHead with one head), ``B`` iterations each;
- **multi-seghead**: the stage-1 Multi-SegHead model on all training datasets, ``B`` iterations;
- **language**: a language-only merge of the labels (text features clustered, no images:
  :func:`quality_eval.language_merge`, with the threshold that scores best against the truth, i.e.
  an upper bound of what names alone give), trained as a UniSegHead with that fixed mapping for
  ``B`` iterations;
- **uniseg**: the pipeline (describe-labels -> embed-labels -> estimate-nodes -> train ->
  export-taxonomy), its stage-1 + stage-2/3 iterations adding up to ``B``. The demo's appearance
  encoder (``generic_iters``, trained on the same images without labels) is not counted in ``B``:
  it trains no segmentation, and plays the part an ImageNet-pretrained backbone plays in the paper.

Reported per world (the default synthetic world and its ``--anonymize`` twin, where the label names
are meaningless codes):

- Table 2: mIoU (%) of every training dataset's validation split in its own label space;
- Table 3: mean mIoU (%) on the held-out datasets through the unseen protocol (min-cost many-to-one
  assignment on 1 - IoU fitted on a dataset's train split, scored on its val split), per held-out
  dataset, per label space (one number per single model / head) and the mean; and the same protocol
  on the training datasets. The preset ``quality`` (default) has two held-out datasets of different
  granularity, as the paper's Table 3 averages several: the CamVid-like ``camdrive`` (road includes
  its markings, curbs are sidewalk) and the WildDash-like ``wildroad`` (markings and guard rails are
  classes of their own). ``--preset demo`` scores camdrive alone;
- the taxonomy against the world's truth: pairwise F1 and hard-relation recall.

    OMP_NUM_THREADS=2 .venv/bin/python bench/quality.py [--budget 600] [--worlds default,anonymized]
        [--out bench-out/quality] [--preset quality] [--seed 0] [--json]

Targets (issue 8): uniseg taxonomy F1 >= 0.95 and hard-relation recall >= 0.8 on the default world,
F1 >= 0.9 on the anonymized one; uniseg's mean unseen mIoU above every baseline's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_eval import language_merge, merge_mappings, own_miou, space_hists, unseen_miou_pct  # noqa: E402
import quality_models  # noqa: E402
from quality_models import (  # noqa: E402
    demo_budget,
    multihead_model,
    run_stage,
    stage1_flags,
    train_fixed_mapping,
    uniseg_model,
    uniseg_pipeline,
)

from uniseg_cli.data import open_dataset  # noqa: E402
from uniseg_cli.data.synthetic import PRESETS, dataset_specs, make_world  # noqa: E402
from uniseg_cli.taxonomy.compare import compare  # noqa: E402
from uniseg_cli.taxonomy.schema import Taxonomy, read_taxonomy  # noqa: E402

THRESHOLDS = tuple(np.round(np.arange(0.30, 0.96, 0.05), 2))


@dataclasses.dataclass
class Method:
    name: str
    models: dict  # label-space family name -> SpaceModel
    taxonomy: Taxonomy | None = None
    seconds: float = 0.0
    note: str = ""


def world(out: Path, preset: str, seed: int, anonymize: bool) -> tuple[dict, list, list]:
    folder = out / f"world-{preset}-{seed}{'-anon' if anonymize else ''}"
    if (folder / "world.json").exists():
        info = json.loads((folder / "world.json").read_text())
        info["truth"] = str(folder / info["truth"])
        info["datasets"] = [dict(d, root=str(folder / d["root"])) for d in info["datasets"]]
    else:
        info = make_world(folder, seed=seed, preset=preset, anonymize=anonymize)
    specs = dataset_specs(info)
    return info, [s for s in specs if s.role == "train"], [s for s in specs if s.role == "unseen"]


def taxonomy_scores(tax: Taxonomy | None, truth: Taxonomy) -> dict:
    if tax is None:
        return {}
    c = compare(tax, truth)
    return {"f1": c["f1"], "precision": c["precision"], "recall": c["recall"], "hard_recall": c["hard_recall"],
            "nodes": c["nodes"]["a"], "true_nodes": c["nodes"]["b"]}


def language_taxonomy(features_art, train_specs, truth: Taxonomy) -> tuple[Taxonomy, float, list]:
    """The language-only merge at each threshold; the one with the best F1 against the truth."""
    from uniseg_cli.stages.embed_labels import features_by_dataset, read_features

    feats, rows = read_features(features_art)
    names = [s.name for s in train_specs]
    classes = {s.name: list(open_dataset(s).label_space.classes) for s in train_specs}
    sizes = [len(classes[n]) for n in names]
    by_ds = features_by_dataset(feats, rows, names)
    x = np.concatenate([by_ds[n] for n in names], axis=0)
    groups = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    best, grid = None, []
    for t in THRESHOLDS:
        maps = merge_mappings(language_merge(x, groups, float(t)), groups, names, sizes)
        tax = Taxonomy.from_mappings(maps, datasets=classes)
        f1 = compare(tax, truth)["f1"] or 0.0
        grid.append((float(t), round(f1, 4), tax.num_nodes))
        if best is None or f1 > best[1]:
            best = (tax, f1, float(t))
    return best[0], best[2], grid


def score(method: Method, train_specs, unseen_specs) -> dict:
    """Table 2 and Table 3 numbers of one method."""
    adapters = {s.name: open_dataset(s) for s in [*train_specs, *unseen_specs]}
    own, unseen, cross, by_ds = {}, {}, {}, {}
    for fam, model in method.models.items():
        # a unified model is scored on other datasets through its unified nodes (as the paper does);
        # a single / Multi-SegHead model through each of its heads (one label space each)
        spaces = ["unified"] if "unified" in model.spaces else list(model.spaces)
        key = {sp: (sp if fam == sp or sp == "unified" and fam == method.name else f"{fam}:{sp}") for sp in spaces}
        for s in train_specs:
            fit = space_hists(model, adapters[s.name], s.train_split, spaces)
            val = space_hists(model, adapters[s.name], s.val_split, sorted(set(spaces) | ({s.name} & set(model.spaces))))
            if s.name in val:  # own-space mIoU
                own[s.name] = own_miou(val[s.name])
            for sp in spaces:
                cross.setdefault(key[sp], []).append(unseen_miou_pct(fit[sp], val[sp]))
        for s in unseen_specs:
            fit = space_hists(model, adapters[s.name], s.train_split, spaces)
            val = space_hists(model, adapters[s.name], s.val_split, spaces)
            for sp in spaces:
                m = unseen_miou_pct(fit[sp], val[sp])
                unseen.setdefault(key[sp], []).append(m)
                by_ds.setdefault(s.name, []).append(m)
    per_unseen = {k: float(np.mean(v)) for k, v in unseen.items()}
    per_train = {k: float(np.mean(v)) for k, v in cross.items()}
    r2 = lambda v: round(float(v), 2)  # noqa: E731
    return {
        "table2": {**{k: r2(v) for k, v in own.items()}, "mean": r2(np.mean(list(own.values())))},
        "table3_unseen": {k: r2(v) for k, v in per_unseen.items()},
        "table3_unseen_mean": r2(np.mean(list(per_unseen.values()))),
        "table3_unseen_by_dataset": {k: r2(np.mean(v)) for k, v in by_ds.items()},
        "table3_train": {k: r2(v) for k, v in per_train.items()},
        "table3_train_mean": r2(np.mean(list(per_train.values()))),
    }


def run_world(args, anonymize: bool) -> dict:
    out = Path(args.out)
    root = Path(args.artifacts) if args.artifacts else out / "artifacts"
    info, train_specs, unseen_specs = world(out, args.preset, args.seed, anonymize)
    truth = read_taxonomy(info["truth"]).restrict([s.name for s in train_specs])
    budget = args.budget
    methods: list[Method] = []

    t0 = time.time()
    arts = uniseg_pipeline(root, [*train_specs, *unseen_specs], budget)
    tax = read_taxonomy(arts["export-taxonomy"].path / "taxonomy.parquet")
    methods.append(Method("uniseg", {"uniseg": uniseg_model(arts["train"])}, tax, time.time() - t0,
                          note=f"stage 1 {arts['stage1_iters']} + stages 2/3 {arts['train_iters']} iterations; "
                               f"picture {arts['export-taxonomy'].path / 'taxonomy.svg'}"))

    t0 = time.time()
    mh = run_stage("estimate-nodes", root, [*train_specs, *unseen_specs], stage1_flags(budget))
    methods.append(Method("multi-seghead", {"multi-seghead": multihead_model(mh)}, None, time.time() - t0))

    t0 = time.time()
    singles = {}
    for s in train_specs:
        singles[s.name] = multihead_model(run_stage("estimate-nodes", root, [s], stage1_flags(budget)))
    methods.append(Method("single", singles, None, time.time() - t0))

    t0 = time.time()
    lang_tax, thr, grid = language_taxonomy(arts["embed-labels"], train_specs, truth)
    lang_model = train_fixed_mapping(root, train_specs, lang_tax, budget, arts)
    methods.append(Method("language", {"language": lang_model}, lang_tax, time.time() - t0,
                          note=f"threshold {thr} (best F1 of {len(grid)} thresholds)"))

    rows = {}
    for m in methods:
        r = score(m, train_specs, unseen_specs)
        r["taxonomy"] = taxonomy_scores(m.taxonomy, truth)
        r["seconds"] = round(m.seconds, 1)
        r["note"] = m.note
        rows[m.name] = r
    return {"world": "anonymized" if anonymize else "default", "preset": args.preset, "seed": args.seed,
            "budget": budget, "truth_nodes": truth.num_nodes, "methods": rows, "language_grid": grid}


def report(res: dict) -> str:
    lines = [f"== world: {res['world']} (preset {res['preset']}, seed {res['seed']}, budget {res['budget']} iterations, "
             f"{res['truth_nodes']} true nodes) =="]
    ds = [k for k in next(iter(res["methods"].values()))["table2"] if k != "mean"]
    lines.append("Table 2, mIoU % per training dataset (own label space):")
    lines.append(f"  {'method':<14}" + "".join(f"{d:>12}" for d in ds) + f"{'mean':>10}")
    for name, r in res["methods"].items():
        t2 = r["table2"]
        lines.append(f"  {name:<14}" + "".join(f"{t2.get(d, float('nan')):>12.1f}" for d in ds) + f"{t2['mean']:>10.1f}")
    lines.append("Table 3, mean mIoU % through the unseen protocol (fit on train, score on val):")
    held = list(next(iter(res["methods"].values()))["table3_unseen_by_dataset"])
    lines.append(f"  {'method':<14}{'training ds':>12}{'held-out':>10}" + "".join(f"{d:>12}" for d in held)
                 + "   per label space (held-out)")
    for name, r in res["methods"].items():
        per = ", ".join(f"{k} {v:.1f}" for k, v in r["table3_unseen"].items())
        each = "".join(f"{r['table3_unseen_by_dataset'][d]:>12.1f}" for d in held)
        lines.append(f"  {name:<14}{r['table3_train_mean']:>12.1f}{r['table3_unseen_mean']:>10.1f}{each}   {per}")
    lines.append("Taxonomy against the truth:")
    for name, r in res["methods"].items():
        t = r["taxonomy"]
        if t:
            hr = "n/a" if t["hard_recall"] is None else f"{t['hard_recall']:.3f}"
            lines.append(f"  {name:<14} F1 {t['f1']:.3f}  precision {t['precision']:.3f}  recall {t['recall']:.3f}  "
                         f"hard-relation recall {hr}  nodes {t['nodes']} (true {t['true_nodes']})  {r['note']}")
    lines.append("Wall time per method (s): " + ", ".join(f"{n} {r['seconds']}" for n, r in res["methods"].items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench-out/quality", help="worlds and artifacts go here (reused across runs)")
    ap.add_argument("--preset", default="quality", choices=list(PRESETS),
                    help="synthetic world preset (quality: the demo world + a second held-out dataset; demo, tiny, bench)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=demo_budget(),
                    help="training iterations per model (default: the demo pipeline's, whose artifacts are then reused)")
    ap.add_argument("--artifacts", default=None, help="artifact root (default: OUT/artifacts); share it with `uniseg run`")
    ap.add_argument("--worlds", default="default,anonymized", help="default, anonymized or both (comma-separated)")
    ap.add_argument("--backbone", default=None,
                    help="segmentation backbone of every method (default: the demo pipeline's, tiny)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()
    quality_models.use_backbone(args.backbone)
    results = []
    t0 = time.time()
    for w in [w.strip() for w in args.worlds.split(",") if w.strip()]:
        if w not in ("default", "anonymized"):
            ap.error(f"--worlds: unknown world {w!r} (default, anonymized)")
        res = run_world(args, anonymize=(w == "anonymized"))
        results.append(res)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps({"results": results}, indent=1, default=float) + "\n")
        if not args.json:
            print(report(res), flush=True)
    if args.json:
        print(json.dumps({"results": results, "seconds": round(time.time() - t0, 1)}, default=float))
    else:
        print(f"total wall time: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
