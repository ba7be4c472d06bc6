"""`uniseg datasets` and `uniseg convert` end to end, and the built-in formats through check-data."""
import json

import numpy as np
from PIL import Image

from tests.data.formats import test_coco_panoptic as coco
from tests.data.formats import test_idd as idd
from tests.data.formats.test_cityscapes import make as make_cityscapes

FORMATS = ["ade20k", "bdd100k", "camvid", "cityscapes", "coco_panoptic", "idd", "kitti", "mapillary",
           "pascal_context", "pascal_voc", "scannet", "sunrgbd", "wilddash2"]


def test_datasets_lists_every_format_with_layout(cli):
    code, out, _ = cli("datasets", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["formats"]}
    assert set(FORMATS) <= set(rows)
    assert rows["cityscapes"]["num_classes"] == 19 and "gtFine_labelIds.png" in rows["cityscapes"]["layout"]
    assert rows["idd"]["num_classes"] == 26 and "uniseg convert idd" in rows["idd"]["layout"]
    assert rows["coco_panoptic"]["num_classes"] == 133
    code, text, _ = cli("datasets")
    assert code == 0 and "mapillary  (mapillary_vistas_v1.2, 64 classes)" in text
    assert "v1.2/labels" in text


def test_convert_idd_cli(cli, tmp_path):
    idd.make(tmp_path)
    code, out, err = cli("convert", "idd", "--root", tmp_path, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["written"] == 1 and res["splits"] == ["train"]
    png = tmp_path / "gtFine/train" / idd.SEQ / f"{idd.FRAME}_gtFine_labellevel3Ids.png"
    np.testing.assert_array_equal(np.asarray(Image.open(png)), idd.expected())
    code, _, err = cli("convert", "idd", "--root", tmp_path)
    assert code == 4 and "--force" in err
    code, out, _ = cli("convert", "idd", "--root", tmp_path, "--force")
    assert code == 0 and out.strip() == str(tmp_path)


def test_convert_coco_cli_and_errors(cli, tmp_path):
    coco.make(tmp_path, "val")
    code, out, err = cli("convert", "coco-panoptic", "--root", tmp_path, "--split", "val", "--json")
    assert code == 0, err
    assert json.loads(out)["written"] == 1
    code, _, err = cli("convert", "coco-panoptic", "--root", tmp_path / "val2017")
    assert code == 5 and "expected" in err and "found instead" in err
    code, _, err = cli("convert", "ade20k", "--root", tmp_path)
    assert code == 2 and "idd, coco-panoptic" in err


def test_check_data_accepts_a_builtin_format(cli, tmp_path):
    make_cityscapes(tmp_path)
    code, out, err = cli("check-data", f"cs=cityscapes:{tmp_path}", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["ok"] and res["datasets"][0]["splits"] == {"train": 1}
    code, _, err = cli("check-data", f"cs=cityscapes:{tmp_path / 'gtFine'}")
    assert code == 5 and "expected" in err and "leftImg8bit" in err
