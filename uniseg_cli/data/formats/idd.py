"""IDD (India Driving Dataset, segmentation part): the level-3 space of 26 classes.

Layout (``idd-segmentation.tar.gz``)::

    <root>/leftImg8bit/{train,val}/<seq>/<frame>_leftImg8bit.png   (.jpg accepted)
    <root>/gtFine/{train,val}/<seq>/<frame>_gtFine_polygons.json   (the publisher's annotations)
    <root>/gtFine/{train,val}/<seq>/<frame>_gtFine_labellevel3Ids.png   (level-3 ids 0-25, 255)

The id PNGs are what the publisher's toolkit (``createLabels.py --id-type level3Ids``) writes. When
they are missing, ``uniseg convert idd --root <root>`` draws them from the polygon JSON
(:func:`uniseg_cli.data.convert.convert_idd`), with the paper's name -> id table. The public code
reads ``*_gtFine_polygons.png`` files with custom raw ids that the publisher never shipped
(METHOD §10.2 B8); they are not needed here.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import LabelTable, PublishedFormat, glob_stems, register

LABEL_SUFFIX = "_gtFine_labellevel3Ids.png"
POLYGON_SUFFIX = "_gtFine_polygons.json"


@register
class Idd(PublishedFormat):
    format_name = "idd"
    space = "idd"
    layout = (
        "leftImg8bit/{train,val}/<seq>/<frame>_leftImg8bit.png + gtFine/{train,val}/<seq>/<frame>_gtFine_labellevel3Ids.png\n"
        "level-3 ids 0-25, 255 ignore; missing id PNGs: `uniseg convert idd --root ROOT` draws them from *_gtFine_polygons.json."
    )
    required = (
        ("leftImg8bit", "the images: leftImg8bit/<split>/<seq>/*_leftImg8bit.png"),
        ("gtFine", "the annotations: gtFine/<split>/<seq>/*_gtFine_polygons.json or *_gtFine_labellevel3Ids.png"),
    )
    root_children = ("IDD_Segmentation", "idd20k")

    @property
    def missing_label_hint(self) -> str:  # type: ignore[override]
        return f"run `uniseg convert idd --root {self.root}` to draw the level-3 id PNGs from the polygon JSON files."

    def make_table(self) -> LabelTable:
        n = len(self.label_space.classes)
        ign = self.label_space.ignore_index
        return LabelTable({**{i: i for i in range(n)}, ign: ign}, ign)

    def _images(self, disk: str) -> dict[str, Path]:
        root = self.root / "leftImg8bit" / disk
        out = glob_stems(root, "*/*_leftImg8bit.jpg", "_leftImg8bit.jpg")
        out.update(glob_stems(root, "*/*_leftImg8bit.png", "_leftImg8bit.png"))
        return out

    def _labels(self, disk: str) -> dict[str, Path]:
        return glob_stems(self.root / "gtFine" / disk, f"*/*{LABEL_SUFFIX}", LABEL_SUFFIX)

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / "gtFine" / disk / image.parent.name / f"{stem}{LABEL_SUFFIX}"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / 'leftImg8bit' / disk}/<seq>/*_leftImg8bit.png"
