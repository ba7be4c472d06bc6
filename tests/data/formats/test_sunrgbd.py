"""SUN RGB-D 37 classes: flat image folders + sunrgbd_train_test_labels; 0 -> ignore, 37 (bag) -> 0."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError


def make(root):
    rgb_image(root / "SUNRGBD-train_images/img-005051.jpg")
    rgb_image(root / "SUNRGBD-test_images/img-000001.jpg")
    id_png(root / "sunrgbd_train_test_labels/img-005051.png", grid([0, 1, 36, 37, 22]))
    id_png(root / "sunrgbd_train_test_labels/img-000001.png", grid([37]))


def test_train_and_test_lists(tmp_path):
    make(tmp_path)
    ds = open_fmt("sunrgbd", tmp_path)
    assert ds.splits() == ["train", "val"]
    assert ds.samples("test") == ds.samples("val")
    assert [s.stem for s in ds.samples("val")] == ["img-000001"]
    _, lab = ds.load(ds.samples("train")[0])
    np.testing.assert_array_equal(lab, grid([255, 1, 36, 0, 22]))
    assert ds.label_space.classes[0] == "bag" and ds.label_space.classes[22] == "ceiling"
    assert ds.check() == []


def test_label_38_is_bad(tmp_path):
    make(tmp_path)
    id_png(tmp_path / "sunrgbd_train_test_labels/img-000001.png", grid([38]))
    [p] = open_fmt("sunrgbd", tmp_path).check(["val"])
    assert p.code == "bad-ids" and "[38]" in p.message


def test_wrong_folder(tmp_path):
    (tmp_path / "SUNRGBD" / "kv1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"expected .*sunrgbd_train_test_labels .*found instead: .*SUNRGBD/"):
        open_fmt("sunrgbd", tmp_path)
