"""`evaluate`: hand-made predictions scored by hand, the trained model, unseen datasets, stage-1 model, CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from kit import context, tiny_params, upstream, world  # noqa: E402

from uniseg_cli.errors import UsageError  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from uniseg_cli.stages import execute

    base = tmp_path_factory.mktemp("eval")
    _, specs = world(base / "world")
    root = base / "artifacts"
    feat, est = upstream(root, specs)
    train_art, _ = execute(context(root, specs, tiny_params(), feat, est))
    return root, specs, train_art, est


def _ctx(root, specs, train_art, **params):
    from uniseg_cli.stages import StageContext, get_stage
    from uniseg_cli.stages.evaluate import Params

    return StageContext(spec=get_stage("evaluate"), params=Params(**params), inputs={"train": train_art},
                        datasets=list(specs), root=Path(root), argv=["uniseg", "evaluate"])


def test_hand_made_prediction_matches_hand_computation(trained, monkeypatch):
    """Predict every pixel right except that the first dataset's class 0 is predicted as class 1."""
    from uniseg_cli.data import open_dataset
    from uniseg_cli.stages import execute
    from uniseg_cli.stages import evaluate as E

    root, specs, train_art, _ = trained
    train = [s for s in specs if s.role == "train"]

    def outputs(self, img, d):
        lab = self._current.clone()
        pred = torch.where(lab < 0, torch.zeros_like(lab), lab)
        if d == 0:
            pred = torch.where(pred == 0, torch.ones_like(pred), pred)
        return pred, pred

    # feed the current ground truth to the fake model: iter_eval yields the label next to the image
    real_images = E._images

    def images(spec, split, p, dist):
        ad, n, items = real_images(spec, split, p, dist)

        def gen():
            for item in items:
                E._Model._current = item["label"]
                yield item
        return ad, n, gen()

    monkeypatch.setattr(E._Model, "outputs", outputs)
    monkeypatch.setattr(E, "_images", images)
    art, _ = execute(_ctx(root, train, train_art))
    res = json.loads((art.path / "metrics.json").read_text())
    # by hand from the label files
    ad = open_dataset(train[0])
    gt = np.concatenate([ad.load(s)[1].ravel() for s in ad.samples("val")])
    gt = gt[gt != ad.label_space.ignore_index]
    classes = list(ad.label_space.classes)
    n0, n1 = int((gt == 0).sum()), int((gt == 1).sum())
    assert n0 > 0 and n1 > 0
    present = [c for c in range(len(classes)) if (gt == c).any()]
    ious = {c: 1.0 for c in present}
    ious[0], ious[1] = 0.0, n1 / (n1 + n0)
    expect = 100 * np.mean([ious[c] for c in present])
    r0 = res["datasets"][train[0].name]
    assert r0["miou"] == pytest.approx(round(expect, 2))
    assert r0["per_class"][classes[1]] == pytest.approx(round(100 * n1 / (n0 + n1), 2))
    assert r0["pixels"] == gt.size
    for s in train[1:]:
        assert res["datasets"][s.name]["miou"] == 100.0  # predicted exactly


def test_trained_model_scores_own_unified_and_unseen_spaces(trained):
    from uniseg_cli.stages import execute
    from uniseg_cli.taxonomy.schema import read_taxonomy

    root, specs, train_art, _ = trained
    art, _ = execute(_ctx(root, specs, train_art))
    res = json.loads((art.path / "metrics.json").read_text())
    assert res["schema"] == "uniseg.evaluation/1" and res["model"]["kind"] == "unified"
    train_names = [s.name for s in specs if s.role == "train"]
    assert list(res["datasets"]) == train_names
    for name in train_names:
        r = res["datasets"][name]
        vals = [v for v in r["per_class"].values() if v is not None]
        assert r["miou"] == pytest.approx(np.mean(vals), abs=0.01)
        assert 0 <= r["unified"]["miou"] <= 100
    unseen = res["unseen"]["camdrive"]
    assert unseen["fit_split"] == "train" and unseen["score_split"] == "val" and not unseen["fitted_on_scored_split"]
    tax = read_taxonomy(art.path / unseen["mapping_file"])
    assert list(tax.datasets) == ["camdrive"]
    summary = art.manifest["extra"]["summary"]
    assert summary["mean_miou"] == res["mean_miou"]


def test_stage1_multihead_checkpoint_and_fit_split_guard(trained):
    from uniseg_cli.stages import execute

    root, specs, train_art, est = trained
    art, _ = execute(_ctx(root, specs, train_art, multihead=str(est.path)))
    res = json.loads((art.path / "metrics.json").read_text())
    assert res["model"]["kind"] == "multihead" and "unified_mean_miou" not in res
    assert res["model"]["outputs"] == sum(len(v["per_class"]) for v in res["datasets"].values())
    with pytest.raises(UsageError, match="fitted on the split it is scored on"):
        execute(_ctx(root, specs, train_art, unseen_fit_split="val"))
    art, _ = execute(_ctx(root, specs, train_art, unseen=False, max_images=1))
    res = json.loads((art.path / "metrics.json").read_text())
    assert res["unseen"] == {} and res["unseen_mean_miou"] is None and all(v["images"] == 1 for v in res["datasets"].values())


def test_cli_evaluate_json(trained, cli):
    root, specs, train_art, _ = trained
    args = ["evaluate", "--artifacts", str(root), "--train", str(train_art.path), "--max-images", "2", "--json"]
    for s in specs:
        args += ["--dataset", f"{s.name}={s.root}" + ("@unseen" if s.role == "unseen" else "")]
    code, out, err = cli(*args)
    assert code == 0, err
    obj = json.loads(out)
    assert obj["kind"] == "evaluation" and set(obj["summary"]["miou"]) == {s.name for s in specs if s.role == "train"}
    # the table: one line per dataset; with only an unseen dataset given, no mean line of training datasets
    unseen = [s for s in specs if s.role == "unseen"]
    args = ["evaluate", "--artifacts", str(root), "--train", str(train_art.path), "--max-images", "2"]
    code, out, err = cli(*args, *[a for s in unseen for a in ("--dataset", f"{s.name}={s.root}@unseen")])
    assert code == 0, err
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == [s.name for s in unseen] and "None" not in out
    assert lines[-1].startswith(str(root))
