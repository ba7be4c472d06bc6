"""The artifact store: hashing, run ids, manifests, atomic publish, verification, locking."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniseg_cli import artifacts as A
from uniseg_cli.errors import ArtifactError, BusyError, OutputExistsError

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False, width=32))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4), max_leaves=12)


@given(st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_canonical_hash_ignores_key_order(d):
    reordered = dict(reversed(list(d.items())))
    assert A.sha256_json(d) == A.sha256_json(reordered)


@given(st.dictionaries(st.text(min_size=1, max_size=6), st.integers(-1000, 1000), min_size=1, max_size=6), st.data())
@settings(max_examples=60, deadline=None)
def test_canonical_hash_detects_any_value_change(d, data):
    key = data.draw(st.sampled_from(sorted(d)))
    changed = dict(d)
    changed[key] = d[key] + data.draw(st.integers(1, 50))
    assert A.sha256_json(d) != A.sha256_json(changed)
    assert A.sha256_json(d) != A.sha256_json({**d, key: str(d[key])})  # type matters too


def test_run_id_depends_on_kind_params_and_inputs():
    inp = [A.InputRef("label-features", "abc", "0" * 64)]
    base = A.run_id_for("training", {"lr": 1e-4}, inp)
    assert len(base) == 12 and all(c in "0123456789abcdef" for c in base)
    assert A.run_id_for("training", {"lr": 1e-4}, inp) == base
    assert A.run_id_for("training", {"lr": 2e-4}, inp) != base
    assert A.run_id_for("evaluation", {"lr": 1e-4}, inp) != base
    assert A.run_id_for("training", {"lr": 1e-4}, [A.InputRef("label-features", "abc", "1" * 64)]) != base


def _publish(root, payload=b"hello", params=None, force=False):
    with A.publish(root, "label-features", params or {"a": 1}, force=force, argv=["uniseg", "x"]) as st_:
        (st_.dir / "features.h5").write_bytes(payload)
        (st_.dir / "sub").mkdir()
        (st_.dir / "sub" / "b.txt").write_text("b")
    return st_.artifact


def test_manifest_round_trip(tmp_path):
    art = _publish(tmp_path)
    again = A.load_artifact(art.path, kind="label-features")
    m = again.manifest
    assert m["schema"] == "uniseg.manifest/1"
    assert m["kind"] == "label-features" and m["run_id"] == art.run_id == art.path.name
    assert [o["path"] for o in m["outputs"]] == ["features.h5", "sub/b.txt"]
    assert m["outputs"][0]["sha256"] == A.sha256_file(art.path / "features.h5")
    assert m["outputs"][0]["bytes"] == 5
    assert m["params"] == {"a": 1}
    assert m["argv"] == ["uniseg", "x"]
    assert "python" in m["versions"] and "commit" in m["git"]
    assert not list((tmp_path / "label-features").glob(".tmp-*"))


def test_flipped_byte_is_exit_3_naming_the_file(tmp_path):
    art = _publish(tmp_path)
    f = art.path / "features.h5"
    data = bytearray(f.read_bytes())
    data[0] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as ei:
        A.load_artifact(art.path)
    assert ei.value.exit_code == 3
    assert "features.h5" in ei.value.message and "sha256" in ei.value.message
    assert "uniseg embed-labels" in ei.value.hint


def test_wrong_kind_and_missing_manifest_are_exit_3(tmp_path):
    art = _publish(tmp_path)
    with pytest.raises(ArtifactError, match="expected training"):
        A.load_artifact(art.path, kind="training")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        A.load_artifact(tmp_path / "junk")
    mf = art.path / "manifest.json"
    m = json.loads(mf.read_text())
    m["schema"] = "uniseg.manifest/2"
    mf.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="uniseg.manifest/1"):
        A.load_artifact(art.path)


def test_existing_run_is_refused_with_exit_4(tmp_path):
    _publish(tmp_path)
    with pytest.raises(OutputExistsError) as ei:
        _publish(tmp_path)
    assert ei.value.exit_code == 4 and "--force" in ei.value.hint


def test_force_replaces_only_after_the_new_one_is_published(tmp_path):
    art = _publish(tmp_path, b"old")
    # A forced run that fails midway leaves the old artifact intact.
    with pytest.raises(RuntimeError):
        with A.publish(tmp_path, "label-features", {"a": 1}, force=True) as st_:
            (st_.dir / "features.h5").write_bytes(b"new")
            assert (art.path / "features.h5").read_bytes() == b"old"  # still there while staging
            raise RuntimeError("boom")
    assert A.load_artifact(art.path).path == art.path
    assert (art.path / "features.h5").read_bytes() == b"old"
    new = _publish(tmp_path, b"new", force=True)
    assert new.path == art.path and (new.path / "features.h5").read_bytes() == b"new"
    A.load_artifact(new.path)
    assert not [p for p in (tmp_path / "label-features").iterdir() if p.name.startswith(".")]


def test_killed_publish_leaves_no_artifact_and_no_lock(tmp_path):
    script = textwrap.dedent(f"""
        import time, sys
        from uniseg_cli import artifacts as A
        with A.publish({str(tmp_path)!r}, "label-features", {{"a": 1}}) as st:
            (st.dir / "features.h5").write_bytes(b"partial")
            print("staged", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kind_dir = tmp_path / "label-features"
    run_id = A.run_id_for("label-features", {"a": 1})
    assert not (kind_dir / run_id).exists()
    # The next publish cleans the dead process's staging dir and its lock does not block.
    art = _publish(tmp_path)
    assert art.run_id == run_id
    assert sorted(p.name for p in kind_dir.iterdir()) == [run_id]


def _concurrent_publisher(root, barrier, results):
    from uniseg_cli import artifacts as A2

    barrier.wait()
    try:
        with A2.publish(root, "label-features", {"a": 1}) as st_:
            (st_.dir / "features.h5").write_bytes(b"x" * 1000)
            time.sleep(1.0)
        results.put("published")
    except BusyError:  # the other process holds the run id's lock (a subclass of OutputExistsError: exit 4)
        results.put("refused")


def test_two_concurrent_publishes_of_one_run_id_give_one_artifact(tmp_path):
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_concurrent_publisher, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in range(2))
    assert outcomes == ["published", "refused"]
    kind_dir = tmp_path / "label-features"
    assert len([p for p in kind_dir.iterdir()]) == 1
    A.load_artifact(next(kind_dir.iterdir()))


def test_secrets_never_reach_the_manifest(tmp_path):
    with A.publish(tmp_path, "label-descriptions", {"model": "m", "api_key": "sk-secret"},
                   argv=["uniseg", "describe-labels", "--api-key", "sk-secret2", "--token=sk-3"]) as st_:
        (st_.dir / "x").write_text("x")
    text = (st_.artifact.path / "manifest.json").read_text()
    assert "sk-secret" not in text and "sk-3" not in text


def test_resolve_input_by_path_run_id_or_newest(tmp_path):
    a = _publish(tmp_path, params={"a": 1})
    time.sleep(0.02)
    b = _publish(tmp_path, params={"a": 2})
    os.utime(b.path / "manifest.json", (time.time() + 5, time.time() + 5))
    assert A.resolve_input(None, tmp_path, "label-features").run_id == b.run_id
    assert A.resolve_input(a.run_id, tmp_path, "label-features").run_id == a.run_id
    assert A.resolve_input(str(a.path), tmp_path, "label-features").run_id == a.run_id
    with pytest.raises(ArtifactError, match="no training artifact") as ei:
        A.resolve_input(None, tmp_path, "training")
    assert "uniseg train" in ei.value.hint
