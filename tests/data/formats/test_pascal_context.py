"""PASCAL Context 60: the publisher's 59_context_labels PNGs, mapped by class name."""
import numpy as np
import pytest

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image
from uniseg_cli.errors import DataError


def make(root):
    for stem in ("2008_000002", "2008_000003"):
        rgb_image(root / "JPEGImages" / f"{stem}.jpg")
        id_png(root / "59_context_labels" / f"{stem}.png", grid([0, 1, 2, 37, 59]))
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("2008_000002\n")
    (root / "ImageSets/Main/val.txt").write_text("2008_000003\n")


def test_names_decide_the_train_ids(tmp_path):
    make(tmp_path)
    ds = open_fmt("pascal_context", tmp_path)
    cls = ds.label_space.classes
    assert ds.splits() == ["train", "val"]
    _, lab = ds.load(ds.samples("train")[0])
    # 0 background, 1 aeroplane, 2 bag, 37 person, 59 wood (the published alphabetical 59 list)
    want = [cls.index(n) for n in ("background", "aeroplane", "bag", "person", "wood")]
    assert want == [1, 0, 2, 37, 59]
    np.testing.assert_array_equal(lab, grid(want))
    assert ds.check() == []


def test_59_labels_txt_wins(tmp_path):
    make(tmp_path)
    names = [c for c in open_fmt("pascal_context", tmp_path).label_space.classes if c != "background"]
    names[0], names[1] = names[1], names[0]  # a file that lists bag first, then aeroplane
    (tmp_path / "59_labels.txt").write_text("".join(f"{i}: {n}\n" for i, n in enumerate(names, 1)))
    _, lab = open_fmt("pascal_context", tmp_path).load(open_fmt("pascal_context", tmp_path).samples("val")[0])
    assert lab[0, 1] == 2 and lab[0, 2] == 0  # raw 1 -> bag, raw 2 -> aeroplane


def test_value_60_is_bad_and_wrong_folder(tmp_path):
    make(tmp_path)
    id_png(tmp_path / "59_context_labels/2008_000003.png", grid([60]))
    [p] = open_fmt("pascal_context", tmp_path).check(["val"])
    assert p.code == "bad-ids"
    (tmp_path / "trainval").mkdir()
    with pytest.raises(DataError, match=r"expected .*trainval/JPEGImages .*found instead: .*trainval is empty"):
        open_fmt("pascal_context", tmp_path / "trainval")
