"""The generic folder adapter on tiny datasets written by the test."""
import numpy as np
import pytest
from PIL import Image

from tests.data.tiny import image_of, label_of, write_generic
from uniseg_cli.data import DatasetSpec, open_dataset
from uniseg_cli.data.generic import GenericDataset, parse_labels_yaml
from uniseg_cli.data.specs import parse_dataset_arg
from uniseg_cli.errors import DataError, UsageError


def test_reads_pairs_in_train_ids(tmp_path):
    root = write_generic(tmp_path / "toy", splits={"train": 3, "val": 2})
    ad = open_dataset(DatasetSpec("toy", str(root)))
    assert isinstance(ad, GenericDataset)
    assert ad.splits() == ["train", "val"]
    assert ad.label_space.classes == ("road", "car", "sky") and ad.label_space.ignore_index == 255
    assert ad.label_space.descriptions == ("a road", "a car", "a sky")
    ss = ad.samples("train")
    assert [s.stem for s in ss] == ["s000", "s001", "s002"]
    img, lab = ad.load(ss[1])
    assert img.dtype == np.uint8 and img.shape == (16, 20, 3)
    assert lab.dtype == np.int64 and lab.shape == (16, 20)
    assert set(np.unique(lab)) <= {0, 1, 2, 255} and 255 in lab
    assert np.array_equal(label_of(img), lab)
    assert ad.check() == []


def test_uint16_labels_and_jpg_images(tmp_path):
    classes = [f"c{i}" for i in range(3)]
    root = write_generic(tmp_path / "big", classes=classes, ignore=65535, dtype=np.uint16, splits={"train": 1})
    p = root / "images" / "train" / "s000.png"
    Image.open(p).save(p.with_suffix(".jpg"), quality=95)
    p.unlink()
    ad = open_dataset(DatasetSpec("big", str(root)))
    img, lab = ad.load(ad.samples("train")[0])
    assert ad.samples("train")[0].image_path.suffix == ".jpg"
    assert 65535 in lab and lab.max() == 65535
    assert ad.check() == []


def test_load_names_the_file_and_fault(tmp_path):
    root = write_generic(tmp_path / "toy", splits={"train": 2})
    bad = root / "annotations" / "train" / "s001.png"
    Image.fromarray(np.full((16, 20), 7, np.uint8)).save(bad)
    ad = open_dataset(DatasetSpec("toy", str(root)))
    ad.load(ad.samples("train")[0])
    with pytest.raises(DataError) as e:
        ad.load(ad.samples("train")[1])
    assert str(bad) in e.value.message and "7 (320 px)" in e.value.message
    assert "check-data" in e.value.hint


def test_bad_labels_yaml_raises_on_use(tmp_path):
    root = write_generic(tmp_path / "toy")
    (root / "labels.yaml").write_text("name: toy\nclasses: [a, b, a]\n")
    ad = open_dataset(DatasetSpec("toy", str(root)))
    with pytest.raises(DataError) as e:
        ad.label_space
    assert "labels.yaml" in e.value.message and "'a' appears twice" in e.value.message
    _, _, probs = parse_labels_yaml(root / "labels.yaml", "toy")
    assert {p.code for p in probs} == {"duplicate-class", "missing-ignore-index"}


def test_ignore_index_must_not_be_a_class_id(tmp_path):
    root = write_generic(tmp_path / "toy")
    (root / "labels.yaml").write_text("name: toy\nignore_index: 1\nclasses: [a, b, c]\n")
    _, _, probs = parse_labels_yaml(root / "labels.yaml", "toy")
    assert len(probs) == 1 and "also the id of class 'b'" in probs[0].message


def test_parse_dataset_arg(tmp_path):
    root = write_generic(tmp_path / "folder", name="fromyaml")
    s = parse_dataset_arg(str(root))
    assert (s.name, s.format, s.root) == ("fromyaml", "generic", str(root))
    s = parse_dataset_arg(f"mine={root}")
    assert (s.name, s.format) == ("mine", "generic")
    s = parse_dataset_arg(f"mine=generic:{root}")
    assert (s.name, s.format, s.root) == ("mine", "generic", str(root))
    with pytest.raises(UsageError):
        parse_dataset_arg("=x")
    with pytest.raises(UsageError) as e:
        parse_dataset_arg("x=nosuchformat:/nowhere/at/all")
    assert "nosuchformat" in e.value.message


def test_image_of_label_roundtrip():
    lab = np.array([[0, 1], [2, 255]])
    assert np.array_equal(label_of(image_of(lab)), lab)
