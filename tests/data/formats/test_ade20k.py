"""ADE20K (ADEChallengeData2016): 0 -> ignore, 150 (flag) -> 0, k -> k."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError


def make(root, split="training", stem="ADE_train_00000001"):
    rgb_image(root / "images" / split / f"{stem}.jpg")
    id_png(root / "annotations" / split / f"{stem}.png", grid([0, 1, 149, 150, 3]))


def test_remaps_zero_and_flag(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    make(root)
    make(root, "validation", "ADE_val_00000001")
    ds = open_fmt("ade20k", tmp_path)  # the archive's parent folder is accepted
    assert ds.label_space.num_classes == 150 and ds.label_space.classes[0] == "flag"
    assert ds.splits() == ["train", "val"]
    assert [s.stem for s in ds.samples("val")] == ["ADE_val_00000001"]
    _, lab = ds.load(ds.samples("train")[0])
    np.testing.assert_array_equal(lab, grid([255, 1, 149, 0, 3]))
    assert ds.check() == []


def test_id_151_is_bad_and_wrong_folder(tmp_path):
    make(tmp_path)
    id_png(tmp_path / "annotations/training/ADE_train_00000001.png", grid([151]))
    [p] = open_fmt("ade20k", tmp_path).check()
    assert p.code == "bad-ids"
    with pytest.raises(DataError, match=r"expected .*images/images.*found instead"):
        open_fmt("ade20k", tmp_path / "images")
