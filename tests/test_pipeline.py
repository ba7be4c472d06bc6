"""The pipeline runner: validation, ordering, skip-if-current, --force/--from/--until/--dry-run, lock file.

Two toy stages and a toy dataset format are registered here so that the runner is tested on its
own; the real stages are exercised by their own tests and the demo test.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from uniseg_cli import artifacts as A
from uniseg_cli import stages as S
from uniseg_cli.data import FORMATS, register_format
from uniseg_cli.data.base import LabelSpace
from uniseg_cli.errors import UsageError
from uniseg_cli.pipeline import load_pipeline, run_pipeline

CALLS: list[str] = []


@dataclasses.dataclass(frozen=True)
class CountParams:
    factor: int = 1  # multiplies the class count
    note: str = ""


@dataclasses.dataclass(frozen=True)
class SumParams:
    offset: float = 0.0


def _count_run(ctx):
    CALLS.append("toy-count")
    n = sum(len(Path(d.root, "classes.txt").read_text().split()) for d in ctx.datasets)
    with ctx.publish() as st:
        (st.dir / "count.json").write_text(json.dumps({"n": n * ctx.params.factor}))
    return st.artifact


def _sum_run(ctx):
    CALLS.append("toy-sum")
    n = json.loads((ctx.inputs["toy-count"].path / "count.json").read_text())["n"]
    with ctx.publish() as st:
        (st.dir / "sum.json").write_text(json.dumps({"total": n + ctx.params.offset}))
    return st.artifact


class ToyAdapter:
    def __init__(self, spec):
        self.spec = spec
        self.label_space = LabelSpace(spec.name, tuple(Path(spec.root, "classes.txt").read_text().split()))

    def splits(self):
        return []

    def samples(self, split):
        return []

    def load(self, sample):
        return np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.int64)

    def check(self, splits=None):
        return []


@pytest.fixture(autouse=True)
def toy_stages(monkeypatch):
    CALLS.clear()
    monkeypatch.setattr(S, "STAGE_ORDER", ["toy-count", "toy-sum"])
    monkeypatch.setattr(S, "STAGE_MODULES", {"toy-count": "tests.test_pipeline", "toy-sum": "tests.test_pipeline"})
    monkeypatch.setitem(A.KINDS, "toy-count", (1, "uniseg run --force toy-count"))
    monkeypatch.setitem(A.KINDS, "toy-sum", (1, "uniseg run --force toy-sum"))
    reg = dict(S._REGISTRY)
    S.register(S.StageSpec("toy-count", "toy-count", CountParams, _count_run, datasets="labels"))
    S.register(S.StageSpec("toy-sum", "toy-sum", SumParams, _sum_run, needs=("toy-count",)))
    register_format("toy", ToyAdapter, "classes.txt")
    yield
    S._REGISTRY.clear()
    S._REGISTRY.update(reg)
    FORMATS.pop("toy", None)


def _write(tmp_path, stages=None, datasets=None, extra=""):
    (tmp_path / "ds1").mkdir(exist_ok=True)
    (tmp_path / "ds1" / "classes.txt").write_text("road car sky")
    doc = {
        "artifacts": "arts",
        "datasets": datasets if datasets is not None else [{"name": "ds1", "root": "ds1", "format": "toy"}],
        "stages": stages if stages is not None else {"toy-count": {"factor": 2}, "toy-sum": {"offset": 0.5}},
    }
    p = tmp_path / "pipeline.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False) + extra)
    return p


def test_runs_in_order_then_skips_when_current(tmp_path):
    p = _write(tmp_path)
    r1 = run_pipeline(p)
    assert CALLS == ["toy-count", "toy-sum"]
    assert [s["action"] for s in r1["stages"]] == ["run", "run"]
    out = json.loads((Path(r1["stages"][1]["path"]) / "sum.json").read_text())
    assert out == {"total": 6.5}
    r2 = run_pipeline(p)
    assert CALLS == ["toy-count", "toy-sum"]  # nothing ran again
    assert [s["action"] for s in r2["stages"]] == ["skip", "skip"]
    assert [s["run_id"] for s in r2["stages"]] == [s["run_id"] for s in r1["stages"]]


def test_param_change_reruns_that_stage_and_downstream(tmp_path):
    p = _write(tmp_path)
    run_pipeline(p)
    CALLS.clear()
    p = _write(tmp_path, stages={"toy-count": {"factor": 3}, "toy-sum": {"offset": 0.5}})
    r = run_pipeline(p)
    assert CALLS == ["toy-count", "toy-sum"]
    assert "factor" in r["stages"][0]["reason"]
    CALLS.clear()
    p = _write(tmp_path, stages={"toy-count": {"factor": 3}, "toy-sum": {"offset": 1.5}})
    run_pipeline(p)
    assert CALLS == ["toy-sum"]


def test_dataset_label_change_changes_run_ids(tmp_path):
    p = _write(tmp_path)
    r1 = run_pipeline(p)
    (tmp_path / "ds1" / "classes.txt").write_text("road car sky person")
    r2 = run_pipeline(p)
    assert r1["stages"][0]["run_id"] != r2["stages"][0]["run_id"]


def test_force_from_until_and_dry_run(tmp_path):
    p = _write(tmp_path)
    dry = run_pipeline(p, dry_run=True)
    assert CALLS == [] and [s["action"] for s in dry["stages"]] == ["run", "run"]
    assert dry["stages"][1]["run_id"] is None  # unknown until its upstream exists
    run_pipeline(p, until="toy-count")
    assert CALLS == ["toy-count"]
    CALLS.clear()
    run_pipeline(p)
    assert CALLS == ["toy-sum"]
    CALLS.clear()
    run_pipeline(p, force=["toy-sum"])
    assert CALLS == ["toy-sum"]
    CALLS.clear()
    run_pipeline(p, from_stage="toy-sum", force=["toy-sum"])
    assert CALLS == ["toy-sum"]
    dry = run_pipeline(p, dry_run=True)
    assert [s["action"] for s in dry["stages"]] == ["skip", "skip"]
    with pytest.raises(UsageError, match="not a stage"):
        run_pipeline(p, force=["nope"])


def test_from_requires_earlier_stages_current(tmp_path):
    p = _write(tmp_path)
    with pytest.raises(UsageError, match="earlier stage toy-count is not current"):
        run_pipeline(p, from_stage="toy-sum")


def test_lock_file_is_stable_and_sorted(tmp_path):
    p = _write(tmp_path)
    run_pipeline(p)
    lock1 = (tmp_path / "pipeline.lock").read_text()
    run_pipeline(p)
    assert (tmp_path / "pipeline.lock").read_text() == lock1
    lock = yaml.safe_load(lock1)
    assert lock["schema"] == "uniseg.lock/1"
    entry = lock["stages"]["toy-sum"]
    assert entry["params"]["offset"] == 0.5
    assert entry["inputs"][0]["kind"] == "toy-count"
    assert entry["outputs"][0]["path"] == "sum.json" and len(entry["outputs"][0]["sha256"]) == 64
    assert list(lock) == sorted(lock)


def test_a_misspelt_stage_gets_a_suggestion(tmp_path):
    p = _write(tmp_path, stages={"toy-count": {"factor": 2}, "toy-summ": {}})
    with pytest.raises(UsageError) as ei:
        load_pipeline(p)
    assert "unknown stage 'toy-summ' (did you mean toy-sum?)" in ei.value.message


def test_validation_lists_every_problem_with_its_line(tmp_path):
    p = _write(
        tmp_path,
        datasets=[
            {"name": "ds1", "root": "ds1", "format": "toy"},
            {"name": "ds1", "root": "missing_dir", "format": "nope", "colour": 1},
            {"root": "ds1"},
        ],
        stages={"toy-count": {"factor": "many", "bogus": 1}, "toy-sum": {}, "train-everything": {}},
        extra="extra_top: 1\n",
    )
    with pytest.raises(UsageError) as ei:
        load_pipeline(p)
    msg = ei.value.message
    for needle in [
        "unknown key 'colour'",
        "'ds1' appears twice",
        "unknown format 'nope'",
        "does not exist",
        "has no name",
        "factor: expected an integer, got 'many'",
        "bogus: unknown key",
        "unknown stage 'train-everything'",
        "unknown key 'extra_top'",
    ]:
        assert needle in msg, needle
    lines = p.read_text().splitlines()
    for problem in msg.splitlines()[1:]:
        ln = int(problem.strip().split(":")[1])
        assert 1 <= ln <= len(lines)
    factor_line = next(i + 1 for i, l in enumerate(lines) if "factor" in l)
    assert f"pipeline.yaml:{factor_line}: stages.toy-count.factor" in msg


def test_missing_upstream_stage_and_bad_yaml(tmp_path):
    p = _write(tmp_path, stages={"toy-sum": {}})
    with pytest.raises(UsageError, match="needs toy-count"):
        load_pipeline(p)
    p.write_text("datasets: [\n")
    with pytest.raises(UsageError, match="not valid YAML at line"):
        load_pipeline(p)
    with pytest.raises(UsageError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")


def test_run_command_json_and_exit_codes(tmp_path, cli):
    p = _write(tmp_path)
    code, out, err = cli("run", str(p), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert [s["action"] for s in rep["stages"]] == ["run", "run"]
    code, out, err = cli("run", str(p), "--dry-run", "--json")
    assert code == 0 and [s["action"] for s in json.loads(out)["stages"]] == ["skip", "skip"]
    code, out, err = cli("run", str(tmp_path / "missing.yaml"))
    assert code == 2 and "Error:" in err and "does not exist" in err and "Hint:" in err
