"""PASCAL Context, 60 classes (59 + background), from the publisher's 59-class label PNGs.

Layout (VOC 2010 ``VOCtrainval_03-May-2010.tar`` + Context's ``59_context_labels.tar.gz`` and
``59_labels.txt``)::

    <root>/JPEGImages/<id>.jpg
    <root>/59_context_labels/<id>.png    (0 = background, k = the k-th class of 59_labels.txt)
    <root>/59_labels.txt                 (optional: "k: name" lines; default: the published list)
    <root>/ImageSets/Main/{train,val}.txt (4998 / 5105 images, VOC 2010's lists)

Pixels map by class NAME into the label space: 0 -> ``background``, k -> the class named k in
59_labels.txt. The label space lists the 60 names alphabetically (``aeroplane`` 0, ``background``
1, ...); the public code's identity table on its own PNGs leaves that order unexplained (METHOD
§9), so going through names is the documented choice. ``root`` is ``VOCdevkit/VOC2010``.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import LabelTable, PublishedFormat, read_list, register
from uniseg_cli.data.formats.pascal_voc import list_stems
from uniseg_cli.errors import DataError

LABELS = "59_context_labels"


def parse_59_labels(path: Path) -> dict[int, str]:
    out = {}
    for i, line in enumerate(read_list(path), 1):
        k, sep, name = line.partition(":")
        if not sep or not k.strip().isdigit():
            raise DataError(f"{path}: line {i} is not 'k: name': {line!r}",
                            hint="restore 59_labels.txt from the PASCAL Context site, or delete it to use the built-in list.")
        out[int(k)] = name.strip()
    return out


@register
class PascalContext(PublishedFormat):
    format_name = "pascal_context"
    space = "pascal_context"
    layout = (
        "VOC2010/JPEGImages/<id>.jpg + 59_context_labels/<id>.png + ImageSets/Main/{train,val}.txt (+ 59_labels.txt)\n"
        "0 -> background, k -> the class named k in 59_labels.txt, mapped by name into the 60 classes."
    )
    required = (
        ("JPEGImages", "the VOC 2010 images: JPEGImages/<id>.jpg"),
        (LABELS, "the publisher's 59-class label PNGs: 59_context_labels/<id>.png"),
        ("ImageSets/Main", "VOC 2010's split lists: ImageSets/Main/{train,val}.txt"),
    )
    root_children = ("VOC2010",)

    def make_table(self) -> LabelTable:
        classes = list(self.label_space.classes)
        names_file = self.root / "59_labels.txt"
        if names_file.is_file():
            names = parse_59_labels(names_file)
        else:  # the published 59_labels.txt lists the 59 classes alphabetically, from 1
            names = dict(enumerate((c for c in classes if c != "background"), 1))
        unknown = sorted(set(names.values()) - set(classes))
        if unknown:
            raise DataError(f"{names_file}: names {unknown} are not PASCAL Context classes",
                            hint=f"the 60 classes: {', '.join(classes)}.")
        return LabelTable({0: classes.index("background"), **{k: classes.index(n) for k, n in names.items()}},
                          self.label_space.ignore_index)

    def split_present(self, disk: str) -> bool:
        return (self.root / "ImageSets" / "Main" / f"{disk}.txt").is_file()

    def _images(self, disk: str) -> dict[str, Path]:
        path = self.root / "ImageSets" / "Main" / f"{disk}.txt"
        if not path.is_file():
            return {}
        return {s: self.root / "JPEGImages" / f"{s}.jpg" for s in list_stems(path)}

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.root / LABELS / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"the list {self.root / 'ImageSets' / 'Main' / (disk + '.txt')}"
