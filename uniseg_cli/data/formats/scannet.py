"""ScanNet-20 from the publisher's 2D benchmark frames (``scannet_frames_25k.zip``).

Layout::

    <root>/<scene>/color/<frame>.jpg
    <root>/<scene>/label/<frame>.png       (8-bit NYUv2-40 ids, as the publisher pre-processed them)
    <root>/scannetv2_train.txt, scannetv2_val.txt   (the publisher's scene lists, Tasks/Benchmark)

The 20 benchmark classes are the publisher's NYU40 ids (1 wall, 2 floor, 3 cabinet, 4 bed, 5 chair,
6 sofa, 7 table, 8 door, 9 window, 10 bookshelf, 11 picture, 12 counter, 14 desk, 16 curtain,
24 refridgerator, 28 shower curtain, 33 toilet, 34 sink, 36 bathtub, 39 otherfurniture); each goes
to the train id of the class of the same name (the label space lists them alphabetically), every
other id 0-40 -> 255. The public code reads ``label20`` PNGs whose class order is undocumented
(METHOD §9); mapping by name removes the doubt. Sample stems are ``<scene>_<frame>``.
"""
from __future__ import annotations

from pathlib import Path

from uniseg_cli.data.formats._common import LabelTable, PublishedFormat, read_list, register

#: The publisher's benchmark classes: NYU40 id -> name.
NYU40_BENCHMARK = {
    1: "wall", 2: "floor", 3: "cabinet", 4: "bed", 5: "chair", 6: "sofa", 7: "table", 8: "door", 9: "window",
    10: "bookshelf", 11: "picture", 12: "counter", 14: "desk", 16: "curtain", 24: "refridgerator",
    28: "shower curtain", 33: "toilet", 34: "sink", 36: "bathtub", 39: "otherfurniture",
}
SPLIT_LISTS = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt"}


@register
class ScanNet(PublishedFormat):
    format_name = "scannet"
    space = "scannet20"
    layout = (
        "<scene>/color/<frame>.jpg + <scene>/label/<frame>.png (NYU40 ids) + scannetv2_{train,val}.txt scene lists\n"
        "the 20 benchmark NYU40 ids -> 20 classes by name; other ids -> 255."
    )
    split_dirs = {"train": "train", "val": "val"}
    root_children = ("scannet_frames_25k",)

    def check_layout(self) -> None:
        self.expect_any(list(SPLIT_LISTS.values()), "the publisher's scene lists scannetv2_{train,val}.txt")

    def make_table(self) -> LabelTable:
        idx = {c: i for i, c in enumerate(self.label_space.classes)}
        ign = self.label_space.ignore_index
        return LabelTable({i: idx[NYU40_BENCHMARK[i]] if i in NYU40_BENCHMARK else ign for i in range(41)}, ign)

    def split_present(self, disk: str) -> bool:
        return (self.root / SPLIT_LISTS[disk]).is_file()

    def _images(self, disk: str) -> dict[str, Path]:
        listed = self.root / SPLIT_LISTS[disk]
        if not listed.is_file():
            return {}
        out = {}
        for scene in read_list(listed):
            for p in sorted((self.root / scene / "color").glob("*.jpg")):
                out[f"{scene}_{p.stem}"] = p
        return out

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:
        return image.parent.parent / "label" / f"{image.stem}.png"

    def split_hint(self, disk: str) -> str:
        return f"scenes listed in {self.root / SPLIT_LISTS[disk]} with <scene>/color/*.jpg"
