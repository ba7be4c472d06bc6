"""WildDash 2 (``wd_public_v2p0.zip``), read straight from the publisher's COCO-panoptic files.

Layout::

    <root>/images/<frame>.jpg
    <root>/panoptic.json        (images, annotations with segments_info, categories = labelIds 0-80)
    <root>/panoptic/<frame>.png (RGB; segment id = R + 256 G + 256^2 B)

A pixel's labelId is the ``category_id`` of its segment; pixels of no segment are 0 (unlabeled),
as in the publisher's ``pano2sem.py``. labelIds -> the paper's 26 classes: the 25 evaluated
classes plus ``void`` (25), which collects every other id, unlabeled included; nothing is ignored.
All labelled images form split ``val`` (4256 images); the benchmark images carry no labels.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from uniseg_cli.data.formats._common import PublishedFormat, register
from uniseg_cli.errors import DataError


@register
class WildDash2(PublishedFormat):
    format_name = "wilddash2"
    space = "wilddash2"
    layout = (
        "images/<frame>.jpg + panoptic.json + panoptic/<frame>.png (the publisher's COCO-panoptic files)\n"
        "labelId = segment category_id (0 where no segment) -> 26 classes incl. void (25); nothing ignored; split val."
    )
    required = (
        ("images", "the images: images/<frame>.jpg"),
        ("panoptic.json", "the panoptic annotations (COCO panoptic JSON)"),
        ("panoptic", "the panoptic PNGs: panoptic/<frame>.png"),
    )
    split_dirs = {"val": "val"}
    root_children = ("wd_public_v2p0", "wd_public_02")

    @functools.cached_property
    def _index(self) -> tuple[dict[str, list[dict]], dict[str, str]]:
        """(panoptic PNG name -> segments_info, panoptic PNG name -> image file name), read once."""
        from uniseg_cli.data.convert import load_panoptic_json

        data = load_panoptic_json(self.root / "panoptic.json")
        names = {im["id"]: im["file_name"] for im in data.get("images", [])}
        segs = {a["file_name"]: a.get("segments_info", []) for a in data["annotations"]}
        image_of = {a["file_name"]: names.get(a["image_id"], Path(a["file_name"]).stem + ".jpg") for a in data["annotations"]}
        return segs, image_of

    @property
    def _panoptic(self) -> dict[str, list[dict]]:
        return self._index[0]

    @property
    def _image_of(self) -> dict[str, str]:
        return self._index[1]

    def _images(self, disk: str) -> dict[str, Path]:
        out = {}
        for png, img in self._image_of.items():
            p = self.root / "images" / img
            if p.is_file():
                out[Path(png).stem] = p
        return out

    def _labels(self, disk: str) -> dict[str, Path]:
        return {Path(n).stem: self.root / "panoptic" / n for n in self._panoptic if (self.root / "panoptic" / n).is_file()}

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / "panoptic" / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / 'images'}/*.jpg listed in {self.root / 'panoptic.json'}"

    def read_raw(self, path: Path) -> np.ndarray:
        from uniseg_cli.data.convert import panoptic_to_category, read_panoptic_png

        segs = self._panoptic.get(path.name)
        if segs is None:
            raise DataError(f"{path}: not listed in {self.root / 'panoptic.json'}",
                            hint="use the panoptic PNGs and JSON of the same WildDash 2 archive.")
        return panoptic_to_category(read_panoptic_png(path), segs, str(path), unlabeled=0)
