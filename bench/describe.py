"""Bench: describe-labels with the openai provider against a local chat server with 100 ms latency.

The paper's 448 training labels (Cityscapes, Mapillary Vistas, SUN RGB-D, BDD100K, IDD, ADE20K,
COCO-panoptic) are written as generic datasets (labels.yaml only) and described through the real
stage, the real ``openai`` client and a real ``ThreadingHTTPServer`` on 127.0.0.1 that sleeps
``--latency`` seconds per request. Figures, all from this one run:

- wall time of the first run versus the sequential bound (labels × latency); target ≤ 1/8;
- HTTP requests sent by a re-run (``--force``, same cache); target 0.

    OMP_NUM_THREADS=1 .venv/bin/python bench/describe.py [--latency 0.1] [--concurrency 16] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.text.chat_server import ChatServer  # noqa: E402
from uniseg_cli import stages as S  # noqa: E402
from uniseg_cli.config import build_params  # noqa: E402
from uniseg_cli.data import labelspaces as L  # noqa: E402
from uniseg_cli.data.base import DatasetSpec  # noqa: E402
from uniseg_cli.data.generic import write_labels_yaml  # noqa: E402
from uniseg_cli.stages import describe_labels as D  # noqa: E402

PAPER = ["cityscapes", "mapillary_vistas_v1.2", "sunrgbd", "bdd100k", "idd", "ade20k", "coco_panoptic_133"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=None, help="default: the stage's default")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["UNISEG_CACHE"] = str(tmp / "cache")  # a fresh answer cache, never the user's
        datasets = []
        for name in PAPER:
            ls = L.get_label_space(name)
            write_labels_yaml(tmp / name, name, list(ls.classes), ls.ignore_index)
            datasets.append(DatasetSpec(name, str(tmp / name)))
        n_labels = sum(len(L.get_label_space(n).classes) for n in PAPER)
        with ChatServer(latency=a.latency) as srv:
            flags = {"provider": "openai", "model": srv.model, "base_url": srv.url}
            if a.concurrency:
                flags["concurrency"] = a.concurrency
            params = build_params(D.Params, flags)

            def run(force: bool):
                ctx = S.StageContext(spec=S.get_stage("describe-labels"), params=params, inputs={}, datasets=datasets,
                                     root=tmp / "artifacts", force=force)
                sent = len(srv.requests)
                t0 = time.perf_counter()
                art, _ = S.execute(ctx)
                return time.perf_counter() - t0, len(srv.requests) - sent, art

            wall1, req1, art = run(False)
            wall2, req2, _ = run(True)
            peak = srv.max_in_flight
            rows = len(D.read_descriptions(art))
    bound = n_labels * a.latency or float("nan")
    res = {
        "labels": n_labels, "latency_s": a.latency, "concurrency": params.concurrency,
        "first_run_s": round(wall1, 3), "sequential_bound_s": round(bound, 3),
        "wall_over_bound": round(wall1 / bound, 4), "target_wall_over_bound": 0.125,
        "first_run_requests": req1, "rerun_requests": req2, "rerun_s": round(wall2, 3),
        "peak_in_flight": peak, "rows": rows,
    }
    if a.json:
        print(json.dumps(res))
        return
    print(f"labels {n_labels}, latency {a.latency * 1000:.0f} ms, concurrency {params.concurrency} "
          f"(peak in flight {peak})")
    print(f"first run: {wall1:.2f} s for {req1} requests; sequential bound {bound:.1f} s; "
          f"ratio {wall1 / bound:.3f} (target <= 0.125) {'OK' if wall1 / bound <= 0.125 else 'MISSED'}")
    print(f"re-run:    {wall2:.2f} s, {req2} requests (target 0) {'OK' if req2 == 0 else 'MISSED'}")


if __name__ == "__main__":
    main()
