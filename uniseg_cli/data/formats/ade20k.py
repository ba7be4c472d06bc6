"""ADE20K scene parsing (``ADEChallengeData2016.zip``): 150 classes, 0 -> ignore.

Layout::

    <root>/images/{training,validation}/ADE_<split>_<n>.jpg
    <root>/annotations/{training,validation}/ADE_<split>_<n>.png   (0 = other/unlabelled, 1-150)

Per the paper's table: 0 -> 255, 150 (flag) -> 0, 1-149 keep their value. ``root`` may also be the
folder that holds ``ADEChallengeData2016/``.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, glob_stems, register


@register
class Ade20k(PublishedFormat):
    format_name = "ade20k"
    space = "ade20k"
    layout = (
        "ADEChallengeData2016/images/{training,validation}/*.jpg + annotations/{training,validation}/*.png\n"
        "0 -> 255 (ignore), 150 (flag) -> 0, k -> k."
    )
    required = (
        ("images", "the images: images/{training,validation}/*.jpg"),
        ("annotations", "the labels: annotations/{training,validation}/*.png"),
    )
    split_dirs = {"train": "training", "val": "validation"}
    root_children = ("ADEChallengeData2016",)

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / "images" / disk, "*.jpg", ".jpg")

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / "annotations" / disk, "*.png", ".png")

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / "annotations" / disk / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / 'images' / disk}/*.jpg"
