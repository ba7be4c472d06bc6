"""KITTI semantics: training/image_2 + training/semantic (Cityscapes labelIds)."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError


def test_reads_training_as_train_with_cityscapes_ids(tmp_path):
    img = rgb_image(tmp_path / "training/image_2/000000_10.png")
    id_png(tmp_path / "training/semantic/000000_10.png", grid([7, 23, 24, 0, 5, 32]))
    rgb_image(tmp_path / "testing/image_2/000000_10.png")
    ds = open_fmt("kitti", tmp_path)
    assert ds.splits() == ["train"]
    assert [s.stem for s in ds.samples("train")] == ["000000_10"]
    assert ds.samples("training") == ds.samples("train")
    got, lab = ds.load(ds.samples("train")[0])
    np.testing.assert_array_equal(got, img)
    np.testing.assert_array_equal(lab, grid([0, 10, 11, 255, 255, 17]))
    assert ds.check() == []


def test_size_mismatch_is_found(tmp_path):
    rgb_image(tmp_path / "training/image_2/000001_10.png")
    id_png(tmp_path / "training/semantic/000001_10.png", np.full((4, 8), 7))
    ds = open_fmt("kitti", tmp_path)
    [p] = ds.check()
    assert p.code == "size-mismatch"
    with pytest.raises(DataError, match="label is 8x4"):
        ds.load(ds.samples("train")[0])


def test_wrong_folder(tmp_path):
    rgb_image(tmp_path / "training/image_2/000000_10.png")
    with pytest.raises(DataError, match=r"expected .*training/semantic.*found instead: .*image_2/"):
        open_fmt("kitti", tmp_path)


def test_shallow_check_reads_headers_only(tmp_path):
    rgb_image(tmp_path / "training/image_2/000000_10.png")
    id_png(tmp_path / "training/semantic/000000_10.png", grid([7, 250]))  # bad id: only a deep check sees it
    rgb_image(tmp_path / "training/image_2/000001_10.png")
    id_png(tmp_path / "training/semantic/000001_10.png", np.full((4, 8), 7))
    ds = open_fmt("kitti", tmp_path)
    assert [p.code for p in ds.check(deep=False)] == ["size-mismatch"]
    assert sorted(p.code for p in ds.check()) == ["bad-ids", "size-mismatch"]
    from uniseg_cli.data.loader import validate_datasets

    with pytest.raises(DataError, match="size-mismatch|label is 8x4"):
        validate_datasets([ds], ["train"])
