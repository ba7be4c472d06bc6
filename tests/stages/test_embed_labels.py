"""embed-labels as a stage: descriptions artifact in, features.h5 out, with a tiny Llama loaded by path."""
import hashlib
import json

import h5py
import numpy as np
import pytest

from tests.stages.test_describe_labels import ctx_for as describe_ctx
from tests.stages.test_describe_labels import make_datasets
from tests.text.tiny_models import build_tiny_llama
from uniseg_cli import stages as S
from uniseg_cli.config import build_params
from uniseg_cli.errors import ArtifactError, UsageError
from uniseg_cli.stages import describe_labels as D
from uniseg_cli.stages import embed_labels as EL
from uniseg_cli.text.encoders import TextEncoder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def embed_ctx(desc_art, datasets, root, **params):
    return S.StageContext(spec=S.get_stage("embed-labels"), params=build_params(EL.Params, params),
                          inputs={"describe-labels": desc_art}, datasets=datasets, root=root)


def test_features_h5_schema_order_and_values(tmp_path, _artifacts_root, llama_dir):
    ds = make_datasets(tmp_path)
    desc, _ = S.execute(describe_ctx(ds, _artifacts_root))
    art, _ = S.execute(embed_ctx(desc, ds, _artifacts_root, model=str(llama_dir), batch_size=2, device="cpu"))
    assert art.kind == "label-features"
    with h5py.File(art.path / "features.h5") as f:
        assert f["features"].dtype == np.float32 and f["features"].shape == (5, 64)
        assert f["label_id"].dtype == np.int32
        for name in ("dataset", "label", "text_sha256"):
            assert h5py.check_string_dtype(f[name].dtype) is not None and f[name].shape == (5,)
        a = dict(f.attrs)
        assert a["schema"] == "uniseg.label-features/1" and a["kind"] == "label-features" and a["run_id"] == art.run_id
        assert a["model"] == str(llama_dir.resolve()) and a["revision"].startswith("local:")
        assert (a["pooling"], a["max_length"], a["dtype"], a["dim"]) == ("mean", 128, "fp32", 64)
    feats, rows = EL.read_features(art)
    assert [(r.dataset, r.label_id, r.label) for r in rows] == [
        ("drive_a", 0, "road"), ("drive_a", 1, "car"), ("drive_a", 2, "traffic_sign"),
        ("city_b", 0, "sky"), ("city_b", 1, "person")]
    texts = [r.description for r in D.read_descriptions(desc)]
    assert [r.text_sha256 for r in rows] == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    direct = TextEncoder(str(llama_dir), device="cpu").encode(texts)
    np.testing.assert_allclose(feats, direct, atol=1e-5)
    assert {"kind": "label-descriptions", "run_id": desc.run_id, "sha256": desc.sha256} in art.manifest["inputs"]
    by = EL.features_by_dataset(feats, rows, ["city_b", "drive_a"])
    assert by["city_b"].shape == (2, 64) and np.allclose(by["drive_a"], feats[:3])


def test_rows_follow_the_descriptions_pipeline_order(tmp_path, _artifacts_root, llama_dir):
    ds = make_datasets(tmp_path)[::-1]
    desc, _ = S.execute(describe_ctx(ds, _artifacts_root))
    art, _ = S.execute(embed_ctx(desc, [], _artifacts_root, model=str(llama_dir), device="cpu"))
    feats, rows = EL.read_features(art)
    assert [r.dataset for r in rows] == ["city_b"] * 2 + ["drive_a"] * 3
    with pytest.raises(ArtifactError, match=r"cover \[city_b, drive_a\]; missing mapillary"):
        EL.features_by_dataset(feats, rows, ["drive_a", "mapillary"])


def test_empty_descriptions_are_refused(tmp_path, _artifacts_root, llama_dir):
    with pytest.raises(ArtifactError, match="no rows"):
        EL.ordered_rows([])


def test_missing_model_path_fails_before_anything_is_written(tmp_path, _artifacts_root):
    ds = make_datasets(tmp_path)
    desc, _ = S.execute(describe_ctx(ds, _artifacts_root))
    with pytest.raises(UsageError, match="model path .*no/such/model does not exist"):
        S.execute(embed_ctx(desc, ds, _artifacts_root, model=str(tmp_path / "no" / "such" / "model")))
    assert not list((_artifacts_root / "label-features").glob("*/manifest.json")) if (
        _artifacts_root / "label-features").exists() else True


def test_bad_params_are_usage_errors():
    with pytest.raises(UsageError, match="pooling"):
        build_params(EL.Params, {"pooling": "max"})
    with pytest.raises(UsageError, match="dtype"):
        build_params(EL.Params, {"dtype": "fp8"})


def test_reader_rejects_foreign_corrupt_and_inconsistent_files(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["features"] = np.zeros((2, 3), np.float32)
    with pytest.raises(ArtifactError, match="schema \\(none\\)"):
        EL.read_features(foreign)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(ArtifactError, match="unreadable HDF5"):
        EL.read_features(broken)
    odd = tmp_path / "odd.h5"
    EL.write_features(odd, np.ones((2, 4), np.float32),
                      [EL.FeatureRow("a", 0, "x", "h"), EL.FeatureRow("a", 1, "y", "h")], run_id="r", attrs={})
    with h5py.File(odd, "a") as f:
        f.attrs["dim"] = 5
    with pytest.raises(ArtifactError, match="dim=5"):
        EL.read_features(odd)


def test_cli_describe_then_embed(tmp_path, _artifacts_root, llama_dir, cli):
    make_datasets(tmp_path)
    code, out, err = cli("describe-labels", "--dataset", tmp_path / "a", "--dataset", tmp_path / "b", "--json")
    assert code == 0, err
    desc = json.loads(out)
    assert desc["kind"] == "label-descriptions" and desc["summary"]["labels"] == 5
    code, out, err = cli("describe-labels", "--dataset", tmp_path / "a", "--dataset", tmp_path / "b")
    assert code == 4 and "--force" in err
    code, out, err = cli("embed-labels", "--model", llama_dir, "--device", "cpu", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["dry_run"] is True
    assert not (_artifacts_root / "label-features").exists() or not list((_artifacts_root / "label-features").iterdir())
    code, out, err = cli("embed-labels", "--descriptions", desc["run_id"], "--model", llama_dir, "--device", "cpu",
                         "--pooling", "last", "--normalize", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["summary"]["dim"] == 64 and res["summary"]["pooling"] == "last"
    feats, rows = EL.read_features(res["path"])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    code, out, err = cli("embed-labels", "--model", tmp_path / "nowhere", "--force")
    assert code == 2 and "nowhere does not exist" in err and "Hint:" in err


def test_cli_openai_bad_key_exits_6_without_echoing_the_key(tmp_path, cli, monkeypatch):
    from tests.text.chat_server import ChatServer

    make_datasets(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-123")
    with ChatServer(api_key="sk-right") as srv:
        code, out, err = cli("describe-labels", "--dataset", tmp_path / "a", "--provider", "openai",
                             "--model", "tiny-llm", "--base-url", srv.url)
    assert code == 6 and "rejected the API key" in err and "sk-wrong-key-123" not in out + err


def test_run_id_follows_the_model_files(tmp_path, _artifacts_root, llama_dir):
    import shutil

    ds = make_datasets(tmp_path)
    desc, _ = S.execute(describe_ctx(ds, _artifacts_root))
    copy = shutil.copytree(llama_dir, tmp_path / "model")
    before = embed_ctx(desc, [], _artifacts_root, model=str(copy)).run_id()
    assert embed_ctx(desc, [], _artifacts_root, model=str(copy)).run_id() == before
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-5}))  # a different model now
    assert embed_ctx(desc, [], _artifacts_root, model=str(copy)).run_id() != before
