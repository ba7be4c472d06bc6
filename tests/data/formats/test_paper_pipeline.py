"""pipelines/paper-7ds.yaml: 7 training + 6 unseen datasets in built-in formats, paper settings."""
from pathlib import Path

import pytest
import yaml

from uniseg_cli import stages as S
from uniseg_cli.config import build_params
from uniseg_cli.data import known_formats

PAPER = Path(__file__).resolve().parents[3] / "pipelines" / "paper-7ds.yaml"


def doc():
    return yaml.safe_load(PAPER.read_text())


def test_datasets_are_the_papers():
    ds = doc()["datasets"]
    train = [d["format"] for d in ds if d["role"] == "train"]
    unseen = [d["format"] for d in ds if d["role"] == "unseen"]
    assert train == ["cityscapes", "mapillary", "sunrgbd", "bdd100k", "idd", "ade20k", "coco_panoptic"]
    assert unseen == ["wilddash2", "kitti", "camvid", "scannet", "pascal_voc", "pascal_context"]
    assert set(train + unseen) <= set(known_formats())


def test_stage_sections_hold_the_papers_settings():
    st = doc()["stages"]
    assert st["embed-labels"]["model"] == "meta-llama/Llama-2-7b-hf"
    assert st["describe-labels"]["provider"] == "openai"
    for name, sec in st.items():
        if name in S.available_stages():
            build_params(S.get_stage(name).params_cls, sec)  # raises on unknown keys or bad values
    est = build_params(S.get_stage("estimate-nodes").params_cls, st["estimate-nodes"])
    assert (est.backbone, est.crop_size, est.images_per_dataset, est.lr, est.iters) == ("hrnet_w48", 768, 3, 1e-4, 100000)
    assert est.loss_weights["coco"] == 15 and est.loss_weights["mapillary"] == 3


def test_whole_file_validates():
    if "evaluate" not in S.available_stages():
        pytest.skip("the evaluate stage is not registered yet")
    from uniseg_cli.pipeline import load_pipeline

    p = load_pipeline(PAPER, check_roots=False)
    assert len(p.datasets) == 13 and p.stage_names[0] == "describe-labels"
