"""SUN RGB-D, 37 classes, in the 2D segmentation release the paper's split sizes come from.

The publisher (Song et al.) ships ``SUNRGBD.zip`` (per-sensor folders with ``seg.mat``) and the
``SUNRGBDtoolbox`` whose ``SUNRGBD2Dseg.mat`` / ``seglabel`` carry the 37-class labels. The
paper's 5285 train / 5050 test images are the flat release of that data with 37-class label PNGs
(Handa et al.), which is the layout this adapter reads::

    <root>/SUNRGBD-train_images/img-<nnnnnn>.jpg     (img-005051 ... img-010335, 5285 images)
    <root>/SUNRGBD-test_images/img-<nnnnnn>.jpg      (img-000001 ... img-005050, 5050 images)
    <root>/sunrgbd_train_test_labels/img-<nnnnnn>.png   (0 = unlabelled, 1-37; 37 = bag)

Split ``val`` (also ``test``) is the publisher's test list, as in the paper. Ids per the paper's
table: 0 -> 255, 37 (bag) -> 0, 1-36 keep their value.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, glob_stems, register

LABELS = "sunrgbd_train_test_labels"


@register
class SunRgbd(PublishedFormat):
    format_name = "sunrgbd"
    space = "sunrgbd"
    layout = (
        "SUNRGBD-train_images/img-<n>.jpg, SUNRGBD-test_images/img-<n>.jpg + sunrgbd_train_test_labels/img-<n>.png\n"
        "label PNG 0-37: 0 -> 255, 37 (bag) -> 0, k -> k; split val = the test list (5050)."
    )
    required = ((LABELS, "the 37-class label PNGs: sunrgbd_train_test_labels/img-<n>.png"),)
    split_dirs = {"train": "SUNRGBD-train_images", "val": "SUNRGBD-test_images"}
    split_aliases = {"test": "SUNRGBD-test_images"}

    def check_layout(self) -> None:
        super().check_layout()
        self.expect_any(list(self.split_dirs.values()), "the images: SUNRGBD-{train,test}_images/img-<n>.jpg")

    def _images(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / disk, "img-*.jpg", ".jpg")

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / LABELS / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / disk}/img-*.jpg"
