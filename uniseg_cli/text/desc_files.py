"""Reading label descriptions from files (the ``file`` provider of describe-labels).

Accepted layouts (chosen by the file's suffix):

- JSON, per dataset: ``{dataset: {"classes": [...], "descriptions": [...]}}`` (the layout of the
  published ``reference/label_spaces.json``) or ``{dataset: {label: description}}``;
- JSON, flat: ``[{"dataset": ..., "label": ..., "description": ...}, ...]``;
- CSV (``.csv``) or Parquet (``.parquet``): columns ``dataset``, ``label``, ``description``
  (``label_id`` and other columns are ignored), e.g. a ``descriptions.parquet`` of an earlier run.

Datasets and labels are matched by name: exactly, else ignoring case and ``_``/``-``/space.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from uniseg_cli.errors import ArtifactError, UsageError


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(s)).lower()


class DescriptionTable:
    """``(dataset, label) -> description`` read from a file, with forgiving name matching."""

    def __init__(self, path: Path, entries: dict[str, dict[str, str]]):
        self.path = Path(path)
        self.entries = entries  # dataset -> label -> description

    def _dataset(self, name: str) -> dict[str, str] | None:
        if name in self.entries:
            return self.entries[name]
        hits = [k for k in self.entries if _norm(k) == _norm(name)]
        return self.entries[hits[0]] if len(hits) == 1 else None

    def lookup(self, dataset: str, label: str) -> str | None:
        d = self._dataset(dataset)
        if d is None:
            return None
        if label in d:
            return d[label]
        hits = [k for k in d if _norm(k) == _norm(label)]
        return d[hits[0]] if len(hits) == 1 else None

    def require(self, wanted: Sequence[tuple[str, str]]) -> list[str]:
        """Descriptions for ``[(dataset, label), ...]``; ArtifactError naming every gap."""
        out, missing = [], []
        for ds, lab in wanted:
            text = self.lookup(ds, lab)
            if text is None or not str(text).strip():
                missing.append(f"{ds}/{lab}")
                out.append("")
            else:
                out.append(str(text).strip())
        if missing:
            absent_ds = sorted({m.split("/", 1)[0] for m in missing if self._dataset(m.split("/", 1)[0]) is None})
            shown = ", ".join(missing[:12]) + (f", … ({len(missing)} in all)" if len(missing) > 12 else "")
            msg = f"{self.path} has no description for {len(missing)} of {len(wanted)} labels: {shown}"
            if absent_ds:
                msg += f" (datasets not in the file: {', '.join(absent_ds)}; it has: {', '.join(sorted(self.entries))})"
            raise ArtifactError(
                msg,
                hint="add the missing rows (dataset, label, description) to the file, "
                "or use --provider template / openai for these datasets.",
            )
        return out


def _add(entries: dict, ds, label, text, where: str) -> None:
    if ds is None or label is None or text is None:
        raise ArtifactError(f"{where}: needs dataset, label and description, got {ds!r}, {label!r}, {text!r}")
    entries.setdefault(str(ds), {})[str(label)] = str(text)


def _from_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not readable JSON: {e}", hint="fix the file or export it again.")
    entries: dict[str, dict[str, str]] = {}
    if isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise ArtifactError(f"{path}[{i}]: expected an object with dataset, label, description")
            _add(entries, row.get("dataset"), row.get("label"), row.get("description"), f"{path}[{i}]")
        return entries
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected an object or a list at the top level, got {type(data).__name__}")
    for ds, body in data.items():
        if isinstance(body, dict) and "classes" in body:
            classes, descs = body.get("classes") or [], body.get("descriptions") or []
            if descs and len(descs) != len(classes):
                raise ArtifactError(
                    f"{path}: {ds} has {len(classes)} classes but {len(descs)} descriptions",
                    hint="give one description per class, in class order.",
                )
            for c, d in zip(classes, descs):
                if d:
                    _add(entries, ds, c, d, f"{path}: {ds}")
            entries.setdefault(str(ds), {})
        elif isinstance(body, dict):
            for c, d in body.items():
                _add(entries, ds, c, d, f"{path}: {ds}.{c}")
        else:
            raise ArtifactError(
                f"{path}: {ds} should map to {{classes, descriptions}} or {{label: description}}, "
                f"got {type(body).__name__}"
            )
    return entries


def _from_rows(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> dict:
    need = {"dataset", "label", "description"}
    if not need <= set(columns):
        raise ArtifactError(
            f"{path} lacks the column(s) {', '.join(sorted(need - set(columns)))} (has: {', '.join(columns)})",
            hint="the file needs columns dataset, label, description.",
        )
    entries: dict[str, dict[str, str]] = {}
    for i, r in enumerate(rows):
        _add(entries, r["dataset"], r["label"], r["description"], f"{path} row {i + 1}")
    return entries


def read_description_file(path: str | Path) -> DescriptionTable:
    """Read a JSON, CSV or Parquet description file (see the module docstring for the layouts)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ArtifactError(f"description file {p} does not exist", hint="check --descriptions-file.")
    suf = p.suffix.lower()
    if suf == ".json":
        entries = _from_json(p)
    elif suf in (".csv", ".tsv"):
        try:
            with open(p, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t" if suf == ".tsv" else ",")
                rows = list(reader)
                entries = _from_rows(p, rows, reader.fieldnames or [])
        except (UnicodeDecodeError, csv.Error) as e:
            raise ArtifactError(f"{p} is not readable CSV: {e}")
    elif suf in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise ArtifactError(f"{p} is not a readable Parquet file: {e}")
        entries = _from_rows(p, table.to_pylist(), table.column_names)
    else:
        raise UsageError(
            f"description file {p}: unknown format {suf or '(no suffix)'}",
            hint="use a .json, .csv or .parquet file.",
        )
    return DescriptionTable(p, entries)
