"""COCO panoptic: RGB panoptic PNG + JSON segments_info -> 133-class semantic PNGs, then read back."""
import numpy as np
import pytest
from PIL import Image

from tests.data.formats.writers import open_fmt, panoptic_png, rgb_image, write_json
from uniseg_cli.data.convert import convert_coco_panoptic, rgb_to_segment_ids
from uniseg_cli.errors import DataError, OutputExistsError, UsageError

# segment ids large enough to use all three channels (id = R + 256 G + 256^2 B)
PERSON, DOG, WALL, CROWD = 3 + 256 * 7, 70000, 5 + 256 * 1 + 65536 * 2, 12
CATS = {PERSON: 1, DOG: 18, WALL: 199, CROWD: 200}  # person, dog, wall-other-merged, rug-merged
WANT_OF = {PERSON: 0, DOG: 16, WALL: 131, CROWD: 132, 0: 255}


def seg_map():
    seg = np.zeros((8, 8), dtype=np.int64)
    seg[0:4, 0:4] = PERSON
    seg[0:4, 4:8] = DOG
    seg[4:8, 0:6] = WALL
    seg[4:6, 6:8] = CROWD  # [6:8, 6:8] stays 0: no segment -> ignore
    return seg


def make(root, split="val", image_id=139):
    name = f"{image_id:012d}"
    rgb_image(root / f"{split}2017" / f"{name}.jpg")
    panoptic_png(root / "annotations" / f"panoptic_{split}2017" / f"{name}.png", seg_map())
    write_json(root / "annotations" / f"panoptic_{split}2017.json", {
        "images": [{"id": image_id, "file_name": f"{name}.jpg", "height": 8, "width": 8}],
        "annotations": [{"image_id": image_id, "file_name": f"{name}.png", "segments_info": [
            {"id": sid, "category_id": cat, "iscrowd": int(sid == CROWD)} for sid, cat in CATS.items()]}],
        "categories": [{"id": c, "name": str(c)} for c in CATS.values()],
    })
    return name


def test_segment_id_encoding():
    rgb = np.array([[[5, 1, 2]]], dtype=np.uint8)
    assert rgb_to_segment_ids(rgb)[0, 0] == 5 + 256 + 2 * 65536


def test_convert_train_and_val_then_read(tmp_path):
    val = make(tmp_path, "val", 139)
    train = make(tmp_path, "train", 9)
    summary = convert_coco_panoptic(tmp_path)
    assert summary["written"] == 2 and summary["splits"] == ["train", "val"]
    want = np.vectorize(WANT_OF.get)(seg_map())
    for split, name in (("val", val), ("train", train)):
        out = tmp_path / "annotations" / f"panoptic_semseg_{split}2017" / f"{name}.png"
        assert Image.open(out).mode == "L"
        np.testing.assert_array_equal(np.asarray(Image.open(out)), want)
    ds = open_fmt("coco_panoptic", tmp_path)
    assert ds.label_space.num_classes == 133
    assert ds.splits() == ["train", "val"]
    _, lab = ds.load(ds.samples("val")[0])
    np.testing.assert_array_equal(lab, want)
    assert ds.check() == []
    with pytest.raises(OutputExistsError) as e:
        convert_coco_panoptic(tmp_path, splits=["val"])
    assert "--force" in e.value.hint
    assert convert_coco_panoptic(tmp_path, splits=["val"], force=True)["written"] == 1


def test_before_conversion_the_adapter_says_what_to_run(tmp_path):
    make(tmp_path)
    ds = open_fmt("coco_panoptic", tmp_path)
    [p] = ds.check(["val"])
    assert p.code == "missing-label" and "uniseg convert coco-panoptic" in p.message and "none of the 1 images" in p.message


def test_segment_missing_from_json_is_an_error(tmp_path):
    make(tmp_path)
    seg = seg_map()
    seg[7, 7] = 4242
    panoptic_png(tmp_path / "annotations/panoptic_val2017/000000000139.png", seg)
    with pytest.raises(DataError, match=r"000000000139.png: segment ids \[4242\]"):
        convert_coco_panoptic(tmp_path, splits=["val"])


def test_category_outside_the_133_is_an_error(tmp_path):
    make(tmp_path)
    import json

    p = tmp_path / "annotations/panoptic_val2017.json"
    data = json.loads(p.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 12  # id 12 is unused in COCO
    p.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"raw label ids \[12\]"):
        convert_coco_panoptic(tmp_path, splits=["val"])


def test_wrong_folder_and_split(tmp_path):
    make(tmp_path)
    with pytest.raises(DataError, match=r"expected .*annotations .*found instead: .*panoptic_val2017"):
        convert_coco_panoptic(tmp_path / "annotations")
    with pytest.raises(DataError, match=r"expected .*annotations/annotations"):
        open_fmt("coco_panoptic", tmp_path / "annotations")
    with pytest.raises(UsageError, match="unknown split"):
        convert_coco_panoptic(tmp_path, splits=["test"])
    with pytest.raises(DataError, match=r"panoptic_train2017.json not found"):
        convert_coco_panoptic(tmp_path, splits=["train"])
