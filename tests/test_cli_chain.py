"""The whole chain on the tiny synthetic world: `uniseg run`, then each stage alone, then the failure paths.

Budgets are tiny (a few iterations per stage): this checks that the stages chain through their
artifacts and that the runner's promises hold, not the quality (bench/quality.py measures that).
"""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from uniseg_cli import artifacts as A

ROOT = Path(__file__).resolve().parent.parent

TINY_STAGES = {
    "describe-labels": {"provider": "template"},
    "embed-labels": {"model": "minilm", "pooling": "mean"},
    "estimate-nodes": {"backbone": "tiny", "embed_dim": 16, "iters": 6, "crop_size": 32, "checkpoint_every": 0},
    "train": {"crop_size": 32, "gnn_iters": 3, "seg_iters": 3, "first_gnn_iters": 2, "num_phases": 3,
              "solve_every": 2, "final_iters": 4, "prune_at": 2, "gnn_hidden": 16, "checkpoint_every": 0},
    "export-taxonomy": {"name_provider": "members"},
    "evaluate": {},
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run the tiny pipeline once for the whole module (it is the expensive part)."""
    from uniseg_cli.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("chain")
    doc = {
        "artifacts": "arts",
        "synth": {"out": "world", "seed": 1, "preset": "tiny"},
        "datasets": [
            {"name": "citydrive", "root": "world/citydrive", "role": "train"},
            {"name": "vistadrive", "root": "world/vistadrive", "role": "train"},
            {"name": "homescan", "root": "world/homescan", "role": "train"},
            {"name": "camdrive", "root": "world/camdrive", "role": "unseen"},
        ],
        "stages": TINY_STAGES,
    }
    p = tmp / "pipeline.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = run_pipeline(p)
    return tmp, p, report


def test_run_chains_every_stage_and_reports_against_truth(chain):
    tmp, p, report = chain
    assert [s["stage"] for s in report["stages"]] == list(TINY_STAGES)
    assert all(s["action"] == "run" for s in report["stages"])
    arts = {s["stage"]: A.load_artifact(s["path"]) for s in report["stages"]}
    # Each manifest's inputs are exactly the upstream artifacts' identities.
    for name, art in arts.items():
        for inp in art.manifest["inputs"]:
            if inp["kind"].startswith("dataset:") or inp["kind"] == "model":
                continue
            up = next(a for a in arts.values() if a.kind == inp["kind"])
            assert inp["run_id"] == up.run_id and inp["sha256"] == up.sha256, (name, inp["kind"])
    s = report["summary"]
    assert 0.0 <= s["vs_truth"]["f1"] <= 1.0
    assert Path(s["taxonomy"]).exists() and Path(s["picture"]).exists()
    # The exported taxonomy maps every training label to at least one node, at most one label per node and dataset.
    from uniseg_cli.taxonomy.schema import read_taxonomy

    tax = read_taxonomy(s["taxonomy"])
    for ds in ("citydrive", "vistadrive", "homescan"):
        m = tax.mapping(ds)
        assert m.any(axis=1).all() and (m.sum(axis=0) <= 1).all()
    assert (tmp / "pipeline.lock").exists()


def test_second_run_skips_everything(chain):
    from uniseg_cli.pipeline import run_pipeline

    tmp, p, report = chain
    again = run_pipeline(p)
    assert [s["action"] for s in again["stages"]] == ["skip"] * len(TINY_STAGES)
    assert [s["run_id"] for s in again["stages"]] == [s["run_id"] for s in report["stages"]]


def test_stage_alone_refuses_an_existing_run_then_force(chain, cli):
    tmp, p, report = chain
    code, out, err = cli("export-taxonomy", "--pipeline", str(p), "--json")
    assert code == 4 and "--force" in err
    code, out, err = cli("export-taxonomy", "--pipeline", str(p), "--force", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["kind"] == "taxonomy" and Path(res["path"]).is_dir()


def test_corrupt_upstream_is_exit_3(chain, cli, tmp_path):
    tmp, p, report = chain
    arts = tmp_path / "arts"
    shutil.copytree(tmp / "arts", arts)
    feat = next((arts / "label-features").glob("*/features.h5"))
    data = bytearray(feat.read_bytes())
    data[len(data) // 2] ^= 0xFF
    feat.write_bytes(bytes(data))
    code, out, err = cli("train", "--pipeline", str(p), "--artifacts", str(arts), "--force")
    assert code == 3 and "features.h5" in err and "uniseg embed-labels" in err


def test_inspect_shows_the_lineage_down_to_the_descriptions(chain, cli):
    tmp, p, report = chain
    ev = next(s for s in report["stages"] if s["stage"] == "evaluate")
    code, out, err = cli("inspect", ev["path"], "--json")
    assert code == 0, err
    kinds = []

    def walk(lin):
        for e in lin:
            kinds.append(e["kind"])
            walk(e.get("inputs", []))

    walk(json.loads(out)["lineage"])
    assert {"training", "node-estimate", "label-features", "label-descriptions"} <= set(kinds)


def test_a_world_that_lacks_a_dataset_of_the_pipeline_names_it_and_the_command_that_rewrites_it(chain, cli, tmp_path):
    tmp, p, report = chain
    doc = yaml.safe_load(p.read_text())
    doc["synth"]["out"] = str(tmp / "world")  # the world the chain wrote (preset tiny) ...
    for d in doc["datasets"]:
        d["root"] = str(tmp / d["root"])
    doc["datasets"].append({"name": "wildroad", "root": str(tmp / "world" / "wildroad"), "role": "unseen"})  # ... has none
    doc["artifacts"] = str(tmp_path / "arts")
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = sorted(x.name for x in (tmp / "world").iterdir())
    code, out, err = cli("run", str(tmp_path / "pipeline.yaml"))
    assert code == 4, err
    assert "wildroad are missing" in err and "already holds a synthetic world" in err
    assert f"uniseg synth --out {tmp / 'world'} --preset tiny --seed 1 --force" in err
    assert sorted(x.name for x in (tmp / "world").iterdir()) == before  # the world is left as it was
    assert not (tmp_path / "arts").exists()
