"""The stages on a CUDA device (mixed precision on), against the contracts their CPU tests check.

Skipped where no CUDA device is visible (CI has none); run on a GPU machine with
``pytest tests/stages/test_cuda.py``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uniseg_cli import artifacts as A

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kit import context, tiny_params, upstream, world  # noqa: E402
from test_estimate_nodes import FAST, _ds  # noqa: E402
from test_predict import _tiny_training_artifact, _write_images  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("cuda")
    _, specs = world(base / "world")
    return base, specs


def test_estimate_nodes_trains_stage1_on_cuda(tiny, cli):
    from uniseg_cli.taxonomy.confusion import read_confusion
    from uniseg_cli.taxonomy.schema import read_taxonomy

    base, _ = tiny
    code, out, err = cli("estimate-nodes", *_ds(base / "world"), *FAST, "--device", "cuda", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["summary"]["num_labels"] == 31
    art = A.load_artifact(res["path"], kind="node-estimate")
    doc = json.loads((art.path / "estimate.json").read_text())
    assert doc["stage1"]["trained"] is True
    for line in (art.path / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert all(np.isfinite(v) for k, v in rec.items() if k.startswith("loss") and isinstance(v, float)), rec
    for d, m in read_taxonomy(art.path / "init_mapping.parquet").mappings.items():
        assert (m.sum(axis=1) == 1).all(), d
    hist, _, _ = read_confusion(art.path / "confusion.h5")
    for a in range(3):
        assert hist[a][a].sum() > 0 and all(hist[a][b].sum() == pytest.approx(hist[a][a].sum()) for b in range(3))


def test_train_stage_on_cuda_publishes_a_model_that_loads_on_the_cpu(tiny, tmp_path):
    from uniseg_cli.stages import execute
    from uniseg_cli.stages.export_taxonomy import read_taxonomy_state
    from uniseg_cli.training.model_io import load_unified_model

    base, specs = tiny
    root = tmp_path / "artifacts"
    feat, est = upstream(root, specs)
    art, ran = execute(context(root, specs, tiny_params(device="cuda"), feat, est))
    assert ran and art.kind == "training"
    lines = [json.loads(x) for x in (art.path / "metrics.jsonl").read_text().splitlines()]
    assert {x["stage"] for x in lines} == {"stage2", "stage3"}
    for rec in lines:
        assert all(np.isfinite(v) for k, v in rec.items() if k.startswith("loss") and isinstance(v, float)), rec
    state = read_taxonomy_state(art.path / "taxonomy_state.h5")
    for m in state["mappings"].values():
        assert (m.sum(axis=0) <= 1).all() and (m.sum(axis=1) >= 1).all()
    model = load_unified_model(art.path)  # written from the GPU, read on the CPU
    z = model.unified_logits(torch.zeros(1, 3, 32, 32))
    assert torch.isfinite(z).all() and z.shape[1] == state["mappings"]["citydrive"].shape[1]


def test_predict_on_cuda_agrees_with_the_cpu(tmp_path, _artifacts_root):
    from uniseg_cli.stages.predict import PredictParams, collect_images, load_predictor, run_predict

    art = _tiny_training_artifact(_artifacts_root)
    paths = _write_images(tmp_path / "in", [(40, 56), (96, 64)])
    labels = {}
    for device in ("cpu", "cuda"):
        pred = load_predictor(art.path, device=device)
        res = run_predict(pred, collect_images(paths), tmp_path / device,
                          PredictParams(space="city", overlay=False, tile=32))
        labels[device] = [np.asarray(Image.open(e["label"])) for e in res["images"]]
    for a, b in zip(labels["cpu"], labels["cuda"]):
        assert a.shape == b.shape and (a == b).mean() > 0.99
