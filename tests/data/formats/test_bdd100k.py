"""BDD100K: images/10k + labels/sem_seg/masks, already in train ids."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError


def make(root, split="train", name="0004a4c0-d4dff0ad", raw=(0, 5, 18, 255)):
    rgb_image(root / "images/10k" / split / f"{name}.jpg")
    id_png(root / "labels/sem_seg/masks" / split / f"{name}.png", grid(raw))


def test_masks_are_train_ids(tmp_path):
    make(tmp_path / "bdd100k")
    make(tmp_path / "bdd100k", "val", "b1c66a42-6f7d68ca")
    ds = open_fmt("bdd100k", tmp_path)  # the parent of bdd100k/ works too
    assert ds.splits() == ["train", "val"]
    _, lab = ds.load(ds.samples("val")[0])
    np.testing.assert_array_equal(lab, grid([0, 5, 18, 255]))
    assert ds.check() == []


def test_id_19_is_bad(tmp_path):
    make(tmp_path, raw=(0, 19))
    [p] = open_fmt("bdd100k", tmp_path).check()
    assert p.code == "bad-ids" and "[19]" in p.message


def test_wrong_folder(tmp_path):
    (tmp_path / "images/100k/train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"expected .*images/10k .*found instead: .*100k/"):
        open_fmt("bdd100k", tmp_path)
