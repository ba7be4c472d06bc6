"""Diagnostic: which signals could tell a true label relation from a false one (docs/quality.md).

For a node-estimate artifact (its stage-1 Multi-SegHead and held-out confusion) and the world's
truth, this prints, for every pair of labels of different training datasets that is related in the
truth or that some signal links, five signals in both directions:

- ``conf``: the held-out argmax confusion rate (dataset a's pixels of label x that head b calls y),
  what Appendix B and the public code use;
- ``knn``: the share of x's held-out pixels whose k nearest pixels of dataset b (in the stage-1
  embedding) mostly carry label y *and* lie closer than x's nearest pixels of another label of
  its own dataset and within ``--spread`` times its own label's spread (an out-of-distribution
  test: a pixel that b has nothing like counts for no label; estimate-nodes' transfer, evidence.py);
- ``rand``: the same with the embedding of an untrained copy of the backbone (a generic feature the
  label losses never shaped), or with ``--generic artifact`` the node-estimate's appearance encoder
  (estimate-nodes ``generic_iters``, trained on the images without labels);
- ``cent``: the cosine of the two labels' mean embeddings (the ``min_centroid_cos`` gate);
- ``text``: the cosine of the two labels' description features (a label-features artifact).

and, per signal, the best accuracy any single threshold reaches at separating the true from the
false pairs, on the pair's weaker and on its stronger direction (1.0 = the signal alone decides
every relation of this world; estimate-nodes' gate reads the stronger direction).

    OMP_NUM_THREADS=1 .venv/bin/python bench/cross_domain.py [--pipeline pipeline.yaml]
        [--node-estimate DIR] [--features DIR] [--truth data/synth/truth.parquet] [--k 5] [--json]

The artifacts default to the newest of each kind under the pipeline's artifact root.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIGNALS = ("conf", "knn", "rand", "cent", "text")


@torch.no_grad()
def collect(model, data, max_side: int, seed: int = 0, generic: str | None = None) -> dict:
    """Per dataset: stage-1 embedding, untrained-backbone embedding and label of every labelled held-out pixel
    at the embedding's resolution (1/4)."""
    from uniseg_cli.models import build_segmenter, segmenter_config_from_dict
    from uniseg_cli.stages import stage1

    torch.manual_seed(seed)
    rand = build_segmenter(segmenter_config_from_dict(dict(model.segmenter.config.to_dict(), pretrained=False))).eval()
    if generic:  # a node-estimate artifact holding generic.json (estimate-nodes --generic-iters), or a state dict
        from uniseg_cli.training import checkpoint as C

        if Path(generic, "generic.json").is_file():
            tensors, _ = C.read_checkpoint(generic, "generic")
            rand.load_state_dict({k[len("segmenter."):]: v for k, v in tensors.items()})
        else:
            rand.load_state_dict(torch.load(generic, map_location="cpu"))
    model.eval()
    out = {}
    for d in data:
        emb, gen, lab = [], [], []
        for s in d.held_out:
            img, y = stage1._eval_pair(d, s, max_side)
            e = model.segmenter(img)
            h, w = e.shape[-2:]
            ys = torch.nn.functional.interpolate(y.reshape(1, 1, *y.shape[-2:]).float(), size=(h, w), mode="nearest")
            ys = ys.reshape(h, w).long()
            keep = (ys >= 0) & (ys < len(d.classes))
            emb.append(e[0].permute(1, 2, 0)[keep].numpy())
            gen.append(rand(img)[0].permute(1, 2, 0)[keep].numpy())
            lab.append(ys[keep].numpy())
        out[d.name] = {"knn": np.concatenate(emb), "rand": np.concatenate(gen), "label": np.concatenate(lab)}
    return out


def knn_shares(pix: dict, classes: dict, feature: str, k: int, spread: float) -> dict:
    """share[(a, b)][x, y] from :func:`uniseg_cli.taxonomy.evidence.transfer_shares` on one feature."""
    from uniseg_cli.taxonomy.evidence import transfer_shares

    names = list(pix)
    sh = transfer_shares([pix[n][feature] for n in names], [pix[n]["label"] for n in names],
                         [len(classes[n]) for n in names], k=k, spread=spread)
    return {(a, b): sh[i][j] for i, a in enumerate(names) for j, b in enumerate(names) if i != j}


def best_split(values: list[float], truth: list[bool]) -> float:
    """The best accuracy of ``value >= t`` as a predictor of ``truth`` over every threshold t."""
    v = np.asarray(values, float)
    t = np.asarray(truth, bool)
    best = max(t.mean(), 1 - t.mean())
    for thr in np.unique(v):
        best = max(best, float(((v >= thr) == t).mean()))
    return best


def main(argv=None) -> int:
    from uniseg_cli import artifacts as A
    from uniseg_cli.pipeline import load_pipeline
    from uniseg_cli.stages import stage1
    from uniseg_cli.stages.estimate_nodes import Params
    from uniseg_cli.taxonomy.clustering import rates_from_confusion
    from uniseg_cli.taxonomy.compare import relations
    from uniseg_cli.taxonomy.confusion import read_confusion
    from uniseg_cli.taxonomy.schema import read_taxonomy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default="pipeline.yaml")
    ap.add_argument("--node-estimate", default=None)
    ap.add_argument("--features", default=None)
    ap.add_argument("--truth", default=None, help="default: <synth out>/truth.parquet of the pipeline")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--spread", type=float, default=1.5, help="the transfer's class-spread limit (estimate-nodes generic_spread)")
    ap.add_argument("--link", type=float, default=0.05, help="a signal 'links' a pair when both directions reach this")
    ap.add_argument("--generic", default=None,
                    help="the 'rand' column's backbone: a state dict, or 'artifact' for the node-estimate's appearance "
                         "encoder (default: untrained)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    pipe = load_pipeline(args.pipeline)
    root = Path(pipe.artifacts or "artifacts")
    est = A.load_artifact(args.node_estimate) if args.node_estimate else A.latest_artifact(root, "node-estimate")
    feats_art = A.load_artifact(args.features) if args.features else A.latest_artifact(root, "label-features")
    if est is None:
        sys.exit(f"no node-estimate artifact under {root}: run `uniseg run {args.pipeline} --until estimate-nodes`")
    truth_path = Path(args.truth) if args.truth else pipe.truth
    if truth_path is None and pipe.synth:
        truth_path = pipe.base / pipe.synth["out"] / "truth.parquet"
    if truth_path is None or not truth_path.is_file():
        sys.exit("no truth taxonomy: pass --truth FILE")
    train = [d for d in pipe.datasets if d.role == "train"]
    data = stage1.open_datasets(train, Params(multihead=str(est.path / "multihead.json")))
    model = stage1.load_multihead(est.path / "multihead.json", data, torch.device("cpu"))
    classes = {d.name: list(d.classes) for d in data}
    names = list(classes)

    hist, _, _ = read_confusion(est.path / "confusion.h5")
    rates = rates_from_confusion(hist)
    generic = str(est.path) if args.generic == "artifact" else args.generic
    pix = collect(model, data, max_side=1200, generic=generic)
    knn = knn_shares(pix, classes, "knn", args.k, args.spread)
    rnd = knn_shares(pix, classes, "rand", args.k, args.spread)
    cent = {}
    for a in names:
        for x in range(len(classes[a])):
            m = pix[a]["label"] == x
            v = pix[a]["knn"][m].mean(0) if m.any() else np.zeros(pix[a]["knn"].shape[1])
            cent[(a, x)] = v / (np.linalg.norm(v) or 1.0)
    text = None
    if feats_art is not None:
        from uniseg_cli.stages.embed_labels import features_by_dataset, read_features

        f, rows = read_features(feats_art)
        if all(n in {r.dataset for r in rows} for n in names):
            by = features_by_dataset(f, rows, names)
            text = {(a, x): by[a][x] / (np.linalg.norm(by[a][x]) or 1.0) for a in names for x in range(len(classes[a]))}

    truth = read_taxonomy(truth_path)
    related = {frozenset(p) for p in relations(truth, names)}
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ia, ib = names.index(a), names.index(b)
            for x, xn in enumerate(classes[a]):
                for y, yn in enumerate(classes[b]):
                    sig = {
                        "conf": (rates[ia][ib][x, y], rates[ib][ia][y, x]),
                        "knn": (knn[(a, b)][x, y], knn[(b, a)][y, x]),
                        "rand": (rnd[(a, b)][x, y], rnd[(b, a)][y, x]),
                        "cent": (float(cent[(a, x)] @ cent[(b, y)]),) * 2,
                        "text": (float(text[(a, x)] @ text[(b, y)]),) * 2 if text else (float("nan"),) * 2,
                    }
                    true = frozenset({(a, xn), (b, yn)}) in related
                    linked = any(min(sig[s]) >= args.link for s in ("conf", "knn", "rand"))
                    if true or linked:
                        rows.append({"a": f"{a}:{xn}", "b": f"{b}:{yn}", "true": true,
                                     **{s: [round(float(v), 3) for v in sig[s]] for s in SIGNALS}})
    # one number per signal and direction rule: the pair's weaker / stronger direction (cos signals are symmetric)
    sep = {f"{s} {rule.__name__}": round(best_split([rule(r[s]) for r in rows], [r["true"] for r in rows]), 3)
           for s in SIGNALS for rule in (min, max) if not np.isnan(min(rows[0][s]))} if rows else {}
    if args.json:
        print(json.dumps({"node_estimate": str(est.path), "truth": str(truth_path), "pairs": rows,
                          "best_threshold_accuracy": sep}, indent=1))
        return 0
    print(f"node-estimate {est.path}\ntruth {truth_path}\n")
    w = max(len(r["a"]) + len(r["b"]) for r in rows) + 4
    print(f"{'pair':<{w}} {'truth':>5}  " + "  ".join(f"{s:>11}" for s in SIGNALS))
    for r in sorted(rows, key=lambda r: (not r["true"], r["a"], r["b"])):
        cells = []
        for s in SIGNALS:
            u, v = r[s]
            cells.append(f"{u:>11.2f}" if s in ("cent", "text") else f"{u:>5.2f}/{v:<5.2f}")
        print(f"{r['a'] + ' ~ ' + r['b']:<{w}} {'yes' if r['true'] else 'no':>5}  " + "  ".join(cells))
    print("\nbest accuracy of one threshold on the weaker (min) / stronger (max) direction, true vs false pairs:")
    print("  " + "  ".join(f"{s} {v:.3f}" for s, v in sep.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
