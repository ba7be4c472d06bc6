"""CamVid (Brostow et al.), from the publisher's RGB colour-coded labels, grouped into 11 classes.

Layout (``701_StillsRaw_full.zip``, ``LabeledApproved_full.zip``, ``label_colors.txt``)::

    <root>/701_StillsRaw_full/<seq>_<frame>.png
    <root>/LabeledApproved_full/<seq>_<frame>_L.png   (RGB; one colour per class, 32 classes)
    <root>/label_colors.txt                           (optional: "R G B<tab>Name" lines)
    <root>/splits/<name>.txt                          (optional: one frame per line)

Colour -> the publisher's class name (``label_colors.txt`` when present, else the published
table) -> the 11-class grouping of the paper's table; Void -> 255. A colour outside the table is
an error. The publisher defines no split: ``splits/<name>.txt`` files name frames (a stem, a file
name, or a path whose first token ends in the frame's file name, like the SegNet lists); split
``all`` is every labelled frame. The public code reads custom ``*_L_L.png`` id files instead
(METHOD §10.2 B8).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from uniseg_cli.data.formats._common import (
    BadIds,
    LabelTable,
    PublishedFormat,
    glob_stems,
    raw_table,
    read_list,
    register,
    space_info,
)
from uniseg_cli.errors import DataError

IMAGES, LABELS = "701_StillsRaw_full", "LabeledApproved_full"

#: The publisher's label_colors.txt.
COLORS: dict[tuple[int, int, int], str] = {
    (64, 128, 64): "Animal", (192, 0, 128): "Archway", (0, 128, 192): "Bicyclist", (0, 128, 64): "Bridge",
    (128, 0, 0): "Building", (64, 0, 128): "Car", (64, 0, 192): "CartLuggagePram", (192, 128, 64): "Child",
    (192, 192, 128): "Column_Pole", (64, 64, 128): "Fence", (128, 0, 192): "LaneMkgsDriv",
    (192, 0, 64): "LaneMkgsNonDriv", (128, 128, 64): "Misc_Text", (192, 0, 192): "MotorcycleScooter",
    (128, 64, 64): "OtherMoving", (64, 192, 128): "ParkingBlock", (64, 64, 0): "Pedestrian",
    (128, 64, 128): "Road", (128, 128, 192): "RoadShoulder", (0, 0, 192): "Sidewalk",
    (192, 128, 128): "SignSymbol", (128, 128, 128): "Sky", (64, 128, 192): "SUVPickupTruck",
    (0, 0, 64): "TrafficCone", (0, 64, 64): "TrafficLight", (192, 64, 128): "Train", (128, 128, 0): "Tree",
    (192, 128, 192): "Truck_Bus", (64, 0, 64): "Tunnel", (192, 192, 0): "VegetationMisc", (0, 0, 0): "Void",
    (64, 192, 0): "Wall",
}


def parse_label_colors(path: Path) -> dict[tuple[int, int, int], str]:
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            out[(int(parts[0]), int(parts[1]), int(parts[2]))] = " ".join(parts[3:])
        except (ValueError, IndexError):
            raise DataError(f"{path}: line {i} is not 'R G B Name': {line!r}",
                            hint="restore label_colors.txt from the CamVid archive, or delete it to use the built-in table.") from None
    return out


@register
class CamVid(PublishedFormat):
    format_name = "camvid"
    space = "camvid"
    layout = (
        "701_StillsRaw_full/<frame>.png + LabeledApproved_full/<frame>_L.png (RGB colour labels)\n"
        "32 publisher colours -> 11 classes, Void -> 255; splits: splits/<name>.txt lists, plus `all`."
    )
    required = (
        (IMAGES, "the images: 701_StillsRaw_full/<frame>.png"),
        (LABELS, "the colour labels: LabeledApproved_full/<frame>_L.png"),
    )

    def make_table(self) -> LabelTable:
        colors = COLORS
        if (self.root / "label_colors.txt").is_file():
            colors = parse_label_colors(self.root / "label_colors.txt")
        raw_names = list(space_info(self.space)["raw_id_names"])  # raw id -> publisher class name
        unknown = sorted(set(colors.values()) - set(raw_names))
        if unknown:
            raise DataError(f"{self.root / 'label_colors.txt'}: class names {unknown} are not CamVid classes",
                            hint=f"CamVid classes: {', '.join(raw_names)}.")
        table = raw_table(self.space)
        self._codes = np.array([r * 65536 + g * 256 + b for r, g, b in colors], dtype=np.int64)
        self._raw = np.array([raw_names.index(n) for n in colors.values()], dtype=np.int64)
        order = np.argsort(self._codes)
        self._codes, self._raw = self._codes[order], self._raw[order]
        return LabelTable(table, self.label_space.ignore_index)

    @property
    def split_dirs(self) -> dict[str, str]:  # type: ignore[override]
        lists = sorted(p.stem for p in (self.root / "splits").glob("*.txt")) if (self.root / "splits").is_dir() else []
        return {**{n: n for n in lists}, "all": "all"}

    def _images(self, disk: str) -> dict[str, Path]:
        images = glob_stems(self.root / IMAGES, "*.png", ".png")
        if disk == "all":
            labelled = self._labels("all")
            return {s: p for s, p in images.items() if s in labelled}
        listed = self.root / "splits" / f"{disk}.txt"
        stems = [Path(line.split()[0]).stem.removesuffix("_L") for line in read_list(listed)]
        return {s: images.get(s, self.root / IMAGES / f"{s}.png") for s in stems}

    def _labels(self, disk: str) -> dict[str, Path]:
        # a split list names a subset of the frames: only `all` owns every label file
        return glob_stems(self.root / LABELS, "*_L.png", "_L.png") if disk == "all" else {}

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / LABELS / f"{stem}_L.png"

    def split_hint(self, disk: str) -> str:
        return f"{self.root / 'splits' / (disk + '.txt')} naming frames of {self.root / IMAGES}"

    def read_raw(self, path: Path) -> np.ndarray:
        """Raw CamVid ids (positions in the label space's ``raw_id_names``) of an RGB label PNG."""
        try:
            with Image.open(path) as im:
                if im.mode not in ("RGB", "RGBA", "P"):
                    raise DataError(f"{path}: expected an RGB colour label, found a {im.mode} image",
                                    hint="point at LabeledApproved_full/ (the publisher's *_L.png colour labels).")
                rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        except FileNotFoundError:
            raise DataError(f"{path}: label file not found", hint="restore it from LabeledApproved_full.zip.") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the label file ({e})", hint="re-extract the file.") from None
        code = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
        pos = np.clip(np.searchsorted(self._codes, code), 0, len(self._codes) - 1)
        hit = self._codes[pos] == code
        if not hit.all():
            bad = np.unique(code[~hit])[:6]
            cols = [(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in bad]
            raise BadIds(f"{path}: colours {cols} are not CamVid classes",
                         hint="the label must use the publisher's colours (label_colors.txt).")
        return self._raw[pos]
