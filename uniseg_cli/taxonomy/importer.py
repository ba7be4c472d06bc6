"""Import a hand-made or published taxonomy from CSV/TSV into the ``uniseg.taxonomy/1`` schema.

One row per edge: ``dataset, label, unified`` (a header line with these names is optional; the
delimiter — comma, tab or semicolon — is detected). A label that belongs to several unified nodes
(a coarse label) has several rows. Nodes get ids in order of first appearance.

Label spaces come from the given ones (``label_spaces`` / dataset specs), else from the built-in
label spaces by dataset name. Labels match by exact name, then case- and space-insensitively.
Every label of every listed dataset must appear (``unlisted="own-node"`` gives the missing ones a
node of their own instead).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from uniseg_cli.data.base import DatasetSpec, LabelSpace
from uniseg_cli.errors import ArtifactError, UsageError
from uniseg_cli.taxonomy.schema import Taxonomy

HEADER = ("dataset", "label", "unified")


def _norm(s: str) -> str:
    return " ".join(s.strip().lower().split())


def read_rows(path: Path) -> list[tuple[int, str, str, str]]:
    """(line number, dataset, label, unified name) of each data row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: cannot read ({e})", hint="pass a UTF-8 CSV/TSV file.") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    delim = "\t" if "\t" in first else (";" if first.count(";") >= 2 and "," not in first else ",")
    rows = []
    for lineno, rec in enumerate(csv.reader(lines, delimiter=delim), start=1):
        if not rec or not any(c.strip() for c in rec) or rec[0].lstrip().startswith("#"):
            continue
        if len(rec) < 3:
            raise ArtifactError(f"{path}:{lineno}: expected 3 columns (dataset, label, unified), found {len(rec)}",
                                hint="one row per edge: dataset,label,unified name.")
        ds, lab, uni = rec[0].strip(), rec[1], rec[2].strip()
        if not rows and (_norm(ds), _norm(lab)) == ("dataset", "label"):
            continue  # header
        if not ds or not lab.strip() or not uni:
            raise ArtifactError(f"{path}:{lineno}: empty dataset, label or unified name",
                                hint="fill all three columns.")
        rows.append((lineno, ds, lab, uni))
    if not rows:
        raise ArtifactError(f"{path}: no rows", hint="one row per edge: dataset,label,unified name.")
    return rows


def import_csv(path: str | Path, label_spaces: Mapping[str, LabelSpace] | None = None,
               specs: Sequence[DatasetSpec] = (), unlisted: str = "error") -> Taxonomy:
    """Build a :class:`Taxonomy` from a CSV/TSV edge list (see module docstring)."""
    from uniseg_cli.data import open_dataset
    from uniseg_cli.data.labelspaces import get_label_space, is_builtin

    path = Path(path)
    if unlisted not in ("error", "own-node"):
        raise UsageError(f"unlisted must be 'error' or 'own-node', got {unlisted!r}")
    rows = read_rows(path)
    spaces: dict[str, LabelSpace] = dict(label_spaces or {})
    for spec in specs:
        spaces.setdefault(spec.name, open_dataset(spec).label_space)
    order: list[str] = []
    for _, ds, _, _ in rows:
        if ds not in order:
            order.append(ds)
    missing = [d for d in order if d not in spaces and not is_builtin(d)]
    if missing:
        raise UsageError(f"{path}: no label space for dataset{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                         hint="pass --dataset NAME=FORMAT:ROOT (or NAME=ROOT for a generic dataset) for each, "
                              "or use a built-in dataset name.")
    for d in order:
        if d not in spaces:
            spaces[d] = get_label_space(d)
    node_ids: dict[str, int] = {}
    edges: dict[str, set[tuple[int, int]]] = {d: set() for d in order}
    errors = []
    for lineno, ds, lab, uni in rows:
        classes = spaces[ds].classes
        if lab in classes:
            c = classes.index(lab)
        else:
            hits = [i for i, name in enumerate(classes) if _norm(name) == _norm(lab)]
            if len(hits) != 1:
                errors.append(f"line {lineno}: {ds!r} has no class {lab!r}")
                continue
            c = hits[0]
        u = node_ids.setdefault(uni, len(node_ids))
        edges[ds].add((c, u))
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ArtifactError(f"{path}: " + "; ".join(errors[:5]) + more,
                            hint="use the class names of the dataset's label space (`uniseg datasets` or labels.yaml).")
    names = {u: n for n, u in node_ids.items()}
    for d in order:
        covered = {c for c, _ in edges[d]}
        absent = [c for c in range(len(spaces[d].classes)) if c not in covered]
        if absent and unlisted == "error":
            shown = ", ".join(repr(spaces[d].classes[c]) for c in absent[:8])
            raise ArtifactError(f"{path}: {len(absent)} label(s) of {d!r} have no row: {shown}"
                                f"{' ...' if len(absent) > 8 else ''}",
                                hint="add a row for each (or pass --unlisted own-node to give each its own node).")
        for c in absent:
            u = len(names)
            names[u] = spaces[d].classes[c]
            edges[d].add((c, u))
    n = len(names)
    mappings = {}
    for d in order:
        m = np.zeros((len(spaces[d].classes), n), bool)
        for c, u in edges[d]:
            m[c, u] = True
        mappings[d] = m
    tax = Taxonomy.from_mappings(mappings, datasets={d: list(spaces[d].classes) for d in order}, names=names,
                                 sources={"imported_from": path.name}, kind="imported-taxonomy")
    probs = tax.problems()
    if probs:
        more = f" (and {len(probs) - 5} more)" if len(probs) > 5 else ""
        raise ArtifactError(f"{path}: " + "; ".join(probs[:5]) + more,
                            hint="a unified node may hold at most one label per dataset; split it into two names.")
    return tax
