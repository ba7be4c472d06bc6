"""CamVid: the publisher's RGB colour labels (*_L.png) -> 32 classes -> 11."""
import numpy as np
import pytest

from tests.data.formats.writers import color_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError

# publisher colour -> expected class of the 11: Sky 0, Building 1, Wall -> Building 1, Column_Pole 2,
# Road 3, LaneMkgsDriv -> Road 3, Tree 5, Child -> Pedestrian 9, MotorcycleScooter -> Bicyclist 10, Void -> 255
COLOURS = [((128, 128, 128), 0), ((128, 0, 0), 1), ((64, 192, 0), 1), ((192, 192, 128), 2), ((128, 64, 128), 3),
           ((128, 0, 192), 3), ((128, 128, 0), 5), ((192, 128, 64), 9), ((192, 0, 192), 10), ((0, 0, 0), 255)]


def label_rgb():
    cols = np.array([c for c, _ in COLOURS], dtype=np.uint8)
    idx = np.resize(np.arange(len(COLOURS)), 64).reshape(8, 8)
    return cols[idx], np.array([w for _, w in COLOURS])[idx]


def make(root, frames=("0001TP_006690", "0016E5_00390")):
    rgb, want = label_rgb()
    for f in frames:
        rgb_image(root / "701_StillsRaw_full" / f"{f}.png")
        color_png(root / "LabeledApproved_full" / f"{f}_L.png", rgb)
    return want


def test_colour_labels_grouped(tmp_path):
    want = make(tmp_path)
    (tmp_path / "splits").mkdir()
    # a SegNet-style list line and a bare stem both name a frame
    (tmp_path / "splits/train.txt").write_text("/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png\n")
    (tmp_path / "splits/test.txt").write_text("0016E5_00390\n")
    ds = open_fmt("camvid", tmp_path)
    assert ds.splits() == ["test", "train", "all"]
    assert [s.stem for s in ds.samples("all")] == ["0001TP_006690", "0016E5_00390"]
    assert [s.stem for s in ds.samples("test")] == ["0016E5_00390"]
    _, lab = ds.load(ds.samples("train")[0])
    np.testing.assert_array_equal(lab, want)
    assert ds.check() == []


def test_label_colors_txt_is_honoured(tmp_path):
    make(tmp_path, ("a",))
    # swap Sky and Building colours in the file: the file wins over the built-in table
    (tmp_path / "label_colors.txt").write_text("128 0 0\tSky\n128 128 128\tBuilding\n64 192 0\tWall\n"
                                               "192 192 128\tColumn_Pole\n128 64 128\tRoad\n128 0 192\tLaneMkgsDriv\n"
                                               "128 128 0\tTree\n192 128 64\tChild\n192 0 192\tMotorcycleScooter\n0 0 0\t\tVoid\n")
    _, lab = open_fmt("camvid", tmp_path).load(open_fmt("camvid", tmp_path).samples("all")[0])
    assert lab[0, 0] == 1 and lab[0, 1] == 0


def test_unknown_colour_and_wrong_folder(tmp_path):
    make(tmp_path, ("a",))
    bad = np.zeros((8, 8, 3), dtype=np.uint8)
    bad[0, 0] = (1, 2, 3)
    color_png(tmp_path / "LabeledApproved_full/a_L.png", bad)
    [p] = open_fmt("camvid", tmp_path).check()
    assert p.code == "bad-ids" and "(1, 2, 3)" in p.message
    with pytest.raises(DataError, match=r"expected .*701_StillsRaw_full/701_StillsRaw_full .*found instead: .*holds: a.png"):
        open_fmt("camvid", tmp_path / "701_StillsRaw_full")
