"""`train` as a stage: the artifact, SIGKILL + resume = uninterrupted, 2-process torchrun on CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from kit import context, tiny_params, upstream, world  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

CHILD = r'''
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, {kit!r})
from kit import context, tiny_params, world
from uniseg_cli import artifacts as A
from uniseg_cli.stages import execute

root, world_dir, slow, dump = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
_, specs = world(world_dir)
feat = A.load_artifact(root / "label-features" / os.listdir(root / "label-features")[0])
est = A.load_artifact(root / "node-estimate" / os.listdir(root / "node-estimate")[0])
import uniseg_cli.training.train_run as R
if slow > 0:  # make iterations slow enough to kill mid-run
    orig = R.batch_source
    def slow_source(*a, **k):
        src = orig(*a, **k)
        def batches(start):
            for b in src(start):
                time.sleep(slow)
                yield b
        return batches
    R.batch_source = slow_source
if dump != "-":  # keep every rank's final weights and mappings
    orig_all = R.train_all
    def train_all(*a, **k):
        res = orig_all(*a, **k)
        from safetensors.torch import save_file
        import torch
        rank = int(os.environ.get("RANK", "0"))
        t = {{f"s.{{k}}": v.contiguous() for k, v in res.segmenter.state_dict().items()}}
        t.update({{f"h.{{k}}": v.contiguous() for k, v in res.head.state_dict().items()}})
        save_file(t, f"{{dump}}/rank{{rank}}.safetensors")
        return res
    R.train_all = train_all
params = tiny_params(solve_every=3, **json.loads(os.environ.get("TRAIN_PARAMS", "{{}}")))
art, _ = execute(context(root, specs, params, feat, est))
print("ARTIFACT", art.path)
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    _, specs = world(base / "world")
    return base, specs


def _child(tmp_path) -> Path:
    f = tmp_path / "child.py"
    f.write_text(CHILD.format(kit=str(REPO / "tests" / "training")))
    return f


def _upstream(root, specs):
    return upstream(root, specs)


def test_train_stage_publishes_model_state_and_metrics(tiny, tmp_path):
    from uniseg_cli.stages import execute
    from uniseg_cli.stages.export_taxonomy import read_taxonomy_state
    from uniseg_cli.training.model_io import load_unified_model

    base, specs = tiny
    root = tmp_path / "artifacts"
    feat, est = _upstream(root, specs)
    art, ran = execute(context(root, specs, tiny_params(), feat, est))
    assert ran and art.kind == "training"
    names = {o["path"] for o in art.manifest["outputs"]}
    assert {"model.safetensors", "model.json", "taxonomy_state.h5", "metrics.jsonl", "summary.json"} <= names
    assert not list((root / "training").glob(".work-*"))  # work dir removed after publishing
    state = read_taxonomy_state(art.path / "taxonomy_state.h5")
    assert state["run_id"] == art.run_id and list(state["datasets"]) == [s.name for s in specs if s.role == "train"]
    for d, m in state["mappings"].items():
        assert (m.sum(axis=0) <= 1).all() and (m.sum(axis=1) >= 1).all()
        assert np.allclose(state["soft"][d].sum(axis=0), 1.0, atol=1e-4)  # column softmax per dataset
        share = state["pixel_share"][d]
        assert ((share.sum(axis=1) > 0.999) | (share.sum(axis=1) == 0)).all()
    import h5py

    with h5py.File(art.path / "taxonomy_state.h5") as f:
        assert f.attrs["kind"] == "training" and f.attrs["schema"] == "uniseg.taxonomy-state/1"
    lines = [json.loads(x) for x in (art.path / "metrics.jsonl").read_text().splitlines()]
    assert {x["stage"] for x in lines} == {"stage2", "stage3"}
    model = load_unified_model(art.path)
    import torch

    z = model.unified_logits(torch.zeros(1, 3, 32, 32))
    assert z.shape[1] == state["mappings"]["citydrive"].shape[1]
    for i, (d, m) in enumerate(state["mappings"].items()):
        assert np.array_equal(model.head.mapping(i).numpy() > 0.5, m)


def _weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def test_sigkill_then_resume_equals_uninterrupted_run(tiny, tmp_path):
    base, specs = tiny
    child = _child(tmp_path)
    roots = {k: tmp_path / k for k in ("ref", "killed")}
    for r in roots.values():
        _upstream(r, specs)
    env = dict(os.environ, OMP_NUM_THREADS="1", UNISEG_NO_PROGRESS="1")
    ref = subprocess.run([PY, str(child), str(roots["ref"]), str(base / "world"), "0", "-"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen([PY, str(child), str(roots["killed"]), str(base / "world"), "0.15", "-"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    ck = None
    while time.time() < deadline and proc.poll() is None:
        found = sorted((roots["killed"] / "training").glob(".work-*/stage2/ckpt-0000000[1-9]*.json"))
        if found and int(found[-1].stem.split("-")[1]) >= 14:  # inside the second GNN phase
            ck = found[-1]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ck is not None, "no stage-2 checkpoint appeared before the deadline"
    assert not list((roots["killed"] / "training").glob("[0-9a-f]*"))  # nothing published
    again = subprocess.run([PY, str(child), str(roots["killed"]), str(base / "world"), "0", "-"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    a_path = Path(ref.stdout.split("ARTIFACT ")[1].split()[0])
    b_path = Path(again.stdout.split("ARTIFACT ")[1].split()[0])
    assert a_path.name == b_path.name  # same recipe, same run id
    wa, wb = _weights(a_path), _weights(b_path)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    its = [(x["stage"], x["iteration"]) for x in map(json.loads, (b_path / "metrics.jsonl").read_text().splitlines())]
    assert len(its) == len(set(its))  # the resumed log has no duplicated lines


def test_torchrun_two_ranks_on_cpu_end_identical(tiny, tmp_path):
    if not Path(TORCHRUN).exists():
        pytest.skip("torchrun not installed next to this python")
    base, specs = tiny
    root, dump = tmp_path / "artifacts", tmp_path / "dump"
    dump.mkdir()
    _upstream(root, specs)
    env = dict(os.environ, OMP_NUM_THREADS="1", UNISEG_NO_PROGRESS="1",
               TRAIN_PARAMS=json.dumps({"num_phases": 2, "final_iters": 4, "prune_at": 2, "device": "cpu"}))
    res = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", str(_child(tmp_path)), str(root),
                          str(base / "world"), "0", str(dump)], env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    r0, r1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and any(k.startswith("h.mapping_") for k in r0)
    for k in r0:
        assert np.array_equal(r0[k], r1[k]), k
    arts = [p for p in (root / "training").iterdir() if not p.name.startswith(".")]
    assert len(arts) == 1  # rank 0 alone published
    summary = json.loads((arts[0] / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_inputs_that_do_not_fit_the_datasets_are_refused(tiny, tmp_path):
    from uniseg_cli import artifacts as A
    from uniseg_cli.errors import ArtifactError
    from uniseg_cli.taxonomy.schema import Taxonomy, write_taxonomy
    from uniseg_cli.training.setup import read_inputs, read_stage1_segmenter

    base, specs = tiny
    train = [s for s in specs if s.role == "train"]
    root = tmp_path / "artifacts"
    feat, est = _upstream(root, specs)
    assert read_inputs(feat, est, train).num_nodes == 31
    # an initial mapping made for other datasets
    with A.publish(root, "node-estimate", {"fixture": "other"}) as st:
        m = np.eye(2, dtype=bool)
        write_taxonomy(Taxonomy.from_mappings({"x": m, "y": m}, datasets={"x": ["a", "b"], "y": ["c", "d"]}),
                       st.dir / "init_mapping.parquet")
    with pytest.raises(ArtifactError, match="does not cover dataset citydrive") as e:
        read_inputs(feat, st.artifact, train)
    assert "estimate-nodes --force" in e.value.hint
    # no stage-1 checkpoint next to it
    with pytest.raises(ArtifactError, match="multihead"):
        read_stage1_segmenter(st.artifact)


def test_logsumexp_label_logits_train_and_travel_with_the_model(tiny, tmp_path):
    import torch

    from uniseg_cli.models.heads import label_logits
    from uniseg_cli.stages import execute
    from uniseg_cli.stages.train import Params
    from uniseg_cli.training.model_io import load_unified_model

    base, specs = tiny
    root = tmp_path / "artifacts"
    feat, est = _upstream(root, specs)
    art, ran = execute(context(root, specs, tiny_params(label_logits="logsumexp"), feat, est))
    assert ran
    meta = json.loads((art.path / "model.json").read_text())
    assert meta["model"]["label_logits"] == "logsumexp" and meta["config"]["label_logits"] == "logsumexp"
    model = load_unified_model(art.path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        z = model.unified_logits(x)
        for d in range(len(model.datasets)):
            torch.testing.assert_close(model.dataset_logits(x, d), label_logits(z, model.head.mapping(d), "logsumexp"))
    with pytest.raises(ValueError, match="label_logits must be sum or logsumexp"):
        Params(label_logits="max").validate()


def test_channel_shift_reaches_the_train_batches_and_is_checked(tiny, cli):
    import types

    import torch

    from uniseg_cli.stages.train import Params
    from uniseg_cli.training.setup import batch_source, open_training_data

    base, specs = tiny
    train = [s for s in specs if s.role == "train"]
    dist = types.SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))

    def first_batch(p):
        return next(batch_source(open_training_data(train, p), p, dist)(0))

    plain, shifted = Params(crop_size=32), Params(crop_size=32, channel_gain=0.2, channel_offset=20)
    a, b = first_batch(plain), first_batch(shifted)
    # the batch's first crop is the same (the shift draws after the crop; later crops draw after it) ...
    assert torch.equal(a["label"][0], b["label"][0])
    assert a["image"].shape == b["image"].shape and not torch.equal(a["image"][0], b["image"][0])  # ... in other colours
    with pytest.raises(ValueError, match="channel_offset"):
        Params(channel_offset=-1).validate()
    code, _, err = cli("train", "--dataset", str(base / "world" / "citydrive"), "--channel-gain", "1.5")
    assert code == 2 and "channel_gain must lie in [0, 1)" in err


def test_no_stage_two_trains_stage_three_from_the_initial_mapping(tiny, tmp_path):
    from uniseg_cli.stages import execute
    from uniseg_cli.stages.export_taxonomy import read_taxonomy_state
    from uniseg_cli.training.setup import read_inputs

    base, specs = tiny
    root = tmp_path / "artifacts"
    feat, est = _upstream(root, specs)
    art, ran = execute(context(root, specs, tiny_params(num_phases=0, prune_at=0), feat, est))
    assert ran
    lines = [json.loads(x) for x in (art.path / "metrics.jsonl").read_text().splitlines()]
    assert {x["stage"] for x in lines} == {"stage3"}
    init = read_inputs(feat, est, [s for s in specs if s.role == "train"]).init_mappings
    state = read_taxonomy_state(art.path / "taxonomy_state.h5")
    for m0, m in zip(init, state["mappings"].values()):  # no solve, no pruning: the estimate's mapping as is
        assert np.array_equal(m0, m)
