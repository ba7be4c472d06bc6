"""ScanNet-20: scannet_frames_25k scenes with NYU40 label PNGs + the publisher's scene lists."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError

# NYU40 -> alphabetical 20 classes: wall 1 -> 18, floor 2 -> 9, bathtub 36 -> 0, otherfurniture 39 -> 10,
# desk 14 -> 7; 0 (unannotated), 13 (blinds), 40 (otherprop) -> ignore
RAW = [1, 2, 36, 39, 14, 0, 13, 40]
WANT = [18, 9, 0, 10, 7, 255, 255, 255]


def make(root):
    for scene in ("scene0000_00", "scene0011_00"):
        for frame in ("000000", "000100"):
            rgb_image(root / scene / "color" / f"{frame}.jpg")
            id_png(root / scene / "label" / f"{frame}.png", grid(RAW))
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    (root / "scannetv2_val.txt").write_text("scene0011_00\n")


def test_nyu40_ids_by_name(tmp_path):
    make(tmp_path / "scannet_frames_25k")
    ds = open_fmt("scannet", tmp_path)
    assert ds.splits() == ["train", "val"]
    assert [s.stem for s in ds.samples("val")] == ["scene0011_00_000000", "scene0011_00_000100"]
    _, lab = ds.load(ds.samples("train")[1])
    np.testing.assert_array_equal(lab, grid(WANT))
    assert ds.check() == []


def test_id_41_is_bad_and_wrong_folder(tmp_path):
    make(tmp_path)
    id_png(tmp_path / "scene0000_00/label/000000.png", grid([41]))
    [p] = open_fmt("scannet", tmp_path).check(["train"])
    assert p.code == "bad-ids"
    with pytest.raises(DataError, match=r"expected .*scannetv2_train.txt or .*found instead: .*color/"):
        open_fmt("scannet", tmp_path / "scene0000_00")
