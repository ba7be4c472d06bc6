"""Bench: synth throughput, and the training loader (decode + transforms) versus plain PIL decoding.

Renders a synthetic world (``--preset``, default ``demo``) into a temporary folder, then, on the
same files of its training datasets, in this one run:

- synth: images/s of ``make_world`` (render + PNG write of images and labels);
- plain: images/s of ``PIL.Image.open(...).convert("RGB")`` + the label PNG into numpy, every
  training sample once;
- loader: images/s of the balanced training loader (generic adapter decode with its checks,
  random resize 0.5-2, crop with ignore padding and the 80% class-area constraint, colour jitter,
  flip, normalisation, collation), ``--workers`` worker processes;
- the ratio loader / plain (how much the transforms cost on top of decoding).

    OMP_NUM_THREADS=1 .venv/bin/python bench/data.py [--preset demo] [--iters 40] [--workers 0] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from uniseg_cli.data import open_dataset  # noqa: E402
from uniseg_cli.data.loader import make_train_loader  # noqa: E402
from uniseg_cli.data.synthetic import dataset_specs, make_world  # noqa: E402
from uniseg_cli.data.transforms import TrainTransformConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--iters", type=int, default=40, help="loader iterations to time")
    ap.add_argument("--per-dataset", type=int, default=4, help="images per dataset per batch")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = make_world(Path(tmp) / "world", seed=0, preset=a.preset)
        synth_s = time.perf_counter() - t0
        n_synth = sum(d["train"] + d["val"] for d in info["datasets"])

        adapters = [open_dataset(s) for s in dataset_specs(info) if s.role == "train"]
        samples = [s for ad in adapters for s in ad.samples("train")]
        t0 = time.perf_counter()
        for s in samples:
            with Image.open(s.image_path) as im:
                np.asarray(im.convert("RGB"))
            with Image.open(s.label_path) as im:
                np.asarray(im)
        plain_s = time.perf_counter() - t0

        cfg = TrainTransformConfig(crop_size=(a.crop, a.crop), scale_mode="ratio", ratio_range=(0.5, 2.0),
                                   cat_max_ratio=0.8, color_jitter=True, flip_prob=0.5)
        loader = make_train_loader(adapters, images_per_dataset=a.per_dataset, transform=cfg, seed=0,
                                   num_workers=a.workers)
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0 = time.perf_counter()
        n_loaded = 0
        for _ in range(a.iters):
            n_loaded += next(it)["image"].shape[0]
        loader_s = time.perf_counter() - t0

    res = {
        "preset": a.preset,
        "synth_images": n_synth,
        "synth_seconds": round(synth_s, 3),
        "synth_images_per_s": round(n_synth / synth_s, 1),
        "plain_pil_images_per_s": round(len(samples) / plain_s, 1),
        "loader_images_per_s": round(n_loaded / loader_s, 1),
        "loader_over_plain": round((n_loaded / loader_s) / (len(samples) / plain_s), 3),
        "loader_batch": n_loaded // a.iters,
        "crop": a.crop,
        "workers": a.workers,
    }
    if a.json:
        print(json.dumps(res))
        return
    print(f"synth ({a.preset}): {n_synth} images (+ labels) in {synth_s:.2f} s = {res['synth_images_per_s']} images/s")
    print(f"plain PIL decode (image + label): {res['plain_pil_images_per_s']} images/s over {len(samples)} samples")
    print(f"training loader (decode + checks + resize/crop/jitter/flip + normalise, {a.workers} workers, "
          f"batch {res['loader_batch']}, crop {a.crop}): {res['loader_images_per_s']} images/s")
    print(f"ratio loader / plain decode: {res['loader_over_plain']}")


if __name__ == "__main__":
    main()
