"""`uniseg predict`: inputs, sliding window, label spaces, outputs that never overwrite silently."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uniseg_cli.errors import OutputExistsError, UsageError
from uniseg_cli.stages.predict import (
    PredictParams,
    Predictor,
    collect_images,
    dataset_logits,
    palette,
    predict_logits,
    run_predict,
    windows,
)
from uniseg_cli.taxonomy.schema import Taxonomy


def _tax():
    # 5 channels; channel 4 is inactive. city: road(0), vehicle(1,2), sky(3); mall: floor(0), car(1), truck(2)
    m_city = np.zeros((3, 5), bool)
    m_city[0, 0] = m_city[1, 1] = m_city[1, 2] = m_city[2, 3] = True
    m_mall = np.zeros((3, 5), bool)
    m_mall[0, 0] = m_mall[1, 1] = m_mall[2, 2] = True
    return Taxonomy.from_mappings({"city": m_city, "mall": m_mall},
                                  datasets={"city": ["road", "vehicle", "sky"], "mall": ["floor", "car", "truck"]})


def _pointwise(n_out=5, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, n_out, 1)
    with torch.no_grad():
        conv.bias[4] = 100.0  # the inactive channel would win everywhere if it were not masked
    return conv.eval()


def _write_images(folder, sizes):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_windows_cover_the_image_with_overlap():
    ws = windows(100, 70, 32, 0.25)
    cover = np.zeros((100, 70), int)
    for y0, y1, x0, x1 in ws:
        assert y1 - y0 == 32 and x1 - x0 == 32
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1 and cover.max() > 1
    assert windows(20, 20, 32, 0.25) == [(0, 20, 0, 20)]
    assert windows(20, 20, 0, 0.25) == [(0, 20, 0, 20)]


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    model = _pointwise()
    img = np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    (_, full), = list(predict_logits(model, [(0, img)], tile=0))
    (_, tiled), = list(predict_logits(model, [(0, img)], tile=24, overlap=0.3, batch_size=3))
    assert full.shape == (5, 45, 70)
    assert torch.allclose(full, tiled, atol=1e-5)


def test_batches_across_images_keep_input_order():
    model = _pointwise()
    rng = np.random.default_rng(2)
    imgs = [(k, rng.integers(0, 256, (h, 40, 3), dtype=np.uint8)) for k, h in enumerate([40, 40, 33, 40])]
    alone = [list(predict_logits(model, [x], tile=0))[0][1] for x in imgs]
    together = list(predict_logits(model, imgs, tile=0, batch_size=8))
    assert [k for k, _ in together] == [0, 1, 2, 3]
    for a, (_, b) in zip(alone, together):
        assert torch.allclose(a, b, atol=1e-5)


def test_dataset_logits_sum_mapped_unified_logits():
    z = torch.randn(5, 4, 4)
    m = _tax().mapping("city")
    d = dataset_logits(z, m)
    assert torch.allclose(d[1], z[1] + z[2]) and torch.allclose(d[0], z[0])


@pytest.mark.parametrize("space,n", [("unified", 5), ("city", 3), ("mall", 3)])
def test_label_maps_lie_in_the_label_space(tmp_path, space, n):
    paths = _write_images(tmp_path / "in" / "sub", [(32, 48), (40, 40)])
    items = collect_images([tmp_path / "in"])
    assert [it.name for it in items] == ["sub/img0", "sub/img1"]
    pred = Predictor(forward=_pointwise(), taxonomy=_tax())
    res = run_predict(pred, items, tmp_path / "out", PredictParams(space=space, tile=24, batch_size=2))
    assert len(res["images"]) == 2 and res["num_classes"] == n
    for entry, src in zip(res["images"], paths):
        lab = np.asarray(Image.open(entry["label"]))
        assert lab.dtype == np.uint8 and lab.shape == np.asarray(Image.open(src)).shape[:2]
        assert lab.max() < n
        if space == "unified":
            assert 4 not in np.unique(lab)  # inactive channel masked
        ov = Image.open(entry["overlay"])
        assert ov.size == Image.open(src).size and ov.mode == "RGB"
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert len(classes["classes"]) == n and classes["space"] == space


def test_existing_outputs_need_force(tmp_path):
    _write_images(tmp_path / "in", [(16, 16)])
    items = collect_images([tmp_path / "in" / "img0.png"])
    pred = Predictor(forward=_pointwise(), taxonomy=_tax())
    run_predict(pred, items, tmp_path / "out", PredictParams())
    before = (tmp_path / "out" / "labels" / "img0.png").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--force|exist"):
        run_predict(pred, items, tmp_path / "out", PredictParams())
    assert (tmp_path / "out" / "labels" / "img0.png").stat().st_mtime_ns == before
    run_predict(pred, items, tmp_path / "out", PredictParams(), force=True)


def test_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        collect_images([tmp_path / "nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        collect_images([tmp_path / "empty"])
    _write_images(tmp_path / "a", [(8, 8)])
    _write_images(tmp_path / "b", [(8, 8)])
    with pytest.raises(UsageError, match="both be written"):
        collect_images([tmp_path / "a" / "img0.png", tmp_path / "b" / "img0.png"])
    pred = Predictor(forward=_pointwise(), taxonomy=_tax())
    with pytest.raises(UsageError, match="--space 'zoo'"):
        run_predict(pred, collect_images([tmp_path / "a"]), tmp_path / "o", PredictParams(space="zoo"))


def test_palette_is_distinct_beyond_256():
    p = palette(600)
    assert p.shape == (600, 3) and len({tuple(c) for c in p}) == 600


def _tiny_training_artifact(root, label_logits="sum"):
    """A real training artifact: a tiny segmenter + UniSegHead written by the train stage's model writer."""
    from uniseg_cli import artifacts as A
    from uniseg_cli.models import SegmenterConfig, UniSegHead, build_segmenter
    from uniseg_cli.training.model_io import save_unified_model

    torch.manual_seed(0)
    tax = _tax()
    seg = build_segmenter(SegmenterConfig(backbone="tiny", embed_dim=8))
    head = UniSegHead(5, 8, [tax.mapping("city"), tax.mapping("mall")], label_logits=label_logits)
    with torch.no_grad():
        head.prototypes.mul_(100.0)  # peaked logits, so sum and logsumexp rank a union label differently
    with A.publish(root, "training", {"test": "predict", "label_logits": label_logits}, []) as st:
        save_unified_model(st.dir, seg.eval(), head, {d: list(c) for d, c in tax.datasets.items()}, run_id=st.run_id)
    return st.artifact


def test_predict_cli_with_a_tiny_trained_model(tmp_path, cli, _artifacts_root):
    art = _tiny_training_artifact(_artifacts_root)
    paths = _write_images(tmp_path / "in", [(40, 56), (64, 64)])
    out = tmp_path / "out"
    code, stdout, err = cli("predict", tmp_path / "in", "--out", out, "--space", "city", "--tile", "32",
                            "--batch-size", "3", "--device", "cpu", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["model"] == str(art.path) and doc["num_classes"] == 3 and len(doc["images"]) == 2
    for entry, src in zip(doc["images"], paths):
        lab = np.asarray(Image.open(entry["label"]))
        assert lab.shape == np.asarray(Image.open(src)).shape[:2] and lab.max() < 3
    names = [c["name"] for c in json.loads((out / "classes.json").read_text())["classes"]]
    assert names == ["road", "vehicle", "sky"]
    # unified space: node names from the members; the inactive channel 4 never appears
    code, stdout, err = cli("predict", paths[0], "--out", tmp_path / "u", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["num_classes"] == 5 and 4 not in doc["images"][0]["classes_present"]
    # a second run refuses to overwrite (exit 4), --force overwrites
    code, _, err = cli("predict", paths[0], "--out", tmp_path / "u")
    assert code == 4 and "--force" in err
    code, stdout, _ = cli("predict", paths[0], "--out", tmp_path / "u", "--force")
    assert code == 0 and stdout.strip().endswith("u")


def test_a_logsumexp_model_predicts_its_labels_as_it_was_trained(tmp_path, _artifacts_root):
    from uniseg_cli.errors import ArtifactError
    from uniseg_cli.models.heads import label_logits
    from uniseg_cli.stages.predict import load_predictor
    from uniseg_cli.training.model_io import load_unified_model

    art = _tiny_training_artifact(_artifacts_root, label_logits="logsumexp")
    model = load_unified_model(art.path)
    assert model.head.label_logits == "logsumexp"
    pred = load_predictor(art.path, device="cpu")
    assert pred.label_logits == "logsumexp"
    paths = _write_images(tmp_path / "in", [(32, 32)])
    res = run_predict(pred, collect_images(paths), tmp_path / "out", PredictParams(space="city", overlay=False))
    lab = np.asarray(Image.open(res["images"][0]["label"]))
    img = torch.as_tensor(np.array(Image.open(paths[0])), dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    mean, std = torch.tensor(pred.mean).view(1, 3, 1, 1), torch.tensor(pred.std).view(1, 3, 1, 1)
    from uniseg_cli.training.unify import full_res_logits

    with torch.no_grad():
        z = full_res_logits(model.segmenter, model.head.unified_logits, (img - mean) / std)
    expected = label_logits(z, model.head.mapping(0), "logsumexp").argmax(dim=1)[0].numpy()
    summed = label_logits(z, model.head.mapping(0), "sum").argmax(dim=1)[0].numpy()
    assert (lab == expected).mean() > 0.99 and (expected != summed).any()
    # an unknown value in model.json is a damaged artifact, named
    meta = json.loads((art.path / "model.json").read_text())
    meta["model"]["label_logits"] = "max"
    (art.path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="label_logits 'max'"):
        load_unified_model(art.path)


def test_predict_gives_the_labels_evaluate_scores_at_any_image_size(tmp_path, _artifacts_root):
    from uniseg_cli.models.heads import label_logits
    from uniseg_cli.stages.predict import load_predictor
    from uniseg_cli.training.model_io import load_unified_model
    from uniseg_cli.training.unify import full_res_logits

    art = _tiny_training_artifact(_artifacts_root)
    model = load_unified_model(art.path)
    pred = load_predictor(art.path, device="cpu")
    for k, size in enumerate([(33, 47), (40, 32), (64, 64)]):  # padded to a multiple of 32 by both paths
        paths = _write_images(tmp_path / f"in{k}", [size])
        img = torch.as_tensor(np.array(Image.open(paths[0])), dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
        mean, std = torch.tensor(pred.mean).view(1, 3, 1, 1), torch.tensor(pred.std).view(1, 3, 1, 1)
        with torch.no_grad():
            z = full_res_logits(model.segmenter, model.head.unified_logits, (img - mean) / std)
        expected = {"unified": z.argmax(dim=1)[0].numpy(),
                    "mall": label_logits(z, model.head.mapping(1), "sum").argmax(dim=1)[0].numpy()}
        for space, want in expected.items():
            res = run_predict(pred, collect_images(paths), tmp_path / f"{space}{k}", PredictParams(space=space, overlay=False))
            lab = np.asarray(Image.open(res["images"][0]["label"]))
            assert lab.shape == size and (lab == want).mean() > 0.999, (size, space)


def test_unknown_space_is_refused_before_the_model_loads(tmp_path, cli, _artifacts_root, monkeypatch):
    import uniseg_cli.stages.predict as P

    _tiny_training_artifact(_artifacts_root)
    _write_images(tmp_path / "in", [(16, 16)])

    def boom(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(P, "load_predictor", boom)
    code, _, err = cli("predict", tmp_path / "in", "--out", tmp_path / "o", "--space", "zoo")
    assert code == 2 and "'zoo'" in err and "city, mall" in err


def _write_tiny_dataset(root):
    """A generic-format dataset: one train image, two val images, 8x8."""
    from uniseg_cli.data.generic import write_labels_yaml

    write_labels_yaml(root, "tinyset", ["a", "b"], 255)
    for split, n in (("train", 1), ("val", 2)):
        imgs = _write_images(root / "images" / split, [(8, 8)] * n)
        (root / "annotations" / split).mkdir(parents=True)
        for p in imgs:
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "annotations" / split / p.name)
    return root


def test_predict_cli_reads_a_dataset_split(tmp_path, cli, _artifacts_root):
    _tiny_training_artifact(_artifacts_root)
    root = _write_tiny_dataset(tmp_path / "ds")
    code, stdout, err = cli("predict", "--dataset", root, "--out", tmp_path / "o", "--space", "mall", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert [Path(e["label"]).name for e in doc["images"]] == ["img0.png", "img1.png"]  # the val split by default
    for e in doc["images"]:
        assert np.asarray(Image.open(e["label"])).shape == (8, 8)
    code, stdout, err = cli("predict", "--dataset", f"t=generic:{root}", "--split", "train", "--out", tmp_path / "t",
                            "--json")
    assert code == 0, err
    assert len(json.loads(stdout)["images"]) == 1
    code, _, err = cli("predict", "--dataset", f"t=nosuchformat:{root}", "--out", tmp_path / "x")
    assert code == 2 and "nosuchformat" in err


def test_images_of_a_dataset_split(tmp_path):
    from uniseg_cli.data.base import DatasetSpec

    root = _write_tiny_dataset(tmp_path / "ds")
    spec = DatasetSpec(name="tinyset", root=str(root))
    items = collect_images([], [spec])
    assert [it.name for it in items] == ["tinyset/img0", "tinyset/img1"]  # the val split by default
    assert [it.name for it in collect_images([], [spec], split="train")] == ["tinyset/img0"]
    with pytest.raises(UsageError, match="no split 'test'"):
        collect_images([], [spec], split="test")
