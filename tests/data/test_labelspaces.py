"""Built-in label spaces agree with the reference file; lookup tables map raw ids as the public code does."""
import json
from pathlib import Path

import numpy as np
import pytest

from uniseg_cli.data.labelspaces import builtin_names, get_label_space, raw_to_train_table, resolve_name, role
from uniseg_cli.errors import UsageError

REF = Path("/work/shared/reference/label_spaces.json")
PKG = Path(__file__).resolve().parents[2] / "uniseg_cli" / "data" / "label_spaces.json"


def _ref():
    return json.loads((REF if REF.is_file() else PKG).read_text())


@pytest.mark.parametrize("name", list(_ref()))
def test_each_label_space_matches_the_reference(name):
    ref = _ref()[name]
    ls = get_label_space(name)
    assert ls.num_classes == ref["num_classes"] == len(ref["classes"])
    assert ls.ignore_index == ref["ignore_index"]
    assert list(ls.classes) == ref["classes"]
    if ref["descriptions"]:
        assert len(ls.descriptions) == ls.num_classes
    assert role(name) == ref["role"]
    table = raw_to_train_table(name)
    for raw, train in ref["raw_to_train_id"].items():
        if int(raw) >= 0:
            assert table[int(raw)] == train


def test_the_package_copy_is_the_reference():
    if not REF.is_file():
        pytest.skip("reference file not on this machine")
    assert json.loads(PKG.read_text()) == json.loads(REF.read_text())


def test_paper_facts():
    assert builtin_names()[:7] == ["cityscapes", "mapillary_vistas_v1.2", "sunrgbd", "bdd100k", "idd", "ade20k",
                                   "coco_panoptic_133"]
    cs = raw_to_train_table("cityscapes")
    assert cs.shape == (256,) and cs.dtype == np.int64
    assert cs[7] == 0 and cs[33] == 18 and cs[0] == 255 and cs[200] == 255  # unknown -> ignore
    assert raw_to_train_table("ade20k")[150] == 0 and raw_to_train_table("ade20k")[0] == 255  # flag is class 0
    assert raw_to_train_table("cityscapes", unknown=-2)[200] == -2
    wd = raw_to_train_table("wilddash2")
    assert (wd[:81] != 255).all()  # nothing ignored in WildDash2: void is class 25
    assert get_label_space("sunrgbd").classes[0] == "bag"


def test_aliases_and_unknown_names():
    assert resolve_name("mapillary") == "mapillary_vistas_v1.2"
    assert resolve_name("cs_sem_seg_val") == "cityscapes"
    assert get_label_space("ADE20K").name == "ade20k"
    with pytest.raises(UsageError) as e:
        get_label_space("nosuchset")
    assert "nosuchset" in e.value.message and "cityscapes" in e.value.hint
