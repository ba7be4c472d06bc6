"""Stage ``embed-labels``: a text feature per label description (the GNN's node features).

Reads the ``label-descriptions`` artifact of describe-labels and writes
``label-features/<run_id>/features.h5`` (DESIGN §3):

- datasets ``features`` float32 [n, dim], ``dataset`` str [n], ``label_id`` int32 [n], ``label`` str [n],
  ``text_sha256`` str [n] (sha256 of the UTF-8 description that was encoded);
- root attributes ``schema`` (``uniseg.label-features/1``), ``kind``, ``run_id``, ``model`` (the encoder's
  id), ``revision``, ``pooling``, ``max_length``, ``dtype``, ``dim``, ``normalize``.

Row order: datasets in pipeline order, labels by id. The datasets enter through the descriptions
artifact (describe-labels writes its rows in pipeline order), so this stage's run id depends on the
descriptions and the encoder params only. Downstream stages read the file with :func:`read_features`
and pick datasets with :func:`features_by_dataset`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from uniseg_cli import artifacts as A
from uniseg_cli.errors import ArtifactError
from uniseg_cli.stages import StageContext, StageSpec, register
from uniseg_cli.stages.describe_labels import DescriptionRow, read_descriptions
from uniseg_cli.text import encoders as E

KIND = "label-features"
SCHEMA = "uniseg.label-features/1"
FILENAME = "features.h5"


@dataclasses.dataclass(frozen=True)
class Params:
    model: str = E.DEFAULT_MODEL  # local folder, Hugging Face hub id, or minilm (all-MiniLM-L6-v2, offline)
    pooling: str = "mean"  # mean (masked, real tokens), last (last real token) or reference (METHOD §2)
    max_length: int = 128  # tokens per description; longer ones are truncated
    dtype: str = "fp32"  # fp32, fp16 or bf16 weights (features are stored as float32)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    batch_size: int = 16  # descriptions per forward pass
    normalize: bool = False  # L2-normalise each feature

    def validate(self) -> None:
        if self.pooling not in E.POOLINGS:
            raise ValueError(f"pooling: must be one of {', '.join(E.POOLINGS)}, got {self.pooling!r}")
        if self.dtype not in E.DTYPES:
            raise ValueError(f"dtype: must be one of {', '.join(E.DTYPES)}, got {self.dtype!r}")
        if self.max_length < 2 or self.batch_size < 1:
            raise ValueError(f"max_length must be >= 2 and batch_size >= 1 (got {self.max_length}, {self.batch_size})")


class FeatureRow(NamedTuple):
    dataset: str
    label_id: int
    label: str
    text_sha256: str


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ordered_rows(rows: Sequence[DescriptionRow]) -> list[DescriptionRow]:
    """Rows in the descriptions' dataset order (the pipeline's, as describe-labels wrote it), labels by id."""
    if not rows:
        raise ArtifactError("the label-descriptions artifact has no rows (an empty label list)",
                            hint="re-run describe-labels with datasets that have classes.")
    by_ds: dict[str, list[DescriptionRow]] = {}
    for r in rows:
        by_ds.setdefault(r.dataset, []).append(r)
    out = []
    for name, group in by_ds.items():
        group = sorted(group, key=lambda r: r.label_id)
        if [r.label_id for r in group] != list(range(len(group))):
            raise ArtifactError(f"the descriptions of {name} have label ids {[r.label_id for r in group][:8]}…, "
                                f"not 0..{len(group) - 1}", hint="rebuild them with `uniseg describe-labels --force`.")
        out.extend(group)
    return out


def run(ctx: StageContext) -> A.Artifact:
    """Encode every description of the upstream artifact and publish ``features.h5``.

    Args:
        ctx: stage context; ``ctx.params`` is :class:`Params`; ``ctx.inputs["describe-labels"]`` the
            descriptions artifact.

    Returns:
        The ``label-features`` artifact; manifest ``extra.encoder`` holds the revision, parameter count
        and the padded-token share.

    Shapes:
        features: (n_labels, dim), dim = the encoder's hidden size (4096 for llama-2-7b, 384 for minilm).
    """
    p: Params = ctx.params
    rows = ordered_rows(read_descriptions(ctx.inputs["describe-labels"]))
    enc = E.TextEncoder(p.model, pooling=p.pooling, max_length=p.max_length, dtype=p.dtype, device=p.device,
                        batch_size=p.batch_size, normalize=p.normalize)
    texts = [r.description for r in rows]
    from uniseg_cli.ui import progress

    with progress() as bar:
        task = bar.add_task(f"embed ({Path(enc.ref.model_id).name})", total=len(texts))
        feats = enc.encode(texts, on_batch=lambda k: bar.advance(task, k))
    with ctx.publish() as st:
        write_features(st.dir / FILENAME, feats, [FeatureRow(r.dataset, r.label_id, r.label, text_sha256(r.description))
                                                  for r in rows], run_id=st.run_id,
                       attrs={"model": enc.ref.model_id, "revision": enc.ref.revision, "pooling": p.pooling,
                              "max_length": p.max_length, "dtype": p.dtype, "normalize": p.normalize})
        st.extra["encoder"] = {"model": enc.ref.model_id, "revision": enc.ref.revision, "parameters": enc.n_params,
                               "device": enc.device, "real_tokens": enc.stats.real_tokens,
                               "padded_tokens": enc.stats.padded_tokens, "pad_share": round(enc.stats.pad_share, 4)}
    return st.artifact


# --------------------------------------------------------------------------------------------- payload


def write_features(path: Path, feats: np.ndarray, rows: Sequence[FeatureRow], *, run_id: str, attrs: dict) -> None:
    import h5py

    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(rows):
        raise ValueError(f"features {feats.shape} do not match {len(rows)} rows")
    s = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats)
        f.create_dataset("dataset", data=[r.dataset for r in rows], dtype=s)
        f.create_dataset("label_id", data=np.asarray([r.label_id for r in rows], dtype=np.int32))
        f.create_dataset("label", data=[r.label for r in rows], dtype=s)
        f.create_dataset("text_sha256", data=[r.text_sha256 for r in rows], dtype=s)
        f.attrs.update({"schema": SCHEMA, "kind": KIND, "run_id": run_id, "dim": int(feats.shape[1])})
        for k, v in attrs.items():
            f.attrs[k] = v


def _payload_path(src) -> Path:
    return A.payload_path(src, KIND, FILENAME)


def read_features_attrs(src) -> dict:
    """The root attributes of a features.h5 (schema checked)."""
    return _read(src)[2]


def read_features(src) -> tuple[np.ndarray, list[FeatureRow]]:
    """(features float32 (n, dim), rows) of a features.h5: an Artifact, its directory, or the file.

    Raises ArtifactError (exit 3) when the file is unreadable, foreign or inconsistent.
    """
    feats, rows, _ = _read(src)
    return feats, rows


def _read(src) -> tuple[np.ndarray, list[FeatureRow], dict]:
    import h5py

    path = _payload_path(src)
    bad = lambda why: ArtifactError(f"{path} is not a valid features.h5: {why}",  # noqa: E731
                                    hint="rebuild it with `uniseg embed-labels --force`.")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
            schema = str(attrs.get("schema", ""))
            if not schema.startswith("uniseg.label-features/") or schema.split("/", 1)[1].split(".")[0] != "1":
                raise bad(f"schema {schema or '(none)'}, expected {SCHEMA}")
            for name in ("features", "dataset", "label_id", "label", "text_sha256"):
                if name not in f:
                    raise bad(f"no dataset {name!r}")
            feats = np.asarray(f["features"][()], dtype=np.float32)
            cols = [f[n].asstr()[()].tolist() if n != "label_id" else f[n][()].astype(int).tolist()
                    for n in ("dataset", "label_id", "label", "text_sha256")]
    except OSError as e:
        raise bad(f"unreadable HDF5 ({e})")
    n = feats.shape[0] if feats.ndim == 2 else -1
    if n < 0 or any(len(c) != n for c in cols):
        raise bad(f"features {feats.shape} and the row columns {[len(c) for c in cols]} disagree")
    if int(attrs.get("dim", feats.shape[1])) != feats.shape[1]:
        raise bad(f"attribute dim={attrs.get('dim')} but features have {feats.shape[1]} columns")
    if not np.isfinite(feats).all():
        raise bad("features hold NaN or infinite values")
    return feats, [FeatureRow(*r) for r in zip(*cols)], attrs


def features_by_dataset(feats: np.ndarray, rows: Sequence[FeatureRow], names: Sequence[str] | None = None) -> dict:
    """``{dataset: features (n_d, dim)}`` in ``names`` order (default: file order), labels by id."""
    order = list(dict.fromkeys(r.dataset for r in rows))
    names = list(names) if names is not None else order
    missing = [n for n in names if n not in order]
    if missing:
        raise ArtifactError(f"label-features cover [{', '.join(order)}]; missing {', '.join(missing)}",
                         hint="re-run describe-labels and embed-labels with these datasets included.")
    out = {}
    for n in names:
        idx = sorted((i for i, r in enumerate(rows) if r.dataset == n), key=lambda i: rows[i].label_id)
        out[n] = feats[idx]
    return out


def _summary(art: A.Artifact) -> dict:
    enc = art.manifest.get("extra", {}).get("encoder", {})
    attrs = read_features_attrs(art)
    return {"dim": attrs.get("dim"), "model": attrs.get("model"), "pooling": attrs.get("pooling"),
            "pad_share": enc.get("pad_share")}


def extra_inputs(p: Params) -> list[A.InputRef]:
    """The encoder's revision (hub commit, or a fingerprint of a local folder's config and weight files),
    so that replacing the model changes the run id. Unresolvable models are reported by run()."""
    try:
        ref = E.resolve_model(p.model)
    except Exception:  # noqa: BLE001 - run() raises the real, explained error
        return [A.InputRef("model", p.model, "unresolved")]
    rev = ref.revision or "download"
    return [A.InputRef("model", f"{ref.model_id}@{rev}", hashlib.sha256(f"{ref.model_id}@{rev}".encode()).hexdigest())]


SPEC = register(StageSpec("embed-labels", KIND, Params, run, needs=("describe-labels",), datasets="none",
                          summary=_summary, extra_inputs=extra_inputs))
