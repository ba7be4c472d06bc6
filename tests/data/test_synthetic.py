"""The synthetic world: deterministic bytes, a valid truth taxonomy, every label conflict present."""
import json
import re

import numpy as np
import pytest

from uniseg_cli.data import DatasetSpec, open_dataset
from uniseg_cli.data.synthetic import DATASETS, PRESETS, UNIVERSAL, dataset_specs, make_world
from uniseg_cli.errors import OutputExistsError, UsageError
from uniseg_cli.taxonomy.compare import compare
from uniseg_cli.taxonomy.schema import read_taxonomy


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    make_world(tmp_path / "a", seed=4, preset="tiny")
    make_world(tmp_path / "b", seed=4, preset="tiny")
    make_world(tmp_path / "c", seed=5, preset="tiny")
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    imgs = [k for k in fa if "/images/" in k]
    assert sum(fa[k] != fc[k] for k in imgs) == len(imgs)


def test_truth_is_valid_and_holds_every_conflict(tmp_path):
    info = make_world(tmp_path / "w", seed=0, preset="tiny")
    tax = read_taxonomy(info["truth"])
    assert tax.kind == "synthetic-truth"
    assert list(tax.datasets) == list(PRESETS["tiny"])
    # one node per universal class that some dataset labels (the ego-vehicle hood is never labelled)
    assert tax.num_nodes == len(UNIVERSAL) - 1 and "ego vehicle" not in tax.names.values()
    node = {n: u for u, n in tax.names.items()}

    def nodes(d, label):
        return set(tax.nodes_of(d, tax.datasets[d].index(label)))

    # same concept, different names
    assert nodes("citydrive", "person") == nodes("vistadrive", "Pedestrian") == nodes("homescan", "person") == {node["person"]}
    # coarse = union of finer
    assert nodes("citydrive", "road") == nodes("vistadrive", "Road") | nodes("vistadrive", "Lane Marking - General") \
        | nodes("vistadrive", "Lane Marking - Crosswalk")
    # same name, different granularity
    assert nodes("citydrive", "curb") == nodes("vistadrive", "Curb") | nodes("vistadrive", "Barrier")
    # dataset-only classes
    assert "Bicycle" in tax.datasets["vistadrive"] and not any("icycle" in c for c in tax.datasets["citydrive"])
    # the unseen dataset and roles
    roles = {d["name"]: d["role"] for d in info["datasets"]}
    assert roles["camdrive"] == "unseen" and {roles[n] for n in ("citydrive", "vistadrive", "homescan")} == {"train"}
    assert compare(tax, tax)["f1"] == 1.0 and compare(tax, tax)["relations"]["hard_b"] > 5


def test_datasets_are_clean_generic_datasets_with_ignore_and_shift(tmp_path):
    info = make_world(tmp_path / "w", seed=1, preset="tiny")
    means = {}
    for spec in dataset_specs(info):
        ad = open_dataset(spec)
        assert ad.check() == []
        assert ad.splits() == ["train", "val"]
        assert ad.label_space.descriptions and all(len(d) > 5 for d in ad.label_space.descriptions)
        labs = [ad.load(s)[1] for s in ad.samples("train")]
        if spec.name == "citydrive":  # the hood and bicycles are unlabeled
            assert any((lab == 255).any() for lab in labs)
        means[spec.name] = np.mean([ad.load(s)[0].reshape(-1, 3).mean(0) for s in ad.samples("train")], 0)
    assert means["citydrive"][0] - means["citydrive"][2] > means["vistadrive"][0] - means["vistadrive"][2]
    world = json.loads((tmp_path / "w" / "world.json").read_text())
    assert world["preset"] == "tiny" and [d["root"] for d in world["datasets"]] == list(PRESETS["tiny"])


def test_anonymize_replaces_every_name_consistently(tmp_path):
    plain = make_world(tmp_path / "p", seed=2, preset="tiny")
    anon = make_world(tmp_path / "a", seed=2, preset="tiny", anonymize=True)
    tp, ta = read_taxonomy(plain["truth"]), read_taxonomy(anon["truth"])
    codes = [c for cls in ta.datasets.values() for c in cls]
    assert all(re.fullmatch(r"c\d\d[a-z]", c) for c in codes) and len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"u\d\d[a-z]", n) for n in ta.names.values())
    for d in tp.datasets:
        assert np.array_equal(tp.mapping(d), ta.mapping(d))
        ad = open_dataset(DatasetSpec(d, str(tmp_path / "a" / d)))
        assert list(ad.label_space.classes) == list(ta.datasets[d])
        assert all(c in desc for c, desc in zip(ad.label_space.classes, ad.label_space.descriptions))
    # pixels are the same world
    s = "citydrive/images/train/citydrive_train_00000.png"
    assert (tmp_path / "p" / s).read_bytes() == (tmp_path / "a" / s).read_bytes()


def test_existing_world_needs_force_and_unknown_preset(tmp_path):
    make_world(tmp_path / "w", preset="tiny")
    with pytest.raises(OutputExistsError):
        make_world(tmp_path / "w", preset="tiny")
    make_world(tmp_path / "w", preset="tiny", force=True)
    with pytest.raises(UsageError):
        make_world(tmp_path / "x", preset="huge")


def test_every_label_covers_universal_classes_of_its_domain():
    for name, d in DATASETS.items():
        for label, (members, desc) in d["labels"].items():
            assert members and desc
            for m in members:
                assert UNIVERSAL[m][0] in (d["domain"], "both"), (name, label, m)


def test_cli_synth_json(cli, tmp_path):
    code, out, _ = cli("synth", "--out", tmp_path / "w", "--preset", "tiny", "--seed", "3", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["seed"] == 3 and len(doc["datasets"]) == 4 and doc["truth"].endswith("truth.parquet")
    code, _, err = cli("synth", "--out", tmp_path / "w", "--preset", "tiny")
    assert code == 4 and "--force" in err


def test_an_appended_unseen_dataset_leaves_the_others_byte_identical(tmp_path, monkeypatch):
    # the quality preset is the demo world plus wildroad: the shared datasets must be the same files
    assert list(PRESETS["quality"])[:4] == list(PRESETS["demo"])
    assert all(PRESETS["quality"][n] == PRESETS["demo"][n] for n in PRESETS["demo"])
    assert PRESETS["quality"]["wildroad"][0] == "unseen"
    monkeypatch.setitem(PRESETS, "tiny-wild", {**PRESETS["tiny"], "wildroad": ("unseen", 48, 64, 3, 3)})
    a = make_world(tmp_path / "a", seed=2, preset="tiny")
    b = make_world(tmp_path / "b", seed=2, preset="tiny-wild")
    for name in PRESETS["tiny"]:
        fa, fb = _files(tmp_path / "a" / name), _files(tmp_path / "b" / name)
        assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa), name
    roles = {d["name"]: d["role"] for d in b["datasets"]}
    assert roles["wildroad"] == "unseen" and len(b["datasets"]) == len(a["datasets"]) + 1
    # wildroad covers only classes the others label, so the truth gains no node, only its mapping
    ta, tb = read_taxonomy(a["truth"]), read_taxonomy(b["truth"])
    assert tb.num_nodes == ta.num_nodes and "wildroad" in tb.datasets
    assert compare(tb.restrict(list(PRESETS["tiny"])), ta)["f1"] == 1.0
