"""compare() on hand-made taxonomies with scores computed by hand; import from CSV; the CLI."""
import json

import numpy as np
import pytest

from uniseg_cli.data.base import LabelSpace
from uniseg_cli.errors import ArtifactError, UsageError
from uniseg_cli.taxonomy.compare import compare, hard_relations, relations
from uniseg_cli.taxonomy.importer import import_csv
from uniseg_cli.taxonomy.schema import Taxonomy, write_taxonomy

AB = {"A": ["road", "car", "sky"], "B": ["road", "car", "sky"]}


def _tax(datasets, edges):
    """edges: {dataset: [(label, node), ...]}"""
    n = 1 + max(u for es in edges.values() for _, u in es)
    maps = {}
    for d, classes in datasets.items():
        m = np.zeros((len(classes), n), bool)
        for lab, u in edges[d]:
            m[classes.index(lab), u] = True
        maps[d] = m
    return Taxonomy.from_mappings(maps, datasets=datasets)


TRUTH = _tax(AB, {"A": [("road", 0), ("car", 1), ("sky", 2)], "B": [("road", 0), ("car", 1), ("sky", 2)]})


def test_identical_is_perfect():
    r = compare(TRUTH, TRUTH)
    assert r["precision"] == r["recall"] == r["f1"] == 1.0
    assert r["exact_share"] == 1.0 and r["disagreements"] == [] and r["nodes"] == {"a": 3, "b": 3, "a_total": 3, "b_total": 3}


def test_merged_pair_scores_by_hand():
    # B.road takes A.road and A.car (merged); B.car is left alone
    pred = _tax(AB, {"A": [("road", 0), ("car", 1), ("sky", 2)], "B": [("road", 0), ("road", 1), ("sky", 2), ("car", 3)]})
    r = compare(pred, TRUTH)
    # pred relations: A.road~B.road, A.car~B.road, A.sky~B.sky (3); truth: road, car, sky pairs (3); shared 2
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3) and r["f1"] == pytest.approx(2 / 3)
    # labels whose partners match: A.road, A.sky, B.sky (A.car, B.road, B.car differ) -> 3 of 6
    assert r["exact_share"] == pytest.approx(0.5)
    assert {(tuple(d["labels"]), d["in"]) for d in r["disagreements"]} == {
        (("A:car", "B:road"), "A only"), (("A:car", "B:car"), "B only")}
    assert r["nodes"]["a"] == 4
    # and the other way round precision and recall swap
    back = compare(TRUTH, pred)
    assert back["precision"] == pytest.approx(2 / 3) and back["relations"]["a"] == 3


def test_hard_relations_are_unions_and_granularity():
    ds = {"A": ["road", "marking", "sky"], "B": ["road", "sky"]}
    truth = _tax(ds, {"A": [("road", 0), ("marking", 1), ("sky", 2)], "B": [("road", 0), ("road", 1), ("sky", 2)]})
    hard = hard_relations(truth, ["A", "B"])
    assert hard == {frozenset({("A", "road"), ("B", "road")}), frozenset({("A", "marking"), ("B", "road")})}
    assert len(relations(truth, ["A", "B"])) == 3
    only_names = _tax(ds, {"A": [("road", 0), ("marking", 1), ("sky", 2)], "B": [("road", 0), ("sky", 2)]})
    r = compare(only_names, truth)
    assert r["precision"] == 1.0 and r["recall"] == pytest.approx(2 / 3) and r["hard_recall"] == pytest.approx(0.5)
    assert [d for d in r["disagreements"] if d["hard"]] == [{"labels": ["A:marking", "B:road"], "in": "B only", "hard": True}]


def test_dataset_only_nodes_do_not_make_a_relation_hard():
    ds = {"A": ["road"], "B": ["road", "bike"]}
    t = _tax(ds, {"A": [("road", 0)], "B": [("road", 0), ("bike", 1)]})
    assert hard_relations(t, ["A", "B"]) == set()


def test_only_shared_datasets_count_and_errors():
    extra = _tax({**AB, "C": ["vehicle"]}, {"A": [("road", 0), ("car", 1), ("sky", 2)],
                                            "B": [("road", 0), ("car", 1), ("sky", 2)], "C": [("vehicle", 1)]})
    r = compare(extra, TRUTH)
    assert r["datasets"] == ["A", "B"] and r["f1"] == 1.0 and r["nodes"]["a_total"] == 3
    lone = _tax({"A": AB["A"]}, {"A": [("road", 0), ("car", 1), ("sky", 2)]})
    with pytest.raises(UsageError, match="share 1 dataset"):
        compare(lone, TRUTH)
    other = _tax({"A": AB["A"], "B": ["road", "auto", "sky"]}, {"A": [("road", 0), ("car", 1), ("sky", 2)],
                                                               "B": [("road", 0), ("auto", 1), ("sky", 2)]})
    with pytest.raises(UsageError, match="different classes"):
        compare(other, TRUTH)


SPACES = {"A": LabelSpace("A", tuple(AB["A"])), "B": LabelSpace("B", tuple(AB["B"]))}


def test_import_csv_and_tsv(tmp_path):
    (tmp_path / "t.csv").write_text("dataset,label,unified\nA,road,road\nB,Road,road\nA,car,vehicle\nB,car,vehicle\n"
                                    "# a comment\nA,sky,sky\nB,sky,sky\n")
    tax = import_csv(tmp_path / "t.csv", label_spaces=SPACES)
    assert compare(tax, TRUTH)["f1"] == 1.0 and tax.names == {0: "road", 1: "vehicle", 2: "sky"}
    (tmp_path / "t.tsv").write_text("A\troad\tr\nB\troad\tr\nB\troad\tm\nA\tcar\tm\nA\tsky\ts\nB\tsky\ts\n")
    tax = import_csv(tmp_path / "t.tsv", label_spaces=SPACES, unlisted="own-node")
    assert tax.nodes_of("B", 0) == [0, 1] and tax.nodes_of("B", 1) == [3]  # B.car got its own node
    with pytest.raises(ArtifactError, match="'car'"):
        import_csv(tmp_path / "t.tsv", label_spaces=SPACES)
    (tmp_path / "bad.csv").write_text("A,road,r\nA,car,r\nA,sky,s\nB,road,r\nB,car,c\nB,sky,s\n")
    with pytest.raises(ArtifactError, match="several labels of dataset 'A'"):
        import_csv(tmp_path / "bad.csv", label_spaces=SPACES)
    (tmp_path / "typo.csv").write_text("A,raod,r\n")
    with pytest.raises(ArtifactError, match="line 1: 'A' has no class 'raod'"):
        import_csv(tmp_path / "typo.csv", label_spaces=SPACES)
    (tmp_path / "unknown.csv").write_text("nosuch,road,r\n")
    with pytest.raises(UsageError, match="no label space for dataset nosuch"):
        import_csv(tmp_path / "unknown.csv")


def test_import_builtin_label_spaces(tmp_path):
    from uniseg_cli.data.labelspaces import get_label_space

    rows = ["dataset,label,unified"]
    for d in ("cityscapes", "bdd100k"):
        rows += [f"{d},{c},{c}" for c in get_label_space(d).classes]
    (tmp_path / "cs_bdd.csv").write_text("\n".join(rows) + "\n")
    tax = import_csv(tmp_path / "cs_bdd.csv")
    assert tax.num_nodes == 19 and compare(tax, tax)["relations"]["a"] == 19


def test_cli_compare_and_import(cli, tmp_path):
    write_taxonomy(TRUTH, tmp_path / "truth.parquet")
    (tmp_path / "t.csv").write_text("A,road,r\nB,road,r\nA,car,c\nB,road,c\nB,car,x\nA,sky,s\nB,sky,s\n")
    from tests.data.tiny import write_generic

    ra = write_generic(tmp_path / "dsA", name="A", classes=AB["A"])
    rb = write_generic(tmp_path / "dsB", name="B", classes=AB["B"])
    code, out, err = cli("taxonomy", "import", tmp_path / "t.csv", "--out", tmp_path / "p.parquet",
                         "--dataset", f"A={ra}", "--dataset", str(rb), "--json")
    assert code == 0, err
    assert json.loads(out)["num_nodes"] == 4
    code, out, _ = cli("taxonomy", "compare", tmp_path / "p.parquet", tmp_path / "truth.parquet", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["precision"] == pytest.approx(2 / 3) and doc["exact_share"] == pytest.approx(0.5)
    code, out, _ = cli("taxonomy", "compare", tmp_path / "p.parquet", tmp_path / "truth.parquet")
    assert code == 0 and "F1 66.7%" in out and "only in A: A:car ~ B:road" in out
    code, _, err = cli("taxonomy", "import", tmp_path / "t.csv", "--out", tmp_path / "p.parquet", "--dataset", f"A={ra}",
                       "--dataset", str(rb))
    assert code == 4 and "--force" in err
