"""Built-in label spaces of the paper's datasets (package data ``label_spaces.json``).

The JSON is a copy of ``reference/label_spaces.json``: per dataset the ordered class names, the
ignore label, the raw id → train id lookup the public code uses, the known LLM descriptions and the
dataset's role (``train`` for the paper's 7 training sets, ``unseen_test`` for the held-out ones).

    >>> ls = get_label_space("cityscapes")
    >>> ls.num_classes, ls.ignore_index
    (19, 255)
    >>> raw_to_train_table("cityscapes")[7]      # raw labelId 7 (road) -> train id 0
    0
"""
from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from uniseg_cli.data.base import LabelSpace
from uniseg_cli.errors import UsageError

#: Short names people type, mapped to the built-in keys.
ALIASES: dict[str, str] = {
    "mapillary": "mapillary_vistas_v1.2",
    "mapillary_vistas": "mapillary_vistas_v1.2",
    "vistas": "mapillary_vistas_v1.2",
    "sun_rgbd": "sunrgbd",
    "bdd": "bdd100k",
    "ade": "ade20k",
    "coco": "coco_panoptic_133",
    "coco_panoptic": "coco_panoptic_133",
    "wilddash": "wilddash2",
    "scannet": "scannet20",
    "voc": "pascal_voc",
    "context": "pascal_context",
}


@functools.lru_cache(maxsize=1)
def _raw() -> dict:
    text = resources.files("uniseg_cli.data").joinpath("label_spaces.json").read_text(encoding="utf-8")
    return json.loads(text)


def builtin_names() -> list[str]:
    """The built-in dataset keys, in the order of the reference file (training sets first)."""
    return list(_raw())


def resolve_name(name: str) -> str | None:
    """The built-in key for ``name`` (exact key, alias, or a registered detectron2 name), else None."""
    data = _raw()
    if name in data:
        return name
    low = name.strip().lower().replace("-", "_")
    if low in data:
        return low
    if low in ALIASES:
        return ALIASES[low]
    for key, entry in data.items():
        if name in entry.get("registered_names", ()):
            return key
    return None


def is_builtin(name: str) -> bool:
    return resolve_name(name) is not None


def _entry(name: str) -> tuple[str, dict]:
    key = resolve_name(name)
    if key is None:
        raise UsageError(
            f"unknown built-in label space {name!r}",
            hint=f"built-in label spaces: {', '.join(builtin_names())}; a generic dataset brings its own labels.yaml.",
        )
    return key, _raw()[key]


def get_label_space(name: str) -> LabelSpace:
    """The built-in label space ``name`` (a key of :func:`builtin_names` or an alias).

    Descriptions are attached when the reference file has one per class, else None.
    Raises UsageError (exit 2) for an unknown name.
    """
    key, e = _entry(name)
    desc = e.get("descriptions") or None
    if desc is not None and len(desc) != len(e["classes"]):
        desc = None
    return LabelSpace(
        name=key,
        classes=tuple(e["classes"]),
        ignore_index=int(e["ignore_index"]),
        descriptions=tuple(desc) if desc else None,
    )


def role(name: str) -> str:
    """``train``, ``unseen_test`` or one of the ``registered_*`` roles of the reference file."""
    return str(_entry(name)[1].get("role", "train"))


def info(name: str) -> dict:
    """The full reference entry (notes, register file, raw id names, ...), as a copy."""
    return json.loads(json.dumps(_entry(name)[1]))


def raw_to_train_dict(name: str) -> dict[int, int]:
    """Raw id → train id as the public code defines it (negative raw ids, e.g. -1, included)."""
    return {int(k): int(v) for k, v in _entry(name)[1]["raw_to_train_id"].items()}


def raw_to_train_table(name: str, size: int | None = None, unknown: int | None = None) -> np.ndarray:
    """A lookup table ``table[raw] -> train id`` (int64).

    Args:
        name: built-in label space name.
        size: table length; default 256 when every raw id fits in uint8, else 65536.
        unknown: value for raw ids the reference does not list (default: the ignore index). Pass
            e.g. -2 to detect ids outside the raw label space.

    Returns:
        int64 array of length ``size``; ignored raw ids map to the label space's ignore index.
    """
    key, e = _entry(name)
    mapping = raw_to_train_dict(key)
    ignore = int(e["ignore_index"])
    top = max(mapping)
    if size is None:
        size = 256 if top < 256 else 65536
    if top >= size:
        raise ValueError(f"raw id {top} of {key} does not fit a table of size {size}")
    table = np.full(size, ignore if unknown is None else unknown, dtype=np.int64)
    for raw, train in mapping.items():
        if raw >= 0:  # -1 (license plate in Cityscapes) never occurs in a PNG
            table[raw] = train
    return table
