"""Cityscapes: leftImg8bit/gtFine layout, labelIds -> 19 train ids, void -> 255."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError

# raw labelId -> expected train id (publisher's labels.py): road 7 -> 0, sidewalk 8 -> 1, building 11 -> 2,
# car 26 -> 13, bicycle 33 -> 18; unlabeled 0, ego vehicle 1, parking 9, guard rail 14 -> ignore.
RAW = [7, 8, 11, 26, 33, 0, 1, 9, 14, 24]
WANT = [0, 1, 2, 13, 18, 255, 255, 255, 255, 11]


def make(root, split="train", city="aachen", stem="aachen_000000_000019"):
    img = rgb_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    raw = grid(RAW)
    id_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", raw)
    return img, raw


def test_reads_pairs_and_maps_label_ids(tmp_path):
    img, raw = make(tmp_path)
    make(tmp_path, "val", "frankfurt", "frankfurt_000000_000294")
    ds = open_fmt("cityscapes", tmp_path)
    assert ds.splits() == ["train", "val"]
    assert ds.label_space.num_classes == 19
    [s] = ds.samples("train")
    assert s.stem == "aachen_000000_000019"
    got_img, lab = ds.load(s)
    assert got_img.dtype == np.uint8 and got_img.shape == (8, 8, 3)
    np.testing.assert_array_equal(got_img, img)
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, grid(WANT))
    assert ds.check() == []


def test_undefined_label_id_is_reported(tmp_path):
    make(tmp_path)
    id_png(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", grid([7, 34, 200]))
    ds = open_fmt("cityscapes", tmp_path)
    with pytest.raises(DataError, match=r"raw label ids \[34, 200\]"):
        ds.load(ds.samples("train")[0])
    [p] = ds.check()
    assert p.code == "bad-ids" and p.path.endswith("_gtFine_labelIds.png")


def test_colour_label_and_missing_label_are_problems(tmp_path):
    make(tmp_path)
    rgb_image(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    rgb_image(tmp_path / "leftImg8bit/train/aachen/aachen_000000_000020_leftImg8bit.png")
    id_png(tmp_path / "gtFine/train/aachen/aachen_000000_000099_gtFine_labelIds.png", grid([7]))
    codes = sorted(p.code for p in open_fmt("cityscapes", tmp_path).check())
    assert codes == ["missing-image", "missing-label", "multi-channel"]


def test_wrong_folder_names_what_it_expected(tmp_path):
    make(tmp_path)
    with pytest.raises(DataError) as e:
        open_fmt("cityscapes", tmp_path / "leftImg8bit")
    msg = e.value.message
    assert "expected" in msg and str(tmp_path / "leftImg8bit" / "leftImg8bit") in msg
    assert "found instead" in msg and "train/" in msg
    assert e.value.exit_code == 5


def test_unknown_split_and_missing_root(tmp_path):
    make(tmp_path)
    ds = open_fmt("cityscapes", tmp_path)
    with pytest.raises(DataError, match="unknown split 'test'"):
        ds.samples("test")
    with pytest.raises(DataError, match="is not a folder"):
        open_fmt("cityscapes", tmp_path / "nope")


def test_training_loader_takes_the_format(tmp_path):
    from uniseg_cli.data.loader import IGNORE_INDEX, BalancedBatches

    make(tmp_path)
    batch = BalancedBatches([open_fmt("cityscapes", tmp_path)], "train", 2).batch(0)
    assert batch["image"].shape[:2] == (2, 3)
    assert set(batch["label"].unique().tolist()) == {IGNORE_INDEX, 0, 1, 2, 11, 13, 18}
