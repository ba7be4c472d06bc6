"""check-data reports every fault of a crafted bad dataset in one run; training stops on the same ones."""
import json

import numpy as np
import pytest
from PIL import Image

from tests.data.tiny import write_generic
from uniseg_cli.data import DatasetSpec, open_dataset
from uniseg_cli.data.loader import make_train_loader, validate_datasets
from uniseg_cli.errors import DataError


def _bad_dataset(root):
    write_generic(root, splits={"train": 7, "val": 1})
    tr_i, tr_a = root / "images" / "train", root / "annotations" / "train"
    (tr_a / "s000.png").unlink()  # image without label
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(tr_a / "orphan.png")  # label without image
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(tr_a / "s001.png")  # size mismatch
    lab = np.zeros((16, 20), np.uint8)
    lab[0, :5] = 9
    lab[1, :] = 42
    Image.fromarray(lab).save(tr_a / "s002.png")  # ids outside the label space
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tr_a / "s003.png")  # multi-channel label
    (tr_i / "s004.png").write_bytes(b"this is not a png")  # unreadable image
    (tr_a / "s005.png").write_bytes(b"\x89PNG broken")  # unreadable label
    (root / "images" / "test").mkdir()  # empty split
    return root


EXPECTED = {
    ("missing-label", "images/train/s000.png"),
    ("missing-image", "annotations/train/orphan.png"),
    ("size-mismatch", "annotations/train/s001.png"),
    ("bad-ids", "annotations/train/s002.png"),
    ("multi-channel", "annotations/train/s003.png"),
    ("unreadable", "images/train/s004.png"),
    ("unreadable", "annotations/train/s005.png"),
    ("empty-split", "images/test"),
}


def _rel(p, root):
    return str(p.path).replace(str(root) + "/", "")


def test_every_fault_is_reported_at_once(tmp_path):
    root = _bad_dataset(tmp_path / "bad")
    probs = open_dataset(DatasetSpec("bad", str(root))).check()
    got = {(p.code, _rel(p, root)) for p in probs}
    assert got == EXPECTED
    ids = next(p for p in probs if p.code == "bad-ids")
    assert "9 (5 px)" in ids.message and "42 (20 px)" in ids.message and "valid: 0..2, ignore 255" in ids.message
    size = next(p for p in probs if p.code == "size-mismatch")
    assert "20x10" in size.message and "20x16" in size.message


def test_labels_yaml_faults(tmp_path):
    root = write_generic(tmp_path / "y")
    (root / "labels.yaml").write_text("name: y\nclasses: [road, car, road]\ndescriptions: [one]\n")
    probs = open_dataset(DatasetSpec("y", str(root))).check()
    codes = sorted(p.code for p in probs)
    assert codes == ["bad-field", "duplicate-class", "missing-ignore-index"]
    assert all(p.path == str(root / "labels.yaml") for p in probs)
    (root / "labels.yaml").write_text("name: y\nclasses: [road, car\n")
    probs = open_dataset(DatasetSpec("y", str(root))).check()
    assert probs[0].code == "bad-yaml" and "line" in probs[0].message


def test_cli_reports_all_datasets_and_exits_5(cli, tmp_path):
    bad = _bad_dataset(tmp_path / "bad")
    good = write_generic(tmp_path / "good", name="good")
    yml = write_generic(tmp_path / "yml", name="yml")
    (yml / "labels.yaml").write_text("name: yml\nignore_index: 255\nclasses: [a, a, b]\n")
    code, out, err = cli("check-data", str(bad), f"g={good}", str(yml), "--json")
    assert code == 5
    doc = json.loads(out)
    assert doc["ok"] is False
    assert {d["name"]: d["problems"] for d in doc["datasets"]} == {"toy": len(EXPECTED), "g": 0, "yml": 1}
    assert len(doc["problems"]) == len(EXPECTED) + 1
    assert {"dataset", "path", "code", "message"} == set(doc["problems"][0])
    assert "Error:" in err and "Hint:" in err
    code, out, err = cli("check-data", str(good))
    assert code == 0 and out == ""
    code, out, _ = cli("check-data", str(bad), "--split", "val")
    assert code == 0
    code, out, _ = cli("check-data", str(bad))
    assert code == 5 and "s002.png: [bad-ids]" in out and out.count("\n") == len(EXPECTED)


def test_training_stops_on_the_same_problems(tmp_path):
    root = _bad_dataset(tmp_path / "bad")
    ad = open_dataset(DatasetSpec("bad", str(root)))
    messages = {p.message for p in ad.check(["train"])}
    # the cheap pre-check skips pixel values; loading the sample then stops with check-data's message
    cheap = {(p.code, _rel(p, root)) for p in ad.check(["train"], deep=False)}
    with pytest.raises(DataError) as e:
        make_train_loader([ad], images_per_dataset=1)
    assert e.value.message.startswith(f"{len(cheap)} problems in dataset bad: {root}/images/train/s000.png: ")
    assert any(m in e.value.message for m in messages)
    assert ("bad-ids", "annotations/train/s002.png") not in cheap and ("size-mismatch", "annotations/train/s001.png") in cheap
    s002 = next(s for s in ad.samples("train") if s.stem == "s002")
    with pytest.raises(DataError) as e:
        ad.load(s002)
    bad_ids = next(p for p in ad.check(["train"]) if p.code == "bad-ids")
    assert bad_ids.message in e.value.message


def test_validate_datasets_passes_clean_data(tmp_path):
    ad = open_dataset(DatasetSpec("ok", str(write_generic(tmp_path / "ok"))))
    validate_datasets([ad], ["train"])
