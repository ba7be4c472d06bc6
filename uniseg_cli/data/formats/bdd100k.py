"""BDD100K semantic segmentation (``bdd100k_images_10k.zip`` + ``bdd100k_sem_seg_labels_trainval.zip``).

Layout::

    <root>/images/10k/{train,val}/<name>.jpg
    <root>/labels/sem_seg/masks/{train,val}/<name>.png   (train ids 0-18, 255 = unknown)

The masks already hold the 19 Cityscapes-style train ids; 255 stays ignore.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, glob_stems, register


@register
class Bdd100k(PublishedFormat):
    format_name = "bdd100k"
    space = "bdd100k"
    layout = (
        "images/10k/{train,val}/<name>.jpg + labels/sem_seg/masks/{train,val}/<name>.png\n"
        "masks hold the 19 train ids; 255 = ignore."
    )
    required = (
        ("images/10k", "the images: images/10k/<split>/*.jpg"),
        ("labels/sem_seg/masks", "the masks: labels/sem_seg/masks/<split>/*.png"),
    )
    root_children = ("bdd100k",)

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / "images" / "10k" / disk, "*.jpg", ".jpg")

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / "labels" / "sem_seg" / "masks" / disk, "*.png", ".png")

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / "labels" / "sem_seg" / "masks" / disk / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / 'images' / '10k' / disk}/*.jpg"
