"""IDD: level-3 id PNGs, and `uniseg convert idd` drawing them from the polygon JSON."""

import numpy as np
import pytest
from PIL import Image

from tests.data.formats.writers import grid, id_png, open_fmt, rgb_image, write_json
from uniseg_cli.data.convert import convert_idd, idd_polygons_to_ids
from uniseg_cli.errors import DataError, OutputExistsError

SEQ, FRAME = "201", "frame0029"


def polygons():
    # 8x8 image; later objects cover earlier ones, like the publisher's toolkit draws them.
    return {
        "imgHeight": 8,
        "imgWidth": 8,
        "objects": [
            {"label": "road", "polygon": [[0, 4], [7, 4], [7, 7], [0, 7]], "deleted": 0},
            {"label": "sky", "polygon": [[0, 0], [7, 0], [7, 1], [0, 1]]},
            {"label": "autorickshaw", "polygon": [[2, 5], [3, 5], [3, 6], [2, 6]]},
            {"label": "train", "polygon": [[6, 2], [7, 2], [7, 3], [6, 3]]},
            {"label": "cargroup", "polygon": [[0, 2], [1, 2], [1, 3], [0, 3]]},
            {"label": "out of roi", "polygon": [[5, 6], [7, 6], [7, 7], [5, 7]]},
            {"label": "sky", "polygon": [[4, 4], [5, 4], [5, 5], [4, 5]], "deleted": 1},
        ],
    }


def expected():
    want = np.full((8, 8), 255)
    want[4:8, 0:8] = 0  # road
    want[0:2, :] = 25  # sky or fallback background
    want[5:7, 2:4] = 8  # autorickshaw
    want[2:4, 6:8] = 255  # train -> ignore in the paper's table
    want[2:4, 0:2] = 9  # cargroup -> car
    want[6:8, 5:8] = 255  # out of roi
    return want  # the deleted sky polygon at [4:6, 4:6] stays road


def make(root, split="train"):
    rgb_image(root / "leftImg8bit" / split / SEQ / f"{FRAME}_leftImg8bit.png")
    write_json(root / "gtFine" / split / SEQ / f"{FRAME}_gtFine_polygons.json", polygons())


def test_polygons_drawn_pixel_by_pixel():
    from uniseg_cli.data.convert import idd_name_table

    np.testing.assert_array_equal(idd_polygons_to_ids(polygons(), idd_name_table()), expected())


def test_convert_then_read(tmp_path):
    make(tmp_path)
    make(tmp_path, "val")
    ds = open_fmt("idd", tmp_path)
    with pytest.raises(DataError, match="label file not found") as e:
        ds.load(ds.samples("train")[0])
    assert f"uniseg convert idd --root {tmp_path}" in e.value.hint
    [p] = ds.check(["train"])
    assert p.code == "missing-label" and "uniseg convert idd" in p.message

    done = []
    summary = convert_idd(tmp_path, progress=lambda i, n: done.append((i, n)))
    assert summary["written"] == 2 and done[-1] == (2, 2)
    out = tmp_path / "gtFine/train" / SEQ / f"{FRAME}_gtFine_labellevel3Ids.png"
    assert Image.open(out).mode == "L"
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected())
    img, lab = ds.load(ds.samples("train")[0])
    np.testing.assert_array_equal(lab, expected())
    assert ds.check() == []
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary files left behind

    with pytest.raises(OutputExistsError, match="2 of 2 outputs"):
        convert_idd(tmp_path)
    assert convert_idd(tmp_path, splits=["val"], force=True)["written"] == 1


def test_unknown_polygon_label_names_the_file(tmp_path):
    make(tmp_path)
    bad = polygons()
    bad["objects"].append({"label": "spaceship", "polygon": [[0, 0], [1, 1], [0, 1]]})
    write_json(tmp_path / "gtFine/train" / SEQ / f"{FRAME}_gtFine_polygons.json", bad)
    with pytest.raises(DataError, match=r"_gtFine_polygons.json: object 7 has label 'spaceship'"):
        convert_idd(tmp_path)
    assert not list((tmp_path / "gtFine").rglob("*.png"))


def test_level3_png_values_are_checked(tmp_path):
    make(tmp_path)
    id_png(tmp_path / "gtFine/train" / SEQ / f"{FRAME}_gtFine_labellevel3Ids.png", grid([0, 25, 26]))
    [p] = open_fmt("idd", tmp_path).check()
    assert p.code == "bad-ids" and "[26]" in p.message


def test_wrong_folder(tmp_path):
    make(tmp_path)
    with pytest.raises(DataError, match=r"expected .*gtFine/gtFine .*found instead: .*train/"):
        convert_idd(tmp_path / "gtFine")
    with pytest.raises(DataError, match=r"expected .*leftImg8bit .*found instead"):
        open_fmt("idd", tmp_path / "gtFine")


def test_parallel_conversion_matches_and_keeps_hints(tmp_path):
    for seq in ("0", "1", "2"):
        rgb_image(tmp_path / "leftImg8bit/train" / seq / f"f{seq}_leftImg8bit.png")
        write_json(tmp_path / "gtFine/train" / seq / f"f{seq}_gtFine_polygons.json", polygons())
    assert convert_idd(tmp_path, workers=2)["written"] == 3
    for png in (tmp_path / "gtFine/train").rglob("*_labellevel3Ids.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(png)), expected())
    bad = polygons()
    bad["objects"][0]["label"] = "spaceship"
    write_json(tmp_path / "gtFine/train/1/f1_gtFine_polygons.json", bad)
    with pytest.raises(DataError, match="'spaceship'") as e:
        convert_idd(tmp_path, force=True, workers=2)
    assert e.value.hint and "known labels" in e.value.hint


def test_same_frame_name_in_two_sequences(tmp_path):
    for seq, val in (("0", 0), ("1", 9)):
        rgb_image(tmp_path / "leftImg8bit/val" / seq / "frame0001_leftImg8bit.png")
        id_png(tmp_path / "gtFine/val" / seq / "frame0001_gtFine_labellevel3Ids.png", grid([val]))
    ds = open_fmt("idd", tmp_path)
    samples = ds.samples("val")
    assert [s.stem for s in samples] == ["0_frame0001", "1_frame0001"]
    assert [int(ds.load(s)[1][0, 0]) for s in samples] == [0, 9]
    assert ds.check() == []
