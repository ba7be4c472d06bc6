"""KITTI semantic segmentation (``data_semantics.zip``): Cityscapes labelIds -> 19 train ids.

Layout::

    <root>/training/image_2/<id>_10.png
    <root>/training/semantic/<id>_10.png      (Cityscapes labelIds, single channel)

Only ``training`` has labels (200 images); it is offered as split ``train``. The paper fits and
scores on these same 200 images (set ``val_split: train`` in the pipeline to do the same).
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, glob_stems, register


@register
class Kitti(PublishedFormat):
    format_name = "kitti"
    space = "kitti"
    layout = (
        "training/image_2/<id>_10.png + training/semantic/<id>_10.png\n"
        "Cityscapes labelIds -> 19 train ids (void -> 255); only split train (= training, 200 images)."
    )
    required = (
        ("training/image_2", "the images: training/image_2/*.png"),
        ("training/semantic", "the labels: training/semantic/*.png (Cityscapes labelIds)"),
    )
    split_dirs = {"train": "training"}

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / disk / "image_2", "*.png", ".png")

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / disk / "semantic", "*.png", ".png")

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / disk / "semantic" / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / disk / 'image_2'}/*.png"
