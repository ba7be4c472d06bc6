"""Artifacts: run ids, canonical hashing, manifests, atomic publish, verification.

This is the only module that knows the on-disk layout of artifacts::

    <root>/<kind>/<run_id>/manifest.json      written last; a directory without it is no artifact
    <root>/<kind>/<run_id>/<payload files>
    <root>/<kind>/.tmp-<run_id>-<pid>/        staging directory while a stage writes
    <root>/<kind>/.lock-<run_id>              held while a run id is being published

``run_id`` = first 12 hex digits of sha256(canonical JSON of {kind, format version, resolved params,
content hashes of the inputs}). Same recipe, same id.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from uniseg_cli import __version__
from uniseg_cli.errors import ArtifactError, BusyError, OutputExistsError, UsageError

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "uniseg.manifest/1"
SUPPORTED_MANIFEST_MAJOR = 1

#: Artifact kind -> (payload format version, the command that rebuilds it).
KINDS: dict[str, tuple[int, str]] = {
    "label-descriptions": (1, "uniseg describe-labels"),
    "label-features": (1, "uniseg embed-labels"),
    "node-estimate": (1, "uniseg estimate-nodes"),
    "training": (1, "uniseg train"),
    "taxonomy": (1, "uniseg export-taxonomy"),
    "evaluation": (1, "uniseg evaluate"),
    "prediction": (1, "uniseg predict"),
    "baseline": (1, "uniseg train-baseline"),
}

SECRET_KEYS = ("api_key", "apikey", "token", "secret", "password", "authorization")


# --------------------------------------------------------------------------------------------- hashing


def _canonical(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON types with a single spelling for each value."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return repr(obj)
        if obj.is_integer() and abs(obj) < 2**53:
            # 1.0 and 1 hash alike: YAML and flags may spell a number either way.
            return int(obj)
        return obj
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _canonical(obj.item())
    raise TypeError(f"cannot hash a value of type {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, plain types (DVC ``dict_sha256`` style)."""
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def run_id_for(kind: str, params: Any, inputs: Sequence["InputRef"] = ()) -> str:
    """The run id of a recipe: kind, its format version, resolved params and input hashes."""
    version = KINDS[kind][0] if kind in KINDS else 1
    recipe = {
        "kind": kind,
        "format": version,
        "params": _canonical(params),
        "inputs": sorted(([i.kind, i.sha256] for i in inputs)),
    }
    return sha256_json(recipe)[:12]


def _secretish(name: str) -> bool:
    n = name.lower().replace("-", "_")
    return any(s in n for s in SECRET_KEYS)


def redact(obj: Any) -> Any:
    """Drop values under secret-looking keys and mask secret-looking argv values."""
    if isinstance(obj, Mapping):
        return {k: ("***" if _secretish(str(k)) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        out, mask_next = [], False
        for v in obj:
            if mask_next:
                out.append("***")
                mask_next = False
                continue
            if isinstance(v, str) and v.startswith("--") and _secretish(v.split("=", 1)[0]):
                if "=" in v:
                    out.append(v.split("=", 1)[0] + "=***")
                else:
                    out.append(v)
                    mask_next = True
                continue
            out.append(redact(v))
        return out
    return obj


# --------------------------------------------------------------------------------------------- types


@dataclasses.dataclass(frozen=True)
class InputRef:
    """An input of a stage: an upstream artifact, or a dataset fingerprint."""

    kind: str  # artifact kind, or "dataset:<name>"
    run_id: str  # the artifact's run id, or the dataset's root path
    sha256: str  # the artifact's manifest hash, or the dataset fingerprint

    def to_json(self) -> dict:
        return {"kind": self.kind, "run_id": self.run_id, "sha256": self.sha256}


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A published, verified artifact directory."""

    path: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def params(self) -> dict:
        return self.manifest.get("params", {})

    @property
    def sha256(self) -> str:
        """The artifact's identity as an input: the hash of its manifest's outputs."""
        return sha256_json(sorted((o["path"], o["sha256"]) for o in self.manifest["outputs"]))

    def ref(self) -> InputRef:
        return InputRef(self.kind, self.run_id, self.sha256)

    def file(self, name: str) -> Path:
        p = self.path / name
        if not p.exists():
            raise ArtifactError(
                f"{self.kind} artifact {self.path} has no file {name}",
                hint=f"rebuild it with `{rebuild_command(self.kind)} --force`.",
            )
        return p


def rebuild_command(kind: str) -> str:
    return KINDS.get(kind, (1, "the command that made it"))[1]


def artifacts_root(explicit: str | Path | None = None) -> Path:
    """``--artifacts``, else ``$UNISEG_ARTIFACTS``, else ``./artifacts``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("UNISEG_ARTIFACTS")
    return Path(env) if env else Path("artifacts")


def artifact_dir(root: Path, kind: str, run_id: str) -> Path:
    return Path(root) / kind / run_id


# --------------------------------------------------------------------------------------------- read


def _library_versions() -> dict[str, str]:
    out = {"uniseg": __version__, "python": platform.python_version()}
    for mod, name in [
        ("torch", "torch"),
        ("torch_geometric", "torch_geometric"),
        ("transformers", "transformers"),
        ("ot", "pot"),
        ("h5py", "h5py"),
        ("pyarrow", "pyarrow"),
        ("numpy", "numpy"),
        ("timm", "timm"),
    ]:
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[name] = str(m.__version__)
    return out


def _git_state() -> dict:
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def read_manifest(path: Path) -> dict:
    path = Path(path)
    mf = path / MANIFEST if path.is_dir() else path
    if not mf.exists():
        if path.is_dir():
            raise ArtifactError(
                f"{path} is not an artifact: it has no {MANIFEST} (an unfinished or foreign directory)",
                hint="point at a directory <root>/<kind>/<run_id>/ made by uniseg, or re-run the stage that makes it.",
            )
        raise ArtifactError(f"{path} does not exist", hint="check the path; `ls artifacts/*/` lists what exists.")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mf} is not valid JSON: {e}", hint="the artifact is corrupt; re-run the stage with --force.")
    schema = str(manifest.get("schema", ""))
    if not schema.startswith("uniseg.manifest/"):
        raise ArtifactError(f"{mf} has schema {schema!r}, not uniseg.manifest/N", hint="this is not a uniseg artifact.")
    try:
        major = int(schema.split("/", 1)[1].split(".")[0])
    except ValueError:
        raise ArtifactError(f"{mf} has an unreadable schema version {schema!r}")
    if major != SUPPORTED_MANIFEST_MAJOR:
        raise ArtifactError(
            f"{mf} has schema {schema}; this uniseg reads uniseg.manifest/{SUPPORTED_MANIFEST_MAJOR}",
            hint="use the uniseg version that wrote it, or rebuild the artifact.",
        )
    for key in ("kind", "run_id", "outputs"):
        if key not in manifest:
            raise ArtifactError(f"{mf} lacks the field {key!r}", hint="the artifact is corrupt; rebuild it with --force.")
    return manifest


def verify(path: Path, manifest: dict) -> list[str]:
    """Problems found when checking every output's size and sha256 (empty list: all good)."""
    problems = []
    for out in manifest["outputs"]:
        p = Path(path) / out["path"]
        if not p.exists():
            problems.append(f"{p}: missing")
            continue
        if p.stat().st_size != out["bytes"]:
            problems.append(f"{p}: {p.stat().st_size} bytes, manifest says {out['bytes']}")
            continue
        if sha256_file(p) != out["sha256"]:
            problems.append(f"{p}: sha256 differs from the manifest (the file was changed or corrupted)")
    return problems


def load_artifact(path: str | Path, kind: str | None = None, check: bool = True) -> Artifact:
    """Read and verify an artifact directory (exit 3 on any problem)."""
    path = Path(path)
    manifest = read_manifest(path)
    if path.is_file():
        path = path.parent
    if kind is not None and manifest["kind"] != kind:
        raise ArtifactError(
            f"{path} is a {manifest['kind']} artifact, expected {kind}",
            hint=f"pass the output of `{rebuild_command(kind)}`.",
        )
    if check:
        problems = verify(path, manifest)
        if problems:
            raise ArtifactError(
                f"{manifest['kind']} artifact {path} failed verification: " + "; ".join(problems),
                hint=f"rebuild it with `{rebuild_command(manifest['kind'])} --force`.",
            )
    return Artifact(path=path, manifest=manifest)


def find_artifact(root: Path, kind: str, run_id: str, check: bool = True) -> Artifact | None:
    d = artifact_dir(root, kind, run_id)
    if not (d / MANIFEST).exists():
        return None
    return load_artifact(d, kind=kind, check=check)


def latest_artifact(root: Path, kind: str) -> Artifact | None:
    """The most recently created artifact of a kind under ``root`` (None if there is none)."""
    base = Path(root) / kind
    if not base.is_dir():
        return None
    best = None
    for d in base.iterdir():
        mf = d / MANIFEST
        if d.name.startswith(".") or not mf.exists():
            continue
        if best is None or mf.stat().st_mtime > best.stat().st_mtime:
            best = mf
    return load_artifact(best.parent, kind=kind) if best else None


def resolve_input(ref: str | Path | None, root: Path, kind: str) -> Artifact:
    """An input given as a path, a run id, or nothing (then: the newest artifact of that kind)."""
    if ref is None:
        art = latest_artifact(root, kind)
        if art is None:
            raise ArtifactError(
                f"no {kind} artifact under {Path(root) / kind}",
                hint=f"run `{rebuild_command(kind)}` first, or pass the artifact's path.",
            )
        return art
    p = Path(ref)
    if p.exists():
        return load_artifact(p, kind=kind)
    cand = artifact_dir(root, kind, str(ref))
    if cand.exists():
        return load_artifact(cand, kind=kind)
    raise ArtifactError(
        f"{ref} is neither a path nor a {kind} run id under {Path(root) / kind}",
        hint=f"run `{rebuild_command(kind)}` first, or pass the artifact's path.",
    )


# --------------------------------------------------------------------------------------------- publish


@contextlib.contextmanager
def _lock(root: Path, kind: str, run_id: str) -> Iterator[None]:
    """An exclusive, non-blocking lock per run id; released when the process dies."""
    (Path(root) / kind).mkdir(parents=True, exist_ok=True)
    lock_path = Path(root) / kind / f".lock-{run_id}"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise BusyError(
                    f"another process is publishing {kind} {run_id} right now",
                    hint="wait for it to finish; its result will be reused.",
                )
            raise
        yield
    finally:
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


class Staging:
    """A staging directory for one run; the stage writes payload files into ``dir``."""

    def __init__(self, root: Path, kind: str, run_id: str, params: Any, inputs: Sequence[InputRef], argv):
        self.root, self.kind, self.run_id = Path(root), kind, run_id
        self.params, self.inputs, self.argv = params, list(inputs), argv
        self.dir = Path(root) / kind / f".tmp-{run_id}-{os.getpid()}"
        self.extra: dict = {}
        self.artifact: Artifact | None = None


def _clean_stale_staging(root: Path, kind: str, run_id: str) -> None:
    """Remove staging directories of this run id left behind by killed processes."""
    base = Path(root) / kind
    for d in base.glob(f".tmp-{run_id}-*"):
        pid = d.name.rsplit("-", 1)[-1]
        try:
            alive = pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid))
        except OSError:
            alive = False
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_absent(root: Path, kind: str, run_id: str, force: bool) -> Artifact | None:
    """Exit 4 if the run exists and ``force`` is off; return the existing artifact otherwise."""
    d = artifact_dir(root, kind, run_id)
    if (d / MANIFEST).exists():
        if not force:
            raise OutputExistsError(
                f"{kind} {run_id} already exists at {d}",
                hint="the same recipe was already run; use that path, or re-run with --force to rebuild it.",
            )
        return Artifact(d, read_manifest(d))
    return None


@contextlib.contextmanager
def publish(
    root: str | Path,
    kind: str,
    params: Any,
    inputs: Sequence[InputRef] = (),
    *,
    force: bool = False,
    argv: Sequence[str] | None = None,
    run_id: str | None = None,
) -> Iterator[Staging]:
    """Stage, then atomically publish an artifact.

    Usage::

        with publish(root, "label-features", params, [desc.ref()], force=force) as st:
            write(st.dir / "features.h5")
        art = st.artifact

    The manifest is written last, then the staging directory is renamed into place. On any
    exception the staging directory is deleted and nothing is published. With ``force`` an
    existing artifact is replaced only after the new one is complete.
    """
    root = Path(root)
    run_id = run_id or run_id_for(kind, params, inputs)
    check_absent(root, kind, run_id, force)
    with _lock(root, kind, run_id):
        check_absent(root, kind, run_id, force)  # someone may have finished while we waited
        _clean_stale_staging(root, kind, run_id)
        st = Staging(root, kind, run_id, params, inputs, list(argv) if argv is not None else list(sys.argv))
        st.dir.mkdir(parents=True)
        try:
            yield st
            _write_manifest(st)
            final = artifact_dir(root, kind, run_id)
            if final.exists():
                old = final.parent / f".old-{run_id}-{os.getpid()}"
                os.rename(final, old)
                os.rename(st.dir, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(st.dir, final)
            st.artifact = Artifact(final, json.loads((final / MANIFEST).read_text()))
        except BaseException:
            shutil.rmtree(st.dir, ignore_errors=True)
            raise


def _write_manifest(st: Staging) -> None:
    outputs = []
    for p in sorted(st.dir.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(st.dir).as_posix()
            outputs.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size})
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "kind": st.kind,
        "run_id": st.run_id,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": redact(st.argv),
        "params": redact(_canonical(st.params)),
        "inputs": sorted((i.to_json() for i in st.inputs), key=lambda d: (d["kind"], d["run_id"])),
        "outputs": outputs,
        "versions": _library_versions(),
        "git": _git_state(),
    }
    if st.extra:
        manifest["extra"] = _canonical(st.extra)
    tmp = st.dir / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, st.dir / MANIFEST)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary sibling and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def payload_path(src: "Artifact | str | Path", kind: str, filename: str) -> Path:
    """The payload file ``filename`` of a ``kind`` artifact, given the artifact, its directory or the file itself.

    A directory is verified as an artifact; a plain file is taken as it is (its own schema check
    is the reader's job). Exit 3 on a wrong kind or a missing path.
    """
    if isinstance(src, Artifact):
        if src.kind != kind:
            raise ArtifactError(f"{src.path} is a {src.kind} artifact, expected {kind}",
                                hint=f"pass the output of `{rebuild_command(kind)}`.")
        return src.file(filename)
    p = Path(src)
    if p.is_dir():
        return load_artifact(p, kind=kind).file(filename)
    if not p.exists():
        raise ArtifactError(f"{p} does not exist", hint=f"run `{rebuild_command(kind)}` first, or pass its path.")
    return p


def lineage(art: Artifact, root: Path | None = None, depth: int = 8) -> list[dict]:
    """The chain of upstream artifacts (as far as they are found under ``root``)."""
    root = Path(root) if root is not None else art.path.parent.parent
    out = []
    for inp in art.manifest.get("inputs", []):
        entry = dict(inp)
        d = artifact_dir(root, inp["kind"], inp["run_id"])
        external = inp["kind"] not in KINDS  # datasets, models, servers, files: not artifacts
        if not external and (d / MANIFEST).exists() and depth > 0:
            entry["path"] = str(d)
            up = Artifact(d, read_manifest(d))
            entry["found"] = up.sha256 == inp["sha256"]
            entry["inputs"] = lineage(up, root, depth - 1)
        else:
            entry["found"] = external
        out.append(entry)
    return out


def require(cond: bool, message: str, hint: str | None = None) -> None:
    if not cond:
        raise UsageError(message, hint)
