"""PASCAL VOC 2012 + SegmentationClassAug: 0 and >20 -> 255, k -> k-1."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError


def make(root):
    for stem in ("2007_000032", "2007_000033"):
        rgb_image(root / "JPEGImages" / f"{stem}.jpg")
        id_png(root / "SegmentationClassAug" / f"{stem}.png", grid([0, 1, 15, 20, 255]))
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    (root / "ImageSets/Segmentation/train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n")


def test_aug_labels_and_lists(tmp_path):
    make(tmp_path / "VOCdevkit" / "VOC2012")
    ds = open_fmt("pascal_voc", tmp_path / "VOCdevkit")
    assert ds.splits() == ["train_aug", "val"]
    assert [s.stem for s in ds.samples("train_aug")] == ["2007_000032"]
    _, lab = ds.load(ds.samples("val")[0])
    np.testing.assert_array_equal(lab, grid([255, 0, 14, 19, 255]))
    assert ds.label_space.classes[14] == "person"
    assert ds.check() == []


def test_palette_segmentationclass_fallback(tmp_path):
    rgb_image(tmp_path / "JPEGImages/2007_000032.jpg")
    id_png(tmp_path / "SegmentationClass/2007_000032.png", grid([0, 3, 255]), palette=True)
    (tmp_path / "ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    ds = open_fmt("pascal_voc", tmp_path)
    _, lab = ds.load(ds.samples("train")[0])
    np.testing.assert_array_equal(lab, grid([255, 2, 255]))
    [p] = ds.check()
    assert p.code == "missing-image" and p.path.endswith("2007_000039.jpg")


def test_wrong_folder(tmp_path):
    make(tmp_path)
    with pytest.raises(DataError, match=r"expected .*JPEGImages .*found instead"):
        open_fmt("pascal_voc", tmp_path / "ImageSets")
