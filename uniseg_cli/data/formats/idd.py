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

from uniseg_cli.data.formats._common import LabelTable, PublishedFormat, register

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

    # IDD reuses frame names across sequences, so a sample's stem is "<seq>_<frame>".
    def _images(self, disk: str) -> dict[str, Path]:
        out = {}
        for suffix in ("_leftImg8bit.jpg", "_leftImg8bit.png"):
            for p in sorted((self.root / "leftImg8bit" / disk).glob(f"*/*{suffix}")):
                out[f"{p.parent.name}_{p.name[: -len(suffix)]}"] = p
        return out

    def _labels(self, disk: str) -> dict[str, Path]:
        return {f"{p.parent.name}_{p.name[: -len(LABEL_SUFFIX)]}": p
                for p in sorted((self.root / "gtFine" / disk).glob(f"*/*{LABEL_SUFFIX}"))}

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        frame = image.name.rsplit("_leftImg8bit", 1)[0]
        return self.root / "gtFine" / disk / image.parent.name / f"{frame}{LABEL_SUFFIX}"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / 'leftImg8bit' / disk}/<seq>/*_leftImg8bit.png"
