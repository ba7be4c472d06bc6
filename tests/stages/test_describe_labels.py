"""describe-labels as a stage: real datasets on disk, real artifacts, a real local chat server."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.text.chat_server import ChatServer
from uniseg_cli import stages as S
from uniseg_cli.config import build_params
from uniseg_cli.data.base import DatasetSpec
from uniseg_cli.data.generic import write_labels_yaml
from uniseg_cli.errors import ArtifactError, DataError, OutputExistsError, ServiceError, UsageError
from uniseg_cli.stages import describe_labels as D

SECRET = "sk-test-SECRET-4f1c9a77"


def make_datasets(tmp_path):
    write_labels_yaml(tmp_path / "a", "drive_a", ["road", "car", "traffic_sign"],
                      descriptions=["Paved lanes; excludes sidewalks.", "Passenger cars.", "Signs on poles."])
    write_labels_yaml(tmp_path / "b", "city_b", ["sky", "person"])
    return [DatasetSpec("drive_a", str(tmp_path / "a")), DatasetSpec("city_b", str(tmp_path / "b"))]


def ctx_for(datasets, root, force=False, **params):
    spec = S.get_stage("describe-labels")
    return S.StageContext(spec=spec, params=build_params(D.Params, params), inputs={}, datasets=datasets, root=root,
                          force=force, argv=["uniseg", "describe-labels"])


def test_template_provider_writes_the_design_schema(tmp_path, _artifacts_root):
    ds = make_datasets(tmp_path)
    art, ran = S.execute(ctx_for(ds, _artifacts_root))
    assert ran and art.kind == "label-descriptions"
    table = pq.read_table(art.path / "descriptions.parquet")
    assert table.schema.field("label_id").type == pa.int32()
    assert all(table.schema.field(c).type == pa.string() for c in D.COLUMNS if c != "label_id")
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["schema"] == "uniseg.label-descriptions/1" and meta["kind"] == art.kind and meta["run_id"] == art.run_id
    rows = D.read_descriptions(art)
    assert [(r.dataset, r.label_id, r.label) for r in rows] == [
        ("drive_a", 0, "road"), ("drive_a", 1, "car"), ("drive_a", 2, "traffic_sign"),
        ("city_b", 0, "sky"), ("city_b", 1, "person")]
    assert rows[0].description == "An image of road from the drive_a dataset. Paved lanes; excludes sidewalks."
    assert rows[3].description == "An image of sky from the city_b dataset."
    assert {r.provider for r in rows} == {"template"} and "traffic sign" in rows[2].prompt
    with pytest.raises(OutputExistsError):  # same recipe again: exit 4 unless --force
        S.execute(ctx_for(ds, _artifacts_root))
    assert S.execute(ctx_for(ds, _artifacts_root), skip_existing=True) == (art, False)


def test_openai_provider_end_to_end_caches_and_never_writes_the_key(tmp_path, _artifacts_root, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ds = make_datasets(tmp_path)
    with ChatServer(api_key=SECRET) as srv:
        art, _ = S.execute(ctx_for(ds, _artifacts_root, provider="openai", model="tiny-llm", base_url=srv.url))
        assert len(srv.requests) == 5
        rows = D.read_descriptions(art)
        assert rows[4].description.startswith("An image of person from the city_b dataset. It includes")
        assert {(r.provider, r.model) for r in rows} == {("openai", "tiny-llm")}
        assert art.manifest["extra"]["llm"]["requests"] == 5
        art2, _ = S.execute(ctx_for(ds, _artifacts_root, force=True, provider="openai", model="tiny-llm",
                                    base_url=srv.url))
        assert len(srv.requests) == 5  # the re-run is answered from the cache
        assert art2.manifest["extra"]["llm"] == {"total": 5, "cache_hits": 5, "requests": 0, "retries": 0}
        assert D.read_descriptions(art2) == rows
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # another server: another recipe
    assert ctx_for(ds, _artifacts_root, provider="openai", model="tiny-llm").run_id() != ctx_for(
        ds, _artifacts_root, provider="openai", model="tiny-llm", base_url=srv.url).run_id()
    written = [p for p in _artifacts_root.rglob("*") if p.is_file()]
    assert any(p.name == "responses.sqlite" for p in written)
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p


def test_openai_bad_key_is_a_service_error_and_publishes_nothing(tmp_path, _artifacts_root, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with ChatServer(api_key=SECRET) as srv:
        with pytest.raises(ServiceError, match="rejected the API key"):
            S.execute(ctx_for(make_datasets(tmp_path), _artifacts_root, provider="openai", model="tiny-llm",
                              base_url=srv.url))
        assert len(srv.requests) == 1
    assert not (_artifacts_root / "label-descriptions").exists() or not any(
        (_artifacts_root / "label-descriptions").glob("*/manifest.json"))


def test_file_provider_and_a_file_that_misses_labels(tmp_path, _artifacts_root):
    ds = make_datasets(tmp_path)
    good = tmp_path / "desc.json"
    good.write_text(json.dumps({
        "drive_a": {"classes": ["road", "car", "traffic_sign"], "descriptions": ["R.", "C.", "T."]},
        "city_b": {"sky": "An image of sky from city_b. S.", "person": "P."}}))
    art, _ = S.execute(ctx_for(ds, _artifacts_root, provider="file", descriptions_file=str(good)))
    rows = D.read_descriptions(art)
    assert rows[1].description == "An image of car from the drive_a dataset. C."
    assert rows[3].description == "An image of sky from city_b. S." and rows[3].model == "desc.json"
    edited = ctx_for(ds, _artifacts_root, provider="file", descriptions_file=str(good))
    assert edited.run_id() == art.run_id
    good.write_text(good.read_text().replace("C.", "Cars."))  # an edited file is a new recipe
    assert ctx_for(ds, _artifacts_root, provider="file", descriptions_file=str(good)).run_id() != art.run_id
    bad = tmp_path / "short.csv"
    bad.write_text("dataset,label,description\ndrive_a,road,R.\n")
    with pytest.raises(ArtifactError) as ei:
        S.execute(ctx_for(ds, _artifacts_root, provider="file", descriptions_file=str(bad)))
    assert "short.csv" in ei.value.message and "drive_a/car" in ei.value.message and "city_b/sky" in ei.value.message


def test_bad_input_names_what_is_wrong(tmp_path, _artifacts_root):
    with pytest.raises(UsageError, match="no datasets"):
        S.execute(ctx_for([], _artifacts_root))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "labels.yaml").write_text("name: e\nignore_index: 255\nclasses: []\n")
    with pytest.raises(DataError, match="classes"):
        S.execute(ctx_for([DatasetSpec("e", str(tmp_path / "e"))], _artifacts_root))
    with pytest.raises(UsageError, match="descriptions_file"):
        build_params(D.Params, {"provider": "file"})
    with pytest.raises(UsageError, match="provider"):
        build_params(D.Params, {"provider": "chatgpt"})


def test_reader_rejects_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"dataset": ["a"]}), foreign)
    with pytest.raises(ArtifactError, match="schema None, expected uniseg.label-descriptions/1"):
        D.read_descriptions(foreign)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ArtifactError, match="not a readable Parquet"):
        D.read_descriptions(broken)
    with pytest.raises(ArtifactError, match="does not exist"):
        D.read_descriptions(tmp_path / "missing.parquet")


def test_run_id_depends_only_on_what_can_change_the_descriptions(tmp_path):
    ds = make_datasets(tmp_path)
    root = tmp_path / "artifacts"
    base = ctx_for(ds, root).run_id()
    # the template provider ignores the LLM's settings; connection settings never change an answer
    assert ctx_for(ds, root, model="other-model", temperature=0.7, concurrency=2, timeout=5.0).run_id() == base
    assert ctx_for(ds, root, prompt_template="Describe {label}.").run_id() != base  # the prompt column changes
    oa = ctx_for(ds, root, provider="openai").run_id()
    assert oa != base
    assert ctx_for(ds, root, provider="openai", concurrency=2, max_retries=1).run_id() == oa
    assert ctx_for(ds, root, provider="openai", model="other-model").run_id() != oa
    assert ctx_for(ds, root, provider="openai", temperature=0.5).run_id() != oa
    # the manifest still records every param as given
    assert ctx_for(ds, root, model="other-model").params_dict()["model"] == "other-model"
