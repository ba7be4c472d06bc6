"""Mapillary Vistas v1.2: palette PNGs whose indices are ids 0-65 -> 64 classes."""
import numpy as np
import pytest
from PIL import Image

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError

RAW = [0, 13, 39, 40, 41, 64, 65, 27]
WANT = [0, 13, 39, 255, 40, 63, 255, 27]  # Mailbox 40 and Unlabeled 65 -> ignore; 41-64 shift down


def make(root, split="training", key="__CRyFzoDOXn6unQ6a3DnQ"):
    rgb_image(root / split / "images" / f"{key}.jpg")
    id_png(root / split / "v1.2" / "labels" / f"{key}.png", grid(RAW), palette=True)


def test_palette_indices_are_the_ids(tmp_path):
    make(tmp_path)
    make(tmp_path, "validation", "zzz")
    path = tmp_path / "training/v1.2/labels/__CRyFzoDOXn6unQ6a3DnQ.png"
    assert Image.open(path).mode == "P"
    ds = open_fmt("mapillary", tmp_path)
    assert ds.label_space.num_classes == 64
    assert ds.splits() == ["train", "val"]
    assert [s.stem for s in ds.samples("validation")] == ["zzz"]
    img, lab = ds.load(ds.samples("train")[0])
    assert img.shape == (8, 8, 3)
    np.testing.assert_array_equal(lab, grid(WANT))
    assert ds.check() == []


def test_v10_layout_is_not_v12(tmp_path):
    rgb_image(tmp_path / "training/images/a.jpg")
    id_png(tmp_path / "training/labels/a.png", grid([1]), palette=True)  # v1.0 folder, not v1.2
    ds = open_fmt("mapillary", tmp_path)
    [p] = ds.check()
    assert p.code == "missing-label" and "v1.2/labels/a.png" in p.path


def test_wrong_folder(tmp_path):
    make(tmp_path)
    with pytest.raises(DataError, match=r"expected .*training/images or .*validation/images.*found instead: .*images/"):
        open_fmt("mapillary", tmp_path / "training")
