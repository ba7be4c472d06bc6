"""export-taxonomy: training state -> taxonomy.parquet (+ picture), readable by pyarrow, pandas and DuckDB."""
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow.parquet as pq
import pytest

from uniseg_cli import artifacts as A
from uniseg_cli import stages as S
from uniseg_cli.errors import ArtifactError
from uniseg_cli.stages.export_taxonomy import SPEC, Params, member_names, read_taxonomy_state, write_taxonomy_state
from uniseg_cli.taxonomy.schema import Taxonomy, read_taxonomy

DATASETS = {"city": ["road", "car", "truck", "sky"], "mall": ["floor", "vehicle", "person"], "park": ["Road", "person"]}


def _state():
    n = 8  # channels 6 and 7 stay inactive
    m = {d: np.zeros((len(c), n), bool) for d, c in DATASETS.items()}
    m["city"][0, 0] = m["city"][1, 1] = m["city"][2, 2] = m["city"][3, 3] = True
    m["mall"][0, 4] = m["mall"][1, 1] = m["mall"][1, 2] = m["mall"][2, 5] = True
    m["park"][0, 0] = m["park"][1, 5] = True
    rng = np.random.default_rng(0)
    soft = {d: np.where(v, rng.uniform(0.5, 1.0, v.shape), rng.uniform(0, 0.1, v.shape)).astype(np.float32) for d, v in m.items()}
    share = {d: np.where(v, 1.0 / np.maximum(v.sum(1, keepdims=True), 1), 0.0).astype(np.float32) for d, v in m.items()}
    return m, soft, share


def _training_artifact(root, state_writer=None):
    m, soft, share = _state()
    with A.publish(root, "training", {"recipe": "test"}, []) as st:
        (state_writer or write_taxonomy_state)(st.dir / "taxonomy_state.h5", DATASETS, m, soft, share, run_id=st.run_id)
    return st.artifact


def _export(root, **params):
    train = _training_artifact(root)
    ctx = S.StageContext(spec=SPEC, params=Params(**params), inputs={"train": train}, datasets=[], root=root)
    art, ran = S.execute(ctx)
    assert ran
    return art, train


def test_export_round_trip_keeps_the_invariants(_artifacts_root):
    art, train = _export(_artifacts_root)
    path = art.path / "taxonomy.parquet"
    tax = read_taxonomy(path)
    m, soft, share = _state()
    assert tax.problems() == []
    assert list(tax.datasets) == list(DATASETS)
    for d in DATASETS:
        assert np.array_equal(tax.mapping(d)[:, :6], m[d][:, :6])
        np.testing.assert_allclose(tax.weights[d][m[d]], soft[d][m[d]], rtol=1e-6)
        np.testing.assert_allclose(tax.pixel_share[d][m[d]], share[d][m[d]], rtol=1e-6)
    table = pq.read_table(path)
    ids = table.column("unified_id").to_pylist()
    assert sorted(set(ids)) == [0, 1, 2, 3, 4, 5]  # inactive channels 6, 7 left out, ids not renumbered
    keys = list(zip(ids, table.column("dataset").to_pylist(), table.column("label_id").to_pylist()))
    assert keys == sorted(keys)
    meta = pq.read_schema(path).metadata[b"uniseg"]
    assert train.run_id.encode() in meta and art.run_id.encode() in meta
    from uniseg_cli.taxonomy.compare import compare

    c = compare(tax, read_taxonomy(path))
    assert c["f1"] == pytest.approx(1.0)


def test_file_opens_in_pandas_and_duckdb(_artifacts_root):
    pd = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    art, _ = _export(_artifacts_root, picture=False)
    path = art.path / "taxonomy.parquet"
    df = pd.read_parquet(path)
    assert list(df.columns) == ["unified_id", "unified_name", "dataset", "label_id", "label", "weight", "pixel_share"]
    assert len(df) == 10 and str(df["unified_id"].dtype) == "int32"
    rows = duckdb.sql(f"SELECT dataset, count(*) AS n FROM read_parquet('{path}') GROUP BY dataset ORDER BY dataset").fetchall()
    assert rows == [("city", 4), ("mall", 4), ("park", 2)]
    assert not (art.path / "taxonomy.svg").exists()


def test_picture_is_written_and_names_every_dataset(_artifacts_root):
    art, _ = _export(_artifacts_root, png_scale=1.0)
    root = ET.parse(art.path / "taxonomy.svg").getroot()
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert set(DATASETS) <= texts
    assert (art.path / "taxonomy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = art.manifest["extra"]["summary"]
    assert s == {"nodes": 6, "channels": 8, "labels": 9, "datasets": 3, "merged_nodes": 4, "split_labels": 1}


def test_member_names_prefer_unsplit_frequent_short_labels():
    m, _, _ = _state()
    tax = Taxonomy.from_mappings(m, datasets=DATASETS)
    names = member_names(tax)
    assert names[0] == "road"  # road (city) and Road (park) are one name
    assert names[1] == "car / vehicle"  # vehicle is split over nodes 1 and 2: it comes last
    assert names[2] == "truck / vehicle"
    assert names[5] == "person"
    assert len(set(names.values())) == len(names)


def test_bad_state_file_is_an_artifact_error(tmp_path):
    p = tmp_path / "taxonomy_state.h5"
    p.write_bytes(b"not hdf5")
    with pytest.raises(ArtifactError, match="HDF5"):
        read_taxonomy_state(p)
    m, soft, share = _state()
    soft["mall"] = soft["mall"][:, :5]
    write_taxonomy_state(p, DATASETS, m, soft, share)
    with pytest.raises(ArtifactError, match="adjacency/mall"):
        read_taxonomy_state(p)


def test_state_that_breaks_the_invariants_is_refused(_artifacts_root):
    m, soft, share = _state()

    def broken(path, datasets, mappings, *a, **k):
        mappings = {d: v.copy() for d, v in mappings.items()}
        mappings["park"][1] = False  # "person" of park has no node
        write_taxonomy_state(path, datasets, mappings, *a, **k)

    train = _training_artifact(_artifacts_root, broken)
    ctx = S.StageContext(spec=SPEC, params=Params(), inputs={"train": train}, datasets=[], root=_artifacts_root)
    with pytest.raises(ArtifactError, match="'person'.*park"):
        S.execute(ctx)


def test_export_cli_json_rerun_and_show(_artifacts_root, cli):
    import json

    train = _training_artifact(_artifacts_root)
    code, out, err = cli("export-taxonomy", "--train", train.path, "--no-picture", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "taxonomy" and doc["summary"]["nodes"] == 6
    tax_file = doc["summary"]["taxonomy"]
    assert read_taxonomy(tax_file).problems() == []
    code, _, err = cli("export-taxonomy", "--train", train.run_id, "--no-picture")
    assert code == 4 and "--force" in err
    code, out, err = cli("export-taxonomy", "--no-picture", "--force")  # newest training run by default
    assert code == 0, err
    assert "6 unified nodes for 9 labels in 3 datasets" in out and out.strip().endswith(doc["run_id"])
    code, out, _ = cli("taxonomy", "show", doc["path"], "--name", "vehicle")
    assert code == 0 and "car / vehicle" in out and "vehicle*" in out


def test_llm_names_from_a_real_local_chat_server(_artifacts_root):
    from tests.text.chat_server import ChatServer

    def script(n, req):
        prompt = req["messages"][-1]["content"]
        if "'truck'" in prompt:
            return ("ok", "x" * 80)  # unusable (too long): the member name stays
        if "'road'" in prompt or "'floor'" in prompt:
            return ("ok", '"Ground surface."\nIt is where people walk.')  # first line, quotes and dot stripped
        return ("ok", None)

    with ChatServer(script=script) as srv:
        train = _training_artifact(_artifacts_root)
        params = Params(name_provider="openai", model="tiny-llm", base_url=srv.url, picture=False)
        ctx = S.StageContext(spec=SPEC, params=params, inputs={"train": train}, datasets=[], root=_artifacts_root)
        art, _ = S.execute(ctx)
        assert len(srv.requests) == 6  # one prompt per active node
        assert any("'person' (mall)" in p and "'person' (park)" in p for p in srv.prompts())
    tax = read_taxonomy(art.path / "taxonomy.parquet")
    assert tax.names[0] == "Ground surface" and tax.names[4] == "Ground surface (2)"
    assert tax.names[2] == "truck / vehicle"
    assert art.manifest["extra"]["llm"]["requests"] == 6


def test_duplicate_member_names_get_the_dataset_or_a_number():
    datasets = {"a": ["curb", "person"], "b": ["Curb", "person"]}
    m = {"a": np.array([[1, 0, 0, 0], [0, 0, 1, 0]], bool), "b": np.array([[0, 1, 0, 0], [0, 0, 0, 1]], bool)}
    names = member_names(Taxonomy.from_mappings(m, datasets=datasets))
    assert names == {0: "curb", 1: "Curb (b)", 2: "person", 3: "person (b)"}
