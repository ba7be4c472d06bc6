"""uniseg.taxonomy/1: round trip, sorted rows, metadata; malformed, foreign and invalid files are exit 3."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uniseg_cli.errors import ArtifactError
from uniseg_cli.taxonomy.schema import SCHEMA, Taxonomy, read_taxonomy, validate, write_taxonomy

DS = {"cs": ["road", "car", "sky"], "mv": ["Road", "Lane Marking", "Car", "Sky"]}


def _tax(**kw):
    # columns: 0 road, 1 lane marking, 2 car, 3 (inactive), 4 sky
    cs = np.zeros((3, 5), bool)
    cs[0, [0, 1]] = cs[1, 2] = cs[2, 4] = True
    mv = np.zeros((4, 5), bool)
    mv[0, 0] = mv[1, 1] = mv[2, 2] = mv[3, 4] = True
    return Taxonomy.from_mappings({"cs": cs, "mv": mv}, datasets=DS, **kw)


def test_round_trip_and_layout(tmp_path):
    ps = {"cs": np.full((3, 5), 0.5, np.float32)}
    tax = _tax(names={0: "road surface"}, pixel_share=ps, sources={"run": "abc"})
    p = write_taxonomy(tax, tmp_path / "t.parquet", kind="taxonomy", run_id="0123456789ab")
    back = read_taxonomy(p)
    assert list(back.datasets) == ["cs", "mv"] and back.datasets["mv"] == tuple(DS["mv"])
    for d in DS:
        assert np.array_equal(back.mapping(d)[:, :5], tax.mapping(d))
    assert back.num_nodes == 4 and back.active_nodes() == [0, 1, 2, 4]  # node 3 had no edge: not written
    assert back.names[0] == "road surface" and back.names[1] == "road / Lane Marking"
    assert back.run_id == "0123456789ab" and back.sources == {"run": "abc"}
    t = pq.read_table(p)
    assert t.schema.field("unified_id").type == pa.int32() and t.schema.field("weight").type == pa.float32()
    rows = list(zip(*(t.column(c).to_pylist() for c in ("unified_id", "dataset", "label_id"))))
    assert rows == sorted(rows) and len(rows) == 8
    meta = json.loads(t.schema.metadata[b"uniseg"])
    assert meta["schema"] == SCHEMA and meta["num_nodes"] == 4 and meta["kind"] == "taxonomy"
    assert meta["datasets"] == DS
    ps_col = t.column("pixel_share").to_pylist()
    assert ps_col.count(None) == 4 and ps_col.count(0.5) == 4  # mv has no pixel shares: null
    assert back.weights["cs"][0, 0] == 1.0


def _write_raw(path, rows, meta=None, drop=None, types=None):
    cols = {"unified_id": pa.int32(), "unified_name": pa.string(), "dataset": pa.string(), "label_id": pa.int32(),
            "label": pa.string(), "weight": pa.float32(), "pixel_share": pa.float32()}
    cols.update(types or {})
    names = list(cols)
    data = {n: pa.array([r[i] for r in rows], type=cols[n]) for i, n in enumerate(names) if n != drop}
    t = pa.table(data)
    if meta is not False:
        m = meta or {"schema": SCHEMA, "kind": "taxonomy", "run_id": None, "datasets": {"a": ["x", "y"], "b": ["x"]},
                     "num_nodes": 2, "sources": {}}
        t = t.replace_schema_metadata({b"uniseg": json.dumps(m).encode()})
    pq.write_table(t, path)
    return path


GOOD = [(0, "x", "a", 0, "x", 1.0, None), (0, "x", "b", 0, "x", 1.0, None), (1, "y", "a", 1, "y", 1.0, None)]


def _err(path):
    with pytest.raises(ArtifactError) as e:
        read_taxonomy(path)
    return e.value.message


def test_hand_written_good_file_reads(tmp_path):
    tax = read_taxonomy(_write_raw(tmp_path / "g.parquet", GOOD))
    assert tax.num_nodes == 2 and tax.nodes_of("a", 1) == [1]


def test_malformed_and_foreign_files_name_the_fault(tmp_path):
    assert "missing column 'label_id'" in _err(_write_raw(tmp_path / "a.parquet", GOOD, drop="label_id"))
    msg = _err(_write_raw(tmp_path / "b.parquet", [r[:5] + ("1.0",) + r[6:] for r in GOOD], types={"weight": pa.string()}))
    assert "column 'weight' has type string" in msg
    assert "no 'uniseg' metadata" in _err(_write_raw(tmp_path / "c.parquet", GOOD, meta=False))
    assert "unsupported schema version" in _err(_write_raw(tmp_path / "d.parquet", GOOD, meta={"schema": "uniseg.taxonomy/2", "datasets": {}}))
    (tmp_path / "e.parquet").write_bytes(b"PAR1 not really")
    assert "not a readable Parquet file" in _err(tmp_path / "e.parquet")
    assert "file not found" in _err(tmp_path / "nope.parquet")


def test_broken_invariants_are_named(tmp_path):
    msg = _err(_write_raw(tmp_path / "a.parquet", GOOD[:2]))
    assert "label 'y' (id 1) of dataset 'a' has no unified node" in msg
    two = GOOD + [(0, "x", "a", 1, "y", 1.0, None)]
    assert "unified node 0 has several labels of dataset 'a': 'x', 'y'" in _err(_write_raw(tmp_path / "b.parquet", two))
    out = GOOD + [(1, "y", "b", 5, "z", 1.0, None)]
    assert "label_id 5 is outside the label space of 'b'" in _err(_write_raw(tmp_path / "c.parquet", out))
    wrong = GOOD[:2] + [(1, "y", "a", 1, "Y", 1.0, None)]
    assert "label 'Y' does not match class 1 of 'a' ('y')" in _err(_write_raw(tmp_path / "d.parquet", wrong))
    ghost = GOOD + [(1, "y", "zz", 0, "x", 1.0, None)]
    assert "dataset 'zz' is not listed" in _err(_write_raw(tmp_path / "e.parquet", ghost))


def test_invalid_taxonomy_is_not_written(tmp_path):
    m = np.zeros((2, 1), bool)
    m[0, 0] = True
    tax = Taxonomy.from_mappings({"a": m}, datasets={"a": ["x", "y"]})
    with pytest.raises(ArtifactError, match="'y'"):
        validate(tax)
    with pytest.raises(ArtifactError):
        write_taxonomy(tax, tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def test_cli_exit_3_on_foreign_file(cli, tmp_path):
    p = _write_raw(tmp_path / "c.parquet", GOOD, drop="dataset")
    code, _, err = cli("taxonomy", "compare", p, p)
    assert code == 3 and "missing column 'dataset'" in err and "Hint:" in err
