"""Datasets: label spaces, one adapter per on-disk format, transforms, the multi-dataset loader.

``open_dataset(spec)`` picks the adapter for ``spec.format`` from :data:`FORMATS`. Each format
module registers itself with :func:`register_format` when imported; the built-in ones are listed
in :data:`FORMAT_MODULES` and imported on first use.
"""
from __future__ import annotations

import importlib
from typing import Callable

from uniseg_cli.data.base import DatasetAdapter, DatasetSpec, LabelSpace, Problem, Sample  # noqa: F401
from uniseg_cli.errors import UsageError

#: format name -> factory(spec) -> DatasetAdapter
FORMATS: dict[str, Callable[[DatasetSpec], DatasetAdapter]] = {}
#: format name -> one-paragraph description of the expected layout (for `uniseg datasets`)
FORMAT_LAYOUTS: dict[str, str] = {}

#: Built-in format name -> module that registers it.
FORMAT_MODULES: dict[str, str] = {
    "generic": "uniseg_cli.data.generic",
    # issue 9: the paper's datasets in their publishers' layouts
    "cityscapes": "uniseg_cli.data.formats.cityscapes",
    "mapillary": "uniseg_cli.data.formats.mapillary",
    "sunrgbd": "uniseg_cli.data.formats.sunrgbd",
    "bdd100k": "uniseg_cli.data.formats.bdd100k",
    "idd": "uniseg_cli.data.formats.idd",
    "ade20k": "uniseg_cli.data.formats.ade20k",
    "coco_panoptic": "uniseg_cli.data.formats.coco_panoptic",
    "wilddash2": "uniseg_cli.data.formats.wilddash2",
    "kitti": "uniseg_cli.data.formats.kitti",
    "camvid": "uniseg_cli.data.formats.camvid",
    "scannet": "uniseg_cli.data.formats.scannet",
    "pascal_voc": "uniseg_cli.data.formats.pascal_voc",
    "pascal_context": "uniseg_cli.data.formats.pascal_context",
}


def register_format(name: str, factory: Callable[[DatasetSpec], DatasetAdapter], layout: str = "") -> None:
    FORMATS[name] = factory
    FORMAT_LAYOUTS[name] = layout


def _load_format(name: str) -> None:
    if name not in FORMATS and name in FORMAT_MODULES:
        importlib.import_module(FORMAT_MODULES[name])


def known_formats() -> list[str]:
    for n in list(FORMAT_MODULES):
        _load_format(n)
    return sorted(FORMATS)


def open_dataset(spec: DatasetSpec) -> DatasetAdapter:
    _load_format(spec.format)
    if spec.format not in FORMATS:
        raise UsageError(
            f"dataset {spec.name!r}: unknown format {spec.format!r}",
            hint=f"known formats: {', '.join(known_formats())} (`uniseg datasets` shows their layouts).",
        )
    return FORMATS[spec.format](spec)
