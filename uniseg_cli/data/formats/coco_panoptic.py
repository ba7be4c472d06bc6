"""COCO panoptic, 133 classes, through semantic PNGs converted from the publisher's panoptic files.

The publisher ships (``panoptic_annotations_trainval2017.zip``, ``train2017.zip``, ``val2017.zip``)::

    <root>/{train2017,val2017}/<id>.jpg
    <root>/annotations/panoptic_{train,val}2017.json     (segments_info: segment id -> category_id)
    <root>/annotations/panoptic_{train,val}2017/<id>.png (RGB; segment id = R + 256 G + 256^2 B)

``uniseg convert coco-panoptic --root <root>`` writes, for train and val,

    <root>/annotations/panoptic_semseg_{train,val}2017/<id>.png   (0-132 contiguous, 255 = unlabelled)

which this adapter reads (the public code converts val only; METHOD §10.2 B8).
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import LabelTable, PublishedFormat, glob_stems, register

SEMSEG_DIR = "annotations/panoptic_semseg_{split}"


@register
class CocoPanoptic(PublishedFormat):
    format_name = "coco_panoptic"
    space = "coco_panoptic_133"
    layout = (
        "{train2017,val2017}/<id>.jpg + annotations/panoptic_{train,val}2017.json + annotations/panoptic_{train,val}2017/<id>.png\n"
        "`uniseg convert coco-panoptic --root ROOT` writes annotations/panoptic_semseg_{train,val}2017/<id>.png "
        "(133 contiguous ids, 255 = unlabelled), which training reads."
    )
    required = (("annotations", "annotations/panoptic_{train,val}2017.json and the panoptic PNG folders"),)
    split_dirs = {"train": "train2017", "val": "val2017"}
    root_children = ("coco",)

    @property
    def missing_label_hint(self) -> str:  # type: ignore[override]
        return f"run `uniseg convert coco-panoptic --root {self.root}` to write the semantic PNGs from the panoptic files."

    def make_table(self) -> LabelTable:
        n = len(self.label_space.classes)
        ign = self.label_space.ignore_index
        return LabelTable({**{i: i for i in range(n)}, ign: ign}, ign)

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / disk, "*.jpg", ".jpg")

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / SEMSEG_DIR.format(split=disk), "*.png", ".png")

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / SEMSEG_DIR.format(split=disk) / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / disk}/*.jpg"
