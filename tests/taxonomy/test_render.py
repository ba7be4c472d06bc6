"""The taxonomy picture (SVG, PNG) and the `taxonomy show` table."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from uniseg_cli.errors import UsageError
from uniseg_cli.taxonomy.render import layout_taxonomy, node_rows, render_taxonomy, show_table, to_svg
from uniseg_cli.taxonomy.schema import Taxonomy

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def tax():
    # nodes: 0 road, 1 car, 2 truck, 3 person, 4 sky (city only), 5 unused channel
    datasets = {"city": ["road", "vehicle", "person & rider", "sky"], "mall": ["floor", "car", "truck", "person"]}
    m_city = np.zeros((4, 6), bool)
    m_city[0, 0] = m_city[1, 1] = m_city[1, 2] = m_city[2, 3] = m_city[3, 4] = True
    m_mall = np.zeros((4, 6), bool)
    m_mall[0, 0] = m_mall[1, 1] = m_mall[2, 2] = m_mall[3, 3] = True
    return Taxonomy.from_mappings({"city": m_city, "mall": m_mall}, datasets=datasets,
                                  names={0: "road / floor", 1: "car"})


def test_svg_is_well_formed_and_names_every_dataset_label_and_node(tax, tmp_path):
    lay = render_taxonomy(tax, svg_path=tmp_path / "t.svg", png_path=tmp_path / "t.png", title="test")
    root = ET.parse(tmp_path / "t.svg").getroot()
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    for d, classes in tax.datasets.items():
        assert d in texts
        for c in classes:
            assert c in texts
    assert "1 car" in texts and "0 road / floor" in texts
    groups = [g.get("data-dataset") for g in root.iter(f"{SVG}g") if g.get("class") == "dataset"]
    assert sorted(groups) == ["city", "mall"]
    # the unused channel 5 is no node of the picture
    assert sorted(n.uid for n in lay.nodes) == [0, 1, 2, 3, 4]
    assert not any(t.startswith("5 ") for t in texts if t)
    img = Image.open(tmp_path / "t.png")
    assert img.format == "PNG" and img.size == (lay.width * 2, lay.height * 2)
    # something was drawn beyond the white background
    assert len(img.convert("L").getcolors(maxcolors=1 << 20)) > 10


def test_edges_are_classified_split_merge_one_to_one(tax):
    lay = layout_taxonomy(tax.datasets, tax.mappings, tax.names)
    rel = {(lab.dataset, lab.name, node.uid): r for lab, node, r, _ in lay.edges}
    assert rel[("city", "vehicle", 1)] == "split" and rel[("city", "vehicle", 2)] == "split"
    assert rel[("mall", "car", 1)] == "merge"
    assert rel[("city", "road", 0)] == "merge"
    assert rel[("city", "sky", 4)] == "1:1"
    assert len(lay.edges) == 9


def test_special_characters_are_escaped():
    m = np.eye(2, dtype=bool)
    svg = to_svg(layout_taxonomy({'a<b>&"c"': ["x & y", "<z>"]}, {'a<b>&"c"': m}, {0: "x & y"}))
    root = ET.fromstring(svg.encode())
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert 'a<b>&"c"' in texts and "<z>" in texts


def test_barycentre_ordering_removes_crossings_of_a_permuted_chain():
    # each dataset labels the same 12 classes 1:1, in opposite orders; a crossing-free layout exists
    n = 12
    perm = np.random.default_rng(0).permutation(n)
    datasets = {"a": [f"a{i}" for i in range(n)], "b": [f"b{i}" for i in range(n)]}
    ma = np.eye(n, dtype=bool)[:, perm]
    mb = np.eye(n, dtype=bool)[::-1][:, perm]
    lay = layout_taxonomy(datasets, {"a": ma, "b": mb})
    ys = {lab.name: lab.y for lab in lay.labels}
    node_y = {nd.uid: nd.y for nd in lay.nodes}
    for side in "ab":
        pairs = sorted((ys[lab.name], node_y[nd.uid]) for lab, nd, _, _ in lay.edges if lab.dataset == side)
        assert [p[1] for p in pairs] == sorted(p[1] for p in pairs)  # monotone: no crossings


def test_node_rows_filters_by_dataset_and_name(tax):
    rows = node_rows(tax)
    assert [r["unified_id"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["labels"] == {"city": ["vehicle"], "mall": ["car"]}
    only_mall = node_rows(tax, datasets=["mall"])
    assert [r["unified_id"] for r in only_mall] == [0, 1, 2, 3]  # sky is city-only
    assert set(only_mall[0]["labels"]) == {"mall"}
    assert [r["unified_id"] for r in node_rows(tax, name="TRUCK")] == [2]
    assert [r["unified_id"] for r in node_rows(tax, name="road")] == [0]
    with pytest.raises(UsageError, match="nowhere"):
        node_rows(tax, datasets=["nowhere"])


def test_show_table_marks_split_labels(tax):
    con = Console(width=200, record=True)
    con.print(show_table(tax, node_rows(tax)))
    text = con.export_text()
    assert "vehicle*" in text and "car" in text and "person & rider" in text


def test_taxonomy_show_cli(tax, tmp_path, cli):
    import json as _json

    from uniseg_cli.taxonomy.schema import write_taxonomy

    path = write_taxonomy(tax, tmp_path / "t.parquet")
    code, out, err = cli("taxonomy", "show", path)
    assert code == 0, err
    assert "vehicle*" in out and "road / floor" in out
    assert out.splitlines()[0] == f"{path}: 5 of 5 unified nodes"  # one line, however narrow the table
    code, out, _ = cli("taxonomy", "show", path, "--dataset", "mall", "--name", "car", "--json")
    assert code == 0
    doc = _json.loads(out)
    assert [n["unified_id"] for n in doc["nodes"]] == [1] and doc["nodes"][0]["labels"] == {"mall": ["car"]}
    code, _, err = cli("taxonomy", "show", path, "--dataset", "zoo")
    assert code == 2 and "zoo" in err
    code, _, err = cli("taxonomy", "show", tmp_path / "missing.parquet")
    assert code == 3 and "not found" in err
