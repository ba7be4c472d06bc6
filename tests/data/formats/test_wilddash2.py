"""WildDash 2: the publisher's panoptic.json + panoptic PNGs; every non-evaluated id -> void (25)."""
import numpy as np
import pytest

from tests.data.formats.writers import open_fmt, panoptic_png, rgb_image, write_json
from uniseg_cli.errors import DataError

# labelId -> expected class: road 7 -> 1, ego vehicle 1 -> 0, van 61 -> 1 (paper's table), pickup 74 -> 1,
# rectification border 2 -> void 25, unlabeled 0 (no segment) -> void 25.
SEGS = {1: 7, 2: 1, 300: 61, 70000: 2, 5: 74}
WANT_OF = {1: 1, 2: 0, 300: 1, 70000: 25, 5: 1, 0: 25}


def seg_map():
    seg = np.zeros((8, 8), dtype=np.int64)
    seg[0:2] = 1
    seg[2:4] = 2
    seg[4:6, :4] = 300
    seg[4:6, 4:] = 70000
    seg[6:8, :4] = 5
    return seg  # seg[6:8, 4:] = 0: no segment


def make(root, frames=("at0000_100000",)):
    anns, images = [], []
    for i, f in enumerate(frames):
        rgb_image(root / "images" / f"{f}.jpg")
        panoptic_png(root / "panoptic" / f"{f}.png", seg_map())
        images.append({"id": f, "file_name": f"{f}.jpg", "height": 8, "width": 8})
        anns.append({"image_id": f, "file_name": f"{f}.png",
                     "segments_info": [{"id": s, "category_id": c} for s, c in SEGS.items()]})
    write_json(root / "panoptic.json", {"images": images, "annotations": anns,
                                        "categories": [{"id": c, "name": str(c)} for c in sorted(set(SEGS.values()))]})


def test_reads_panoptic_directly(tmp_path):
    make(tmp_path, ("at0000_100000", "cn0001_100001"))
    ds = open_fmt("wilddash2", tmp_path)
    assert ds.label_space.num_classes == 26 and ds.label_space.classes[25] == "void"
    assert ds.splits() == ["val"]
    assert [s.stem for s in ds.samples("val")] == ["at0000_100000", "cn0001_100001"]
    _, lab = ds.load(ds.samples("val")[0])
    np.testing.assert_array_equal(lab, np.vectorize(WANT_OF.get)(seg_map()))
    assert (lab != 255).all()  # nothing is ignored in WildDash 2
    assert ds.check() == []


def test_png_segment_not_in_json(tmp_path):
    make(tmp_path)
    seg = seg_map()
    seg[0, 0] = 999
    panoptic_png(tmp_path / "panoptic/at0000_100000.png", seg)
    [p] = open_fmt("wilddash2", tmp_path).check()
    assert p.code == "bad-ids" and "999" in p.message


def test_wrong_folder(tmp_path):
    make(tmp_path)
    with pytest.raises(DataError, match=r"expected .*images/images .*found instead: .*holds: at0000_100000.jpg"):
        open_fmt("wilddash2", tmp_path / "images")
