"""estimate-nodes end to end on the tiny synthetic world: artifact, --json, --multihead, held-out images, resume."""
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

from uniseg_cli import artifacts as A
from uniseg_cli.taxonomy.confusion import read_confusion
from uniseg_cli.taxonomy.schema import read_taxonomy

FAST = ["--iters", "4", "--crop-size", "32", "--images-per-dataset", "1", "--checkpoint-every", "0",
        "--warmup-iters", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from uniseg_cli.data.synthetic import make_world

    out = tmp_path_factory.mktemp("world")
    make_world(out, seed=0, preset="tiny")
    return out


def _ds(world: Path) -> list[str]:
    return [a for n in ("citydrive", "vistadrive", "homescan") for a in ("--dataset", str(world / n))]


def test_artifact_payload_json_and_rerun(world, cli, _artifacts_root):
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["kind"] == "node-estimate"
    s = res["summary"]
    assert 13 <= s["num_nodes"] <= 31 and s["num_labels"] == 31  # tiny: 10 + 13 + 8 labels, largest 13
    assert set(s["merges"]) == {"citydrive", "vistadrive"} and set(s["merges"]["citydrive"]) == {"vistadrive", "homescan"}
    art = A.load_artifact(res["path"], kind="node-estimate")
    names = {o["path"] for o in art.manifest["outputs"]}
    assert {"estimate.json", "init_mapping.parquet", "confusion.h5", "multihead.json", "multihead.safetensors",
            "metrics.jsonl"} <= names
    doc = json.loads((art.path / "estimate.json").read_text())
    assert doc["num_nodes"] == s["num_nodes"] and doc["stage1"]["trained"] is True
    assert doc["confusion"]["split"] == {"citydrive": "val", "vistadrive": "val", "homescan": "val"}
    assert doc["clustering_params"]["tau"] == 0.4 and doc["clustering_params"]["pair_cost_threshold"] == 0.05
    tax = read_taxonomy(art.path / "init_mapping.parquet")
    assert tax.num_nodes == doc["num_nodes"] and tax.run_id == art.run_id
    for d, m in tax.mappings.items():
        assert (m.sum(axis=1) == 1).all(), d  # every label in exactly one initial node
    hist, classes, attrs = read_confusion(art.path / "confusion.h5")
    assert attrs["run_id"] == art.run_id and attrs["kind"] == "node-estimate"
    assert [len(classes[n]) for n in classes] == [10, 13, 8]
    # every held-out pixel of dataset a is counted once per head b
    for a in range(3):
        assert all(hist[a][b].sum() == pytest.approx(hist[a][a].sum()) for b in range(3))
        assert hist[a][a].sum() > 0
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST)
    assert code == 4 and "--force" in err


def test_multihead_checkpoint_skips_training_and_reproduces_the_confusion(world, cli, tmp_path):
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--json", "--artifacts", tmp_path / "a")
    assert code == 0, err
    first = Path(json.loads(out)["path"])
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--multihead", first, "--artifacts", tmp_path / "b")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("N = ") and "merges" in out and Path(lines[-1]).is_dir()  # human output, path last
    second = Path(lines[-1])
    doc = json.loads((second / "estimate.json").read_text())
    assert doc["stage1"] == {"trained": False, "from": str(first)}
    assert not (second / "metrics.jsonl").exists()
    h1, _, _ = read_confusion(first / "confusion.h5")
    h2, _, _ = read_confusion(second / "confusion.h5")
    for a in range(3):
        for b in range(3):
            np.testing.assert_array_equal(h1[a][b], h2[a][b])
    inputs = json.loads((second / "manifest.json").read_text())["inputs"]
    assert any(i["kind"] == "multihead-checkpoint" for i in inputs)
    # a checkpoint for other datasets is refused with a clear message
    code, out, err = cli("estimate-nodes", *_ds(world)[:4], *FAST, "--multihead", first, "--artifacts", tmp_path / "c")
    assert code == 2 and "was trained on datasets" in err


def test_held_out_fraction_is_disjoint_from_training_images(world):
    from uniseg_cli.data.base import DatasetSpec
    from uniseg_cli.stages.estimate_nodes import Params
    from uniseg_cli.stages.stage1 import STAGE1_SPLIT, open_datasets

    specs = [DatasetSpec(name=n, root=str(world / n)) for n in ("citydrive", "vistadrive")]
    data = open_datasets(specs, Params(holdout_fraction=0.5, seed=3))
    for d in data:
        train = {s.stem for s in d.adapter.samples(STAGE1_SPLIT)}
        held = {s.stem for s in d.held_out}
        assert train and held and not train & held
        assert train | held == {s.stem for s in d.base.samples("train")}
        assert d.held_out_from.startswith("train (held out 50%")
    again = open_datasets(specs, Params(holdout_fraction=0.5, seed=3))
    assert [s.stem for s in again[0].held_out] == [s.stem for s in data[0].held_out]  # stable


def test_bad_inputs_fail_before_training(world, cli):
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--confusion-split", "train")
    assert code == 2 and "stage 1 trains on" in err and "Hint:" in err
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--confusion-split", "test")
    assert code == 5 and "has no split 'test'" in err
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--loss-weight", "nosuch=2")
    assert code == 2 and "nosuch" in err
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--tau", "2")
    assert code == 2 and "tau" in err
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--channel-gain", "1")
    assert code == 2 and "channel_gain must lie in [0, 1)" in err


@pytest.mark.slow
def test_resume_after_kill_matches_an_uninterrupted_run(world, tmp_path):
    from uniseg_cli.cli import main

    args = [*_ds(world), "--iters", "24", "--crop-size", "40", "--images-per-dataset", "2", "--checkpoint-every", "2",
            "--warmup-iters", "5", "--json"]
    root = tmp_path / "killed"
    import torch

    # the killed child and the in-process runs below must use the same thread count, or the float sums differ
    env = dict(os.environ, UNISEG_ARTIFACTS=str(root), OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, "-m", "uniseg_cli", "estimate-nodes", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((root / "node-estimate").glob(".work-*/ckpt-*.json")) if (root / "node-estimate").exists() else []
        if found:
            ckpt = found[0]
            break
        time.sleep(0.02)
    assert ckpt is not None, "no checkpoint appeared before the run ended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((root / "node-estimate").glob("*/manifest.json"))  # nothing was published

    def run(r: Path) -> Path:
        os.environ["UNISEG_ARTIFACTS"] = str(r)
        try:
            main(["estimate-nodes", *args])
        except SystemExit as e:
            assert e.code in (0, None)
        return next((r / "node-estimate").glob("*/manifest.json")).parent

    resumed = run(root)
    doc = json.loads((resumed / "estimate.json").read_text())
    assert doc["stage1"]["resumed_from"] >= 2
    assert not list((root / "node-estimate").glob(".work-*"))  # the work directory is cleaned up
    fresh = run(tmp_path / "fresh")
    assert json.loads((fresh / "estimate.json").read_text())["stage1"]["resumed_from"] is None
    assert fresh.name == resumed.name  # same recipe, same run id
    h1, _, _ = read_confusion(resumed / "confusion.h5")
    h2, _, _ = read_confusion(fresh / "confusion.h5")
    for a in range(3):
        for b in range(3):
            np.testing.assert_array_equal(h1[a][b], h2[a][b])


@pytest.mark.slow
def test_two_process_confusion_equals_one_process(world, cli, tmp_path):
    """Under torchrun (gloo, 2 ranks) each rank measures half the images; the all-reduced sum is exact."""
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--json", "--artifacts", tmp_path / "one")
    assert code == 0, err
    one = Path(json.loads(out)["path"])
    env = dict(os.environ, UNISEG_ARTIFACTS=str(tmp_path / "two"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "uniseg_cli", "estimate-nodes", *_ds(world), *FAST, "--multihead", str(one),
                           "--device", "cpu", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [Path(p.parent) for p in (tmp_path / "two" / "node-estimate").glob("*/manifest.json")]
    assert len(two) == 1
    doc = json.loads((two[0] / "estimate.json").read_text())
    assert doc["confusion"]["world_size"] == 2
    h1, _, _ = read_confusion(one / "confusion.h5")
    h2, _, _ = read_confusion(two[0] / "confusion.h5")
    for a in range(3):
        for b in range(3):
            np.testing.assert_array_equal(h1[a][b], h2[a][b])
    assert doc["num_nodes"] == json.loads((one / "estimate.json").read_text())["num_nodes"]


def test_appearance_evidence_is_trained_stored_and_gates_the_clustering(world, cli, tmp_path):
    from uniseg_cli.taxonomy.confusion import read_generic_shares
    from uniseg_cli.training import checkpoint as C

    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--generic-iters", "6", "--generic-crop", "16",
                         "--min-generic-share", "0.1", "--unions", "--json", "--artifacts", tmp_path / "a")
    assert code == 0, err
    art = Path(json.loads(out)["path"])
    doc = json.loads((art / "estimate.json").read_text())
    assert doc["clustering_params"]["min_generic_share"] == 0.1 and doc["clustering_params"]["unions"] is True
    assert isinstance(doc["unions"], list) and doc["timings"]["appearance_s"] > 0
    shares = read_generic_shares(art / "confusion.h5")
    hist, classes, _ = read_confusion(art / "confusion.h5")
    sizes = [len(classes[n]) for n in classes]
    for a in range(3):
        assert not shares[a][a].any()
        for b in range(3):
            assert shares[a][b].shape == (sizes[a], sizes[b])
            assert (shares[a][b] >= 0).all() and (shares[a][b].sum(axis=1) <= 1 + 1e-9).all()
    tensors, meta = C.read_checkpoint(art, "generic")
    assert meta["kind"] == "uniseg.generic-encoder" and meta["train"]["iterations"] == 6 and tensors
    # every merged pair the clustering made is one the images support
    from uniseg_cli.taxonomy.evidence import pair_support

    sup = pair_support(shares)
    off = np.concatenate([[0], np.cumsum(sizes)])
    for cl in doc["clusters"]:
        idx = [off[list(classes).index(d)] + c for d, c, _ in cl["members"]]
        assert all(sup[i, j] >= 0.1 for i in idx for j in idx if i != j), cl
    # the parameter needs its evidence: a clear usage error, not a silent no-op
    code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--min-generic-share", "0.1", "--artifacts", tmp_path / "b")
    assert code == 2 and "generic_iters" in err


def _encoder_setup(world: Path, iters: int):
    import dataclasses

    from uniseg_cli.data.base import DatasetSpec
    from uniseg_cli.stages import stage1
    from uniseg_cli.stages.estimate_nodes import Params

    specs = [DatasetSpec(n, str(world / n)) for n in ("citydrive", "vistadrive", "homescan")]
    p = dataclasses.replace(Params(), generic_iters=iters, generic_crop=16, embed_dim=8)
    return stage1, specs, p


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the background encoder needs a second core")
def test_the_background_encoder_is_the_encoder_this_process_trains(world, tmp_path, monkeypatch):
    import torch

    stage1, specs, p = _encoder_setup(world, 5)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one thread here leaves a core free
    cfg = stage1.segmenter_config(p)
    bg = stage1.BackgroundEncoder.start(specs, p, cfg, tmp_path / "bg")
    assert bg is not None and bg.proc.pid != os.getpid()
    assert bg.wait() and (tmp_path / "bg" / "generic.json").is_file() and bg.step.value == 5
    # the cache is there now: a second start has nothing to do
    assert stage1.BackgroundEncoder.start(specs, p, cfg, tmp_path / "bg") is None
    data = stage1.open_datasets(specs, p)
    there = stage1.appearance_evidence(p, data, torch.device("cpu"), cfg, tmp_path / "bg")
    here = stage1.appearance_evidence(p, data, torch.device("cpu"), cfg, tmp_path / "fg")
    assert there["train"]["resumed"] is True and "resumed" not in here["train"]
    a, b = there["segmenter"].state_dict(), here["segmenter"].state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # same seed, same code, one thread each: the same weights
    for row_a, row_b in zip(there["shares"], here["shares"]):
        for x, y in zip(row_a, row_b):
            np.testing.assert_array_equal(x, y)


def test_the_background_encoder_starts_only_with_a_free_core_and_reports_failure(world, tmp_path, monkeypatch):
    from uniseg_cli.data.base import DatasetSpec

    stage1, specs, p = _encoder_setup(world, 5)
    cfg = stage1.segmenter_config(p)
    monkeypatch.setattr(stage1.BackgroundEncoder, "free_threads", staticmethod(lambda: 0))
    assert stage1.BackgroundEncoder.start(specs, p, cfg, tmp_path / "busy") is None
    monkeypatch.setattr(stage1.BackgroundEncoder, "free_threads", staticmethod(lambda: 1))
    # a child that cannot read its data exits non-zero and writes nothing; the caller then trains the encoder itself
    bad = stage1.BackgroundEncoder.start([DatasetSpec("gone", str(tmp_path / "missing"))], p, cfg, tmp_path / "bad")
    assert bad is not None and bad.wait() is False and bad.proc.exitcode != 0
    assert not (tmp_path / "bad" / "generic.json").exists()
    # a child still training when stage 1 fails is ended
    _, _, long = _encoder_setup(world, 100000)
    run = stage1.BackgroundEncoder.start(specs, long, cfg, tmp_path / "long")
    deadline = time.time() + 60
    while run.step.value < 1 and time.time() < deadline:
        time.sleep(0.1)
    assert run.proc.is_alive() and run.step.value >= 1
    run.stop()
    assert not run.proc.is_alive() and not (tmp_path / "long" / "generic.json").exists()


def test_where_the_encoder_trains_is_not_part_of_the_recipe(world, cli, tmp_path):
    def dry(*flags):
        code, out, err = cli("estimate-nodes", *_ds(world), *FAST, "--generic-iters", "6", *flags, "--dry-run", "--json",
                             "--artifacts", tmp_path)
        assert code == 0, err
        return json.loads(out)

    on, off, other = dry(), dry("--no-generic-background"), dry("--generic-crop", "32")
    assert on["params"]["generic_background"] is True and off["params"]["generic_background"] is False
    assert on["run_id"] == off["run_id"] != other["run_id"]  # the same weights either way: the same artifact
