"""Bench: what the second core buys the demo, side by side in one run.

The demo runs one thread per process (``make demo``), so on a 2-core machine one core would idle.
Two uses of it, each measured against the same stage without it, on the demo world and the demo
pipeline's own settings (``pipeline.yaml``; ``--scale`` shortens every iteration count alike):

- **estimate-nodes**: the appearance encoder trained in a second process beside stage 1
  (``generic_background: true``, the default) against after stage 1 (``false``);
- **train**: one data-loader worker process (``workers: 1``) against loading in the training
  process (``workers: 0``).

Each variant runs ``uniseg run --until STAGE --json`` in a fresh process with its own artifact
folder (train reuses one estimate-nodes artifact), and the figures are the stages' wall seconds.
Neither use may change a result: the bench checks that the encoder's tensors (and the trained
model's) are the same bytes either way and says so.

    .venv/bin/python bench/second_core.py [--scale 1.0] [--out bench-out/second-core] [--json]

On a busy machine the ratios move; only figures from one run compare.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCALED = {"estimate-nodes": ("iters", "generic_iters"), "train": ("gnn_iters", "seg_iters", "final_iters", "prune_at")}


def pipeline(world: Path, scale: float, estimate: dict, train: dict) -> dict:
    doc = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    doc.pop("synth", None)
    for d in doc["datasets"]:
        d["root"] = str(world / d["name"])
    stages = doc["stages"]
    for stage, keys in SCALED.items():
        for k in keys:
            if k in stages[stage]:
                stages[stage][k] = max(1, round(stages[stage][k] * scale))
    stages["estimate-nodes"].update(estimate)
    stages["train"].update(train)
    return doc


def run(pipe: dict, folder: Path, until: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pipeline-{until}.yaml"
    path.write_text(yaml.safe_dump(pipe, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", UNISEG_NO_PROGRESS="1")
    res = subprocess.run([sys.executable, "-m", "uniseg_cli", "run", str(path), "--until", until, "--json",
                          "--artifacts", str(folder / "artifacts")], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"uniseg run {path} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    stages = {s["stage"]: s for s in json.loads(res.stdout)["stages"]}
    return stages[until]


def sha(folder: str, name: str) -> str:
    return json.loads((Path(folder) / name).read_text())["tensors_sha256"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the demo's iteration counts by this")
    ap.add_argument("--out", type=Path, default=Path("bench-out/second-core"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.scale <= 0:
        ap.error("--scale must be > 0")
    from uniseg_cli.data.synthetic import make_world

    out = args.out.resolve()
    world = out / "world"
    if not (world / "world.json").exists():
        make_world(world, seed=0, preset="demo")
    for d in ("seq", "bg"):
        shutil.rmtree(out / d, ignore_errors=True)
    rows = {}
    seq = run(pipeline(world, args.scale, {"generic_background": False}, {}), out / "seq", "estimate-nodes")
    bg = run(pipeline(world, args.scale, {"generic_background": True}, {}), out / "bg", "estimate-nodes")
    rows["estimate-nodes"] = {"without": seq["seconds"], "with": bg["seconds"],
                              "identical": sha(seq["path"], "generic.json") == sha(bg["path"], "generic.json")}
    w0 = run(pipeline(world, args.scale, {}, {"workers": 0}), out / "bg", "train")
    w1 = run(pipeline(world, args.scale, {}, {"workers": 1}), out / "bg", "train")
    rows["train"] = {"without": w0["seconds"], "with": w1["seconds"],
                     "identical": sha(w0["path"], "model.json") == sha(w1["path"], "model.json")}
    for r in rows.values():
        r["ratio"] = round(r["without"] / r["with"], 2)
    if args.json:
        print(json.dumps({"scale": args.scale, "cores": os.cpu_count(), "stages": rows}, indent=1))
        return
    print(f"demo pipeline x {args.scale:g} iterations, one thread per process, {os.cpu_count()} cores")
    print(f"{'stage':<16}{'without (s)':>12}{'with (s)':>10}{'speed-up':>10}  same result")
    what = {"estimate-nodes": "encoder in a 2nd process", "train": "1 data-loader worker"}
    for stage, r in rows.items():
        print(f"{stage:<16}{r['without']:>12.1f}{r['with']:>10.1f}{r['ratio']:>9.2f}x  "
              f"{'yes' if r['identical'] else 'NO'}  ({what[stage]})")
    if not all(r["identical"] for r in rows.values()):
        raise SystemExit("a result changed with the second core")


if __name__ == "__main__":
    main()
