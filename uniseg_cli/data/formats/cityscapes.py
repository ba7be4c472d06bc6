"""Cityscapes (gtFine): labelIds 0-33 -> the 19 train ids; void ids -> 255.

Layout (as in ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The public test split has no labels and is not offered. The license plate (id -1) is never
drawn into the labelIds PNGs by the publisher's scripts, so it cannot occur in a file.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, glob_stems, register


@register
class Cityscapes(PublishedFormat):
    format_name = "cityscapes"
    space = "cityscapes"
    layout = (
        "leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png + "
        "gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png\n"
        "labelIds 0-33 -> 19 train ids (void ids -> 255)."
    )
    required = (
        ("leftImg8bit", "the images: leftImg8bit/<split>/<city>/*_leftImg8bit.png"),
        ("gtFine", "the labels: gtFine/<split>/<city>/*_gtFine_labelIds.png"),
    )
    image_dir = "leftImg8bit"
    image_suffix = "_leftImg8bit.png"
    label_dir = "gtFine"
    label_suffix = "_gtFine_labelIds.png"

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / self.image_dir / disk, f"*/*{self.image_suffix}", self.image_suffix)

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / self.label_dir / disk, f"*/*{self.label_suffix}", self.label_suffix)

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / self.label_dir / disk / image.parent.name / f"{stem}{self.label_suffix}"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / self.image_dir / disk}/<city>/*{self.image_suffix}"
