"""The generic folder format (DESIGN §4), which every user can produce:

    <root>/labels.yaml                      name, ignore_index, classes (ordered), optional descriptions
    <root>/images/<split>/<stem>.(jpg|png)
    <root>/annotations/<split>/<stem>.png   single-channel uint8/uint16 train ids; ignore_index = unlabeled

Labels are already train ids (no lookup table). Splits are the folder names under ``images/`` and
``annotations/``. ``labels.yaml`` faults are reported by :meth:`GenericDataset.check` together with
every file fault; :attr:`GenericDataset.label_space` raises DataError on them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from uniseg_cli.data import register_format
from uniseg_cli.data.base import DatasetSpec, LabelSpace, Problem, Sample
from uniseg_cli.data.check import (
    IMAGE_EXTS,
    LABEL_EXTS,
    check_pairs,
    id_problem,
    list_files,
    out_of_space,
    pair_files,
    problems_error,
    read_image,
    read_label,
    size_problem,
)

LABELS_FILE = "labels.yaml"

LAYOUT = """\
<root>/labels.yaml: name: <dataset>; ignore_index: 255; classes: [ordered class names];
    optional descriptions: [one per class]
<root>/images/<split>/<stem>.jpg|.png: RGB images
<root>/annotations/<split>/<stem>.png: single-channel uint8/uint16 class ids (train ids);
    ignore_index marks unlabeled pixels
Splits are folder names (train, val, ...)."""


def parse_labels_yaml(path: Path, dataset: str) -> tuple[LabelSpace | None, dict, list[Problem]]:
    """Read and validate a labels.yaml. Returns (label space or None, the raw mapping, problems)."""
    p = str(path)
    if not path.is_file():
        return None, {}, [Problem(dataset, p, "missing-labels-yaml", "labels.yaml not found (it names the classes)")]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        return None, {}, [Problem(dataset, p, "bad-yaml", f"not valid YAML{where}: {getattr(e, 'problem', None) or e}")]
    if not isinstance(doc, dict):
        return None, {}, [Problem(dataset, p, "bad-yaml",
                                  f"expected a mapping with name, ignore_index, classes; got {type(doc).__name__}")]
    probs: list[Problem] = []
    classes = doc.get("classes")
    if classes is None:
        probs.append(Problem(dataset, p, "missing-field",
                             "field 'classes' is missing (the ordered list of class names)"))
        classes = []
    elif not isinstance(classes, list) or not classes:
        probs.append(Problem(dataset, p, "bad-field", "field 'classes' must be a non-empty list of class names"))
        classes = []
    else:
        for i, c in enumerate(classes):
            if not isinstance(c, str) or not c.strip():
                probs.append(Problem(dataset, p, "bad-field", f"classes[{i}] must be a non-empty string, got {c!r}"))
        seen: dict[str, int] = {}
        for i, c in enumerate(classes):
            if isinstance(c, str):
                if c in seen:
                    probs.append(Problem(dataset, p, "duplicate-class",
                                         f"class name {c!r} appears twice (ids {seen[c]} and {i})"))
                else:
                    seen[c] = i
    ignore = doc.get("ignore_index")
    if "ignore_index" not in doc:
        probs.append(Problem(dataset, p, "missing-ignore-index",
                             "field 'ignore_index' is missing (the label value of unlabeled pixels, e.g. 255)"))
    elif isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 65535:
        probs.append(Problem(dataset, p, "bad-field", f"ignore_index must be an integer in 0..65535, got {ignore!r}"))
    elif classes and ignore < len(classes):
        probs.append(Problem(dataset, p, "bad-field",
                             f"ignore_index {ignore} is also the id of class {classes[ignore]!r}; "
                             f"use a value >= {len(classes)}"))
    desc = doc.get("descriptions")
    if desc is not None:
        if not isinstance(desc, list) or not all(isinstance(d, str) for d in desc):
            probs.append(Problem(dataset, p, "bad-field", "descriptions must be a list of strings (one per class)"))
        elif classes and len(desc) != len(classes):
            probs.append(Problem(dataset, p, "bad-field",
                                 f"descriptions has {len(desc)} entries but classes has {len(classes)}"))
    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        probs.append(Problem(dataset, p, "bad-field", f"name must be a string, got {name!r}"))
    if probs:
        return None, doc, probs
    ls = LabelSpace(name=dataset, classes=tuple(classes), ignore_index=int(ignore),
                    descriptions=tuple(desc) if desc else None)
    return ls, doc, []


def write_labels_yaml(root: Path, name: str, classes: Sequence[str], ignore_index: int = 255,
                      descriptions: Sequence[str] | None = None) -> Path:
    """Write ``<root>/labels.yaml`` (deterministic bytes)."""
    doc: dict = {"name": name, "ignore_index": int(ignore_index), "classes": list(classes)}
    if descriptions is not None:
        doc["descriptions"] = list(descriptions)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LABELS_FILE
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
    return path


class GenericDataset:
    """Adapter for the generic folder format. ``spec.name`` names the label space."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.root = Path(spec.root).expanduser()
        self._ls: LabelSpace | None = None
        self._yaml_problems: list[Problem] | None = None
        self._pairs: dict[str, tuple[list[Sample], list[Problem]]] = {}

    # ---------------------------------------------------------------- label space
    def _parse(self) -> None:
        if self._yaml_problems is None:
            if not self.root.is_dir():
                self._yaml_problems = [Problem(self.spec.name, str(self.root), "missing-root",
                                               "dataset folder does not exist")]
                return
            self._ls, doc, self._yaml_problems = parse_labels_yaml(self.root / LABELS_FILE, self.spec.name)
            self.yaml_name = doc.get("name") if isinstance(doc, dict) else None

    @property
    def label_space(self) -> LabelSpace:
        self._parse()
        if self._ls is None:
            raise problems_error(self._yaml_problems or [])
        return self._ls

    def yaml_problems(self) -> list[Problem]:
        self._parse()
        return list(self._yaml_problems or [])

    # ---------------------------------------------------------------- files
    def split_dir(self, split: str) -> Path:
        return self.root / "images" / split

    def splits(self) -> list[str]:
        names: set[str] = set()
        for sub in ("images", "annotations"):
            d = self.root / sub
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(names)

    def _pair(self, split: str) -> tuple[list[Sample], list[Problem]]:
        if split not in self._pairs:
            img_dir, lab_dir = self.root / "images" / split, self.root / "annotations" / split
            images, dups = list_files(img_dir, IMAGE_EXTS)
            labels, _ = list_files(lab_dir, LABEL_EXTS)
            self._pairs[split] = pair_files(self.spec.name, images, labels, dups, label_dir=lab_dir, image_dir=img_dir)
        return self._pairs[split]

    def samples(self, split: str) -> list[Sample]:
        return list(self._pair(split)[0])

    # ---------------------------------------------------------------- reading
    def inspect(self, sample: Sample, deep: bool = True) -> list[Problem]:
        """Every problem of one sample (decoding pixels only when ``deep``)."""
        return self._read(sample, deep)[2]

    def _read(self, sample: Sample, deep: bool) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
        name = self.spec.name
        self._parse()
        if sample.label_path is None:
            lab_dir = Path(sample.image_path).parent.parent.parent / "annotations" / Path(sample.image_path).parent.name
            want = lab_dir / f"{sample.stem}.png"
            return None, None, [Problem(name, str(sample.image_path), "missing-label",
                                        f"image has no label file (expected {want})")]
        img, isize, probs = read_image(name, sample.image_path, header_only=not deep)
        lab, lsize, lprobs = read_label(name, sample.label_path, header_only=not deep)
        probs = probs + lprobs
        probs += size_problem(name, sample.label_path, isize, lsize, sample.image_path)
        if lab is not None:
            ls = self._ls
            if ls is not None:
                probs += id_problem(name, sample.label_path, out_of_space(lab, ls.num_classes, ls.ignore_index),
                                    ls.num_classes, ls.ignore_index)
        return img, lab, probs

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (H, W, 3), label int64 (H, W) in train ids); DataError naming the file on any fault."""
        _ = self.label_space  # labels.yaml problems first
        img, lab, probs = self._read(sample, deep=True)
        if probs:
            raise problems_error(probs)
        return img, lab

    def load_image(self, sample: Sample) -> np.ndarray:
        img, _, probs = read_image(self.spec.name, sample.image_path)
        if probs:
            raise problems_error(probs)
        return img

    # ---------------------------------------------------------------- checking
    def check(self, splits: Sequence[str] | None = None, deep: bool = True) -> list[Problem]:
        """Every problem at once: labels.yaml, pairing, decoding, sizes, ids (ids only when ``deep``)."""
        probs = self.yaml_problems()
        if any(p.code == "missing-root" for p in probs):
            return probs
        present = self.splits()
        if splits is None:
            splits = present
            if not present:
                probs.append(Problem(self.spec.name, str(self.root / "images"), "no-splits",
                                     "no split folders found under images/ (expected images/<split>/)"))
        else:
            for s in splits:
                if s not in present:
                    probs.append(Problem(self.spec.name, str(self.split_dir(s)), "missing-split",
                                         f"split {s!r} does not exist (found: {', '.join(present) or 'none'})"))
            splits = [s for s in splits if s in present]
        for s in splits:
            probs.extend(self._pair(s)[1])
        probs.extend(check_pairs(self, splits, deep=deep))
        # one missing-label per image is enough (pairing and inspect both see it)
        seen, unique = set(), []
        for p in probs:
            key = (p.path, p.code)
            if key not in seen:
                seen.add(key)
                unique.append(p)
        return unique


register_format("generic", GenericDataset, layout=LAYOUT)
