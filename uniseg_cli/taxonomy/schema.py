"""The shareable taxonomy file, schema ``uniseg.taxonomy/1`` (DESIGN §3).

One Parquet row per edge of the boolean mapping (unified node ``unified_id`` ↔ label ``label_id``
of ``dataset``), rows sorted by (unified_id, dataset, label_id). The key-value metadata ``uniseg``
holds JSON: schema, kind, run_id, datasets (name → ordered class names), num_nodes, sources.

Invariants (checked on write and read): every label of every dataset has at least one node; a node
has at most one label per dataset; ids lie inside the label spaces and names match them.

In memory a :class:`Taxonomy` keeps one bool matrix (n_d, N) per dataset, where the columns are the
model's output channels; inactive channels (no edge) are simply empty columns and are not written.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping

import numpy as np

from uniseg_cli.errors import ArtifactError

SCHEMA = "uniseg.taxonomy/1"
META_KEY = b"uniseg"
COLUMNS = ("unified_id", "unified_name", "dataset", "label_id", "label", "weight", "pixel_share")
_KIND_OF = {"unified_id": "int", "label_id": "int", "unified_name": "str", "dataset": "str", "label": "str",
            "weight": "float", "pixel_share": "float"}


@dataclasses.dataclass
class Taxonomy:
    """Boolean label mappings of several datasets onto shared unified nodes.

    Attributes:
        datasets: dataset name → ordered class names (the label space), in pipeline order.
        mappings: dataset name → bool (n_d, N); ``[c, u]`` is True when node u covers label c.
        names: node id → readable name (only for active nodes).
        weights: dataset → float32 (n_d, N) soft adjacency at export (1.0 for hand-made files).
        pixel_share: dataset → float32 (n_d, N) with NaN where unknown, or None.
        sources: free-form provenance (upstream run ids, file names).
        kind, run_id: written into the file metadata.
    """

    datasets: dict[str, tuple[str, ...]]
    mappings: dict[str, np.ndarray]
    names: dict[int, str]
    weights: dict[str, np.ndarray]
    pixel_share: dict[str, np.ndarray] | None = None
    sources: dict = dataclasses.field(default_factory=dict)
    kind: str = "taxonomy"
    run_id: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mappings(cls, mappings: Mapping[str, np.ndarray], datasets: Mapping[str, list[str] | tuple[str, ...]],
                      names: Mapping[int, str] | None = None, weights: Mapping[str, np.ndarray] | None = None,
                      pixel_share: Mapping[str, np.ndarray] | None = None, sources: Mapping | None = None,
                      kind: str = "taxonomy", run_id: str | None = None) -> "Taxonomy":
        """Build from bool (n_d, N) matrices, one per dataset (same N for all).

        Default node names join the member labels (``"road / Road"``); default weights are 1.0 on edges.
        """
        order = list(datasets)
        if set(mappings) != set(order):
            raise ValueError(f"mappings cover {sorted(mappings)} but datasets lists {order}")
        ns = {np.asarray(mappings[d]).shape[1] for d in order}
        if len(ns) != 1:
            raise ValueError(f"mappings disagree on the number of nodes: {sorted(ns)}")
        n_nodes = ns.pop()
        maps, ws, ps = {}, {}, {} if pixel_share is not None else None
        for d in order:
            m = np.asarray(mappings[d]).astype(bool)
            if m.shape != (len(datasets[d]), n_nodes):
                raise ValueError(f"mapping of {d} has shape {m.shape}, expected ({len(datasets[d])}, {n_nodes})")
            maps[d] = m
            given = weights is not None and d in weights
            w = np.asarray(weights[d], dtype=np.float32) if given else m.astype(np.float32)
            ws[d] = np.where(m, w, 0.0).astype(np.float32)
            if ps is not None:
                p = pixel_share.get(d)
                ps[d] = (np.full(m.shape, np.nan, np.float32) if p is None else np.asarray(p, np.float32))
        tax = cls(datasets={d: tuple(datasets[d]) for d in order}, mappings=maps, names={}, weights=ws,
                  pixel_share=ps, sources=dict(sources or {}), kind=kind, run_id=run_id)
        given = dict(names or {})
        tax.names = {u: str(given[u]) if u in given else tax.default_name(u) for u in tax.active_nodes()}
        return tax

    # ------------------------------------------------------------------ queries
    @property
    def num_channels(self) -> int:
        """N: the number of columns of every mapping (active or not)."""
        return next(iter(self.mappings.values())).shape[1] if self.mappings else 0

    def active_nodes(self) -> list[int]:
        """Node ids with at least one edge."""
        if not self.mappings:
            return []
        any_edge = np.zeros(self.num_channels, dtype=bool)
        for m in self.mappings.values():
            any_edge |= m.any(axis=0)
        return [int(u) for u in np.flatnonzero(any_edge)]

    @property
    def num_nodes(self) -> int:
        return len(self.active_nodes())

    def mapping(self, dataset: str) -> np.ndarray:
        """bool (n_d, N) mapping of ``dataset``."""
        if dataset not in self.mappings:
            raise KeyError(f"dataset {dataset!r} is not in this taxonomy ({', '.join(self.datasets)})")
        return self.mappings[dataset]

    def nodes_of(self, dataset: str, label_id: int) -> list[int]:
        return [int(u) for u in np.flatnonzero(self.mappings[dataset][label_id])]

    def members(self, node: int) -> list[tuple[str, int, str]]:
        """(dataset, label_id, label) of every label mapped to ``node``, datasets in order."""
        out = []
        for d, m in self.mappings.items():
            for c in np.flatnonzero(m[:, node]):
                out.append((d, int(c), self.datasets[d][c]))
        return out

    def default_name(self, node: int) -> str:
        seen, parts = set(), []
        for _, _, label in self.members(node):
            key = label.strip().lower()
            if key not in seen:
                seen.add(key)
                parts.append(label.strip())
        return " / ".join(parts) if parts else f"node {node}"

    def problems(self) -> list[str]:
        """Broken invariants, each naming the dataset/label/node."""
        probs = []
        for d, m in self.mappings.items():
            for c in np.flatnonzero(~m.any(axis=1)):
                probs.append(f"label {self.datasets[d][c]!r} (id {c}) of dataset {d!r} has no unified node")
            for u in np.flatnonzero(m.sum(axis=0) > 1):
                labs = ", ".join(repr(self.datasets[d][c]) for c in np.flatnonzero(m[:, u]))
                probs.append(f"unified node {u} has several labels of dataset {d!r}: {labs}")
        return probs

    def restrict(self, datasets: list[str]) -> "Taxonomy":
        """The same taxonomy on a subset of its datasets (node ids kept)."""
        sub = {d: self.datasets[d] for d in datasets}
        t = Taxonomy(datasets=sub, mappings={d: self.mappings[d] for d in datasets}, names={},
                     weights={d: self.weights[d] for d in datasets},
                     pixel_share=None if self.pixel_share is None else {d: self.pixel_share[d] for d in datasets},
                     sources=dict(self.sources), kind=self.kind, run_id=self.run_id)
        t.names = {u: self.names.get(u, t.default_name(u)) for u in t.active_nodes()}
        return t


def validate(tax: Taxonomy, where: str = "taxonomy") -> None:
    """Raise ArtifactError (exit 3) listing every broken invariant."""
    probs = tax.problems()
    if probs:
        more = f" (and {len(probs) - 5} more)" if len(probs) > 5 else ""
        raise ArtifactError(f"{where}: " + "; ".join(probs[:5]) + more,
                            hint="every label needs at least one node and a node at most one label per dataset; "
                                 "fix the mapping (or the CSV you imported) and write it again.")


# ---------------------------------------------------------------------------------------- writing


def write_taxonomy(tax: Taxonomy, path: str | Path, kind: str | None = None, run_id: str | None = None) -> Path:
    """Write ``tax`` as ``uniseg.taxonomy/1`` Parquet (rows sorted by unified_id, dataset, label_id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    validate(tax, f"taxonomy for {path}")
    rows = []
    for u in tax.active_nodes():
        for d in sorted(tax.datasets):
            for c in np.flatnonzero(tax.mappings[d][:, u]):
                ps = None if tax.pixel_share is None else float(tax.pixel_share[d][c, u])
                rows.append((u, tax.names.get(u, tax.default_name(u)), d, int(c), tax.datasets[d][c],
                             float(tax.weights[d][c, u]), None if ps is None or np.isnan(ps) else ps))
    cols = list(zip(*rows)) if rows else [[] for _ in COLUMNS]
    schema = pa.schema([("unified_id", pa.int32()), ("unified_name", pa.string()), ("dataset", pa.string()),
                        ("label_id", pa.int32()), ("label", pa.string()), ("weight", pa.float32()),
                        ("pixel_share", pa.float32())])
    meta = {
        "schema": SCHEMA,
        "kind": kind or tax.kind,
        "run_id": run_id if run_id is not None else tax.run_id,
        "datasets": {d: list(c) for d, c in tax.datasets.items()},
        "num_nodes": tax.num_nodes,
        "num_channels": tax.num_channels,
        "sources": tax.sources,
    }
    table = pa.table({n: pa.array(list(v), type=schema.field(n).type) for n, v in zip(COLUMNS, cols)}, schema=schema)
    # not sort_keys: the order of "datasets" is the pipeline order
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


# ---------------------------------------------------------------------------------------- reading


def _bad(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what}",
                         hint="pass a uniseg.taxonomy/1 file (written by export-taxonomy, estimate-nodes or synth); "
                              "convert a CSV with `uniseg taxonomy import`.")


def read_taxonomy(path: str | Path) -> Taxonomy:
    """Read and validate a taxonomy file; ArtifactError (exit 3) naming the fault otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise _bad(path, "file not found")
    try:
        pf = pq.ParquetFile(path)
        table = pf.read()
    except (pa.ArrowException, OSError) as e:
        raise _bad(path, f"not a readable Parquet file ({e})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise _bad(path, "no 'uniseg' metadata: not a uniseg.taxonomy file")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise _bad(path, "the 'uniseg' metadata is not JSON") from None
    schema = str(meta.get("schema", ""))
    if not schema.startswith("uniseg.taxonomy/"):
        raise _bad(path, f"metadata schema is {schema!r}, expected {SCHEMA!r}")
    if schema.split("/")[-1] != "1":
        raise _bad(path, f"unsupported schema version {schema!r} (this uniseg reads {SCHEMA})")
    datasets = meta.get("datasets")
    if not isinstance(datasets, dict) or not all(isinstance(v, list) for v in datasets.values()):
        raise _bad(path, "metadata 'datasets' must map each dataset name to its ordered class names")
    for col in COLUMNS:
        if col not in table.column_names:
            raise _bad(path, f"missing column {col!r}")
        t = table.schema.field(col).type
        ok = {"int": pa.types.is_integer, "str": lambda x: pa.types.is_string(x) or pa.types.is_large_string(x),
              "float": pa.types.is_floating}[_KIND_OF[col]](t)
        if not ok:
            raise _bad(path, f"column {col!r} has type {t}, expected {_KIND_OF[col]}")
        if col != "pixel_share" and table.column(col).null_count:
            raise _bad(path, f"column {col!r} has {table.column(col).null_count} null values")
    data = {c: table.column(c).to_pylist() for c in COLUMNS}
    n_rows = table.num_rows
    n_ch = max(data["unified_id"], default=-1) + 1
    if n_rows and min(data["unified_id"]) < 0:
        raise _bad(path, "column 'unified_id' has negative ids")
    n_ch = max(n_ch, int(meta.get("num_channels") or 0))
    maps = {d: np.zeros((len(c), n_ch), bool) for d, c in datasets.items()}
    ws = {d: np.zeros((len(c), n_ch), np.float32) for d, c in datasets.items()}
    ps = {d: np.full((len(c), n_ch), np.nan, np.float32) for d, c in datasets.items()}
    names: dict[int, str] = {}
    for i in range(n_rows):
        u, d, c, lab = data["unified_id"][i], data["dataset"][i], data["label_id"][i], data["label"][i]
        if d not in datasets:
            raise _bad(path, f"row {i}: dataset {d!r} is not listed in the metadata 'datasets'")
        classes = datasets[d]
        if not 0 <= c < len(classes):
            raise _bad(path, f"row {i}: label_id {c} is outside the label space of {d!r} (0..{len(classes) - 1})")
        if classes[c] != lab:
            raise _bad(path, f"row {i}: label {lab!r} does not match class {c} of {d!r} ({classes[c]!r})")
        if maps[d][c, u]:
            raise _bad(path, f"row {i}: edge ({u}, {d!r}, {lab!r}) appears twice")
        maps[d][c, u] = True
        ws[d][c, u] = data["weight"][i]
        if data["pixel_share"][i] is not None:
            ps[d][c, u] = data["pixel_share"][i]
        names.setdefault(u, data["unified_name"][i])
    tax = Taxonomy(datasets={d: tuple(c) for d, c in datasets.items()}, mappings=maps, names=names, weights=ws,
                   pixel_share=ps if any(data["pixel_share"][i] is not None for i in range(n_rows)) else None,
                   sources=meta.get("sources") or {}, kind=str(meta.get("kind") or "taxonomy"),
                   run_id=meta.get("run_id"))
    validate(tax, str(path))
    return tax
