"""Bench: describe-labels with the openai provider against a local chat server with 100 ms latency.

The paper's 448 training labels (Cityscapes, Mapillary Vistas, SUN RGB-D, BDD100K, IDD, ADE20K,
COCO-panoptic) are written as generic datasets (labels.yaml only) and described through the real
stage, the real ``openai`` client and a real ``ThreadingHTTPServer`` on 127.0.0.1 that sleeps
``--latency`` seconds per request. The server runs in its own process, as a real one would (so its
request parsing does not compete with the client for this process's GIL); ``--same-process`` runs it
in a thread instead. Figures, all from this one run:

- wall time of the first run versus the sequential bound (labels × latency); target ≤ 1/8;
- HTTP requests sent by a re-run (``--force``, same cache); target 0.

    OMP_NUM_THREADS=1 .venv/bin/python bench/describe.py [--latency 0.1] [--concurrency 16] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
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


class _Remote:
    """A ChatServer in a child process; ``stats()`` reads its counters over HTTP."""

    def __init__(self, latency: float):
        code = f"from tests.text.chat_server import serve_forever; serve_forever({latency!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                     cwd=str(Path(__file__).resolve().parents[1]))
        self.url = self.proc.stdout.readline().strip()

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class _Local(ChatServer):
    def stats(self) -> dict:
        return {"requests": len(self.requests), "max_in_flight": self.max_in_flight}


def server(latency: float, same_process: bool):
    return _Local(latency=latency) if same_process else _Remote(latency)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=None, help="default: the stage's default")
    ap.add_argument("--same-process", action="store_true", help="serve from a thread of this process")
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
        with server(a.latency, a.same_process) as srv:
            flags = {"provider": "openai", "model": "tiny-llm", "base_url": srv.url}
            if a.concurrency:
                flags["concurrency"] = a.concurrency
            params = build_params(D.Params, flags)

            def run(force: bool):
                ctx = S.StageContext(spec=S.get_stage("describe-labels"), params=params, inputs={}, datasets=datasets,
                                     root=tmp / "artifacts", force=force)
                sent = srv.stats()["requests"]
                t0 = time.perf_counter()
                art, _ = S.execute(ctx)
                return time.perf_counter() - t0, srv.stats()["requests"] - sent, art

            wall1, req1, art = run(False)
            wall2, req2, _ = run(True)
            peak = srv.stats()["max_in_flight"]
            rows = len(D.read_descriptions(art))
    bound = n_labels * a.latency or float("nan")
    res = {
        "labels": n_labels, "latency_s": a.latency, "concurrency": params.concurrency,
        "first_run_s": round(wall1, 3), "sequential_bound_s": round(bound, 3),
        "wall_over_bound": round(wall1 / bound, 4), "target_wall_over_bound": 0.125,
        "first_run_requests": req1, "rerun_requests": req2, "rerun_s": round(wall2, 3),
        "peak_in_flight": peak, "rows": rows, "server_process": "same" if a.same_process else "own",
    }
    if a.json:
        print(json.dumps(res))
        return
    print(f"labels {n_labels}, latency {a.latency * 1000:.0f} ms, concurrency {params.concurrency} "
          f"(peak in flight {peak}), server in {'this process' if a.same_process else 'its own process'}")
    print(f"first run: {wall1:.2f} s for {req1} requests; sequential bound {bound:.1f} s; "
          f"ratio {wall1 / bound:.3f} (target <= 0.125) {'OK' if wall1 / bound <= 0.125 else 'MISSED'}")
    print(f"re-run:    {wall2:.2f} s, {req2} requests (target 0) {'OK' if req2 == 0 else 'MISSED'}")


if __name__ == "__main__":
    main()
