"""PASCAL VOC 2012 with the SBD-augmented labels (``SegmentationClassAug``), 20 object classes.

Layout (``VOCtrainval_11-May-2012.tar`` + ``SegmentationClassAug.zip``)::

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClassAug/<id>.png      (ids 0-20, 255 = boundary; SegmentationClass if absent)
    <root>/ImageSets/Segmentation/{train,val,trainval,train_aug}.txt   (also ImageSets/SegmentationAug/)

``root`` is ``VOCdevkit/VOC2012`` (or ``VOCdevkit``). Split names are the list files' names; the
paper fits on ``train_aug`` (10582) and scores ``val`` (1449). Per the paper's table background (0)
and every id above 20 -> 255, ids 1-20 -> 0-19: VOC is scored on its 20 object classes.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import PublishedFormat, read_list, register

LIST_DIRS = ("ImageSets/Segmentation", "ImageSets/SegmentationAug")


def list_stems(path: Path) -> list[str]:
    """Stems of a split list: ``2007_000032`` or ``/JPEGImages/2007_000032.jpg /SegmentationClassAug/...``."""
    return [Path(line.split()[0]).stem for line in read_list(path)]


@register
class PascalVoc(PublishedFormat):
    format_name = "pascal_voc"
    space = "pascal_voc"
    layout = (
        "VOC2012/JPEGImages/<id>.jpg + VOC2012/SegmentationClassAug/<id>.png + ImageSets/Segmentation/<split>.txt\n"
        "0 (background) and ids > 20 -> 255, k -> k-1 (20 classes); splits = list files (train_aug, val, ...)."
    )
    required = (("JPEGImages", "the images: JPEGImages/<id>.jpg"),)
    root_children = ("VOC2012",)

    def check_layout(self) -> None:
        super().check_layout()
        self.expect_any(["SegmentationClassAug", "SegmentationClass"], "the labels: SegmentationClassAug/<id>.png")
        self.expect_any(list(LIST_DIRS), "the split lists: ImageSets/Segmentation/<split>.txt")

    @property
    def label_dir(self) -> Path:
        aug = self.root / "SegmentationClassAug"
        return aug if aug.is_dir() else self.root / "SegmentationClass"

    def _lists(self) -> dict[str, Path]:
        out = {}
        for d in LIST_DIRS:
            for p in sorted((self.root / d).glob("*.txt")) if (self.root / d).is_dir() else []:
                out.setdefault(p.stem, p)
        return out

    @property
    def split_dirs(self) -> dict[str, str]:  # type: ignore[override]
        return {n: n for n in self._lists()}

    def _images(self, disk: str) -> dict[str, Path]:
        path = self._lists().get(disk)
        if path is None:
            return {}
        return {s: self.root / "JPEGImages" / f"{s}.jpg" for s in list_stems(path)}

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return self.label_dir / f"{stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"a list file {self.root / LIST_DIRS[0] / (disk + '.txt')}"
