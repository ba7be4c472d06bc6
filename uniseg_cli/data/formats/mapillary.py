"""Mapillary Vistas v1.2: palette PNGs whose indices are the ids 0-65 -> the paper's 64 classes.

Layout (``mapillary-vistas-dataset_public_v1.2.zip``)::

    <root>/{training,validation}/images/<key>.jpg
    <root>/{training,validation}/v1.2/labels/<key>.png   (8-bit palette image; index = class id)

Mailbox (id 40) and Unlabeled (65) -> 255; ids 41-64 shift down by one (the paper's 64 classes).
The public code's ``mapi_rgb_conver_to_lb.py`` is a VIPER script with the wrong palette; nothing
needs converting: the palette indices are the ids (METHOD §10.2 B8).
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, glob_stems, register


@register
class Mapillary(PublishedFormat):
    format_name = "mapillary"
    space = "mapillary_vistas_v1.2"
    layout = (
        "{training,validation}/images/<key>.jpg + {training,validation}/v1.2/labels/<key>.png\n"
        "palette PNG indices = ids 0-65 -> 64 classes (Mailbox 40 and Unlabeled 65 -> 255)."
    )
    split_dirs = {"train": "training", "val": "validation"}

    def check_layout(self) -> None:
        self.expect_any(["training/images", "validation/images"],
                        "the images: {training,validation}/images/*.jpg, labels in <split>/v1.2/labels/*.png")

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / disk / "images", "*.jpg", ".jpg")

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / disk / "v1.2" / "labels", "*.png", ".png")

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / disk / "v1.2" / "labels" / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / disk / 'images'}/*.jpg"
