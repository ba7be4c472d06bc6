"""Conversions from the publishers' annotation formats to the id PNGs the adapters read (issue 9).

- IDD: polygon JSON (``gtFine/<split>/<seq>/<frame>_gtFine_polygons.json``) -> level-3 id PNGs
  (``<frame>_gtFine_labellevel3Ids.png``), drawn like the publisher's toolkit does: background
  255, objects filled in file order (later objects cover earlier ones), deleted objects skipped.
- COCO panoptic: RGB panoptic PNG + ``segments_info`` -> semantic PNGs of the 133 contiguous
  classes (``annotations/panoptic_semseg_<split>2017/<id>.png``), for train and val.

Both check the layout and the existing outputs before writing anything, write each PNG atomically
(temporary file + rename, so an interrupted run leaves whole files only), and never overwrite
existing outputs unless ``force`` is set (:class:`OutputExistsError`, exit 4). A faulty input file
(unknown label name, category or segment) stops the run with a DataError naming that file.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from uniseg_cli.data.formats._common import (
    BadIds,
    LabelTable,
    label_space,
    listing,
    raw_table,
    space_info,
    write_png_atomic,
)
from uniseg_cli.errors import DataError, OutputExistsError, UnisegError, UsageError

Progress = Callable[[int, int], None]  # (done, total)

#: IDD polygon labels that are void in every IDD id scheme (drawn as ignore).
IDD_VOID_NAMES = ("unlabeled", "unlabel", "ego vehicle", "rectification border", "out of roi", "license plate")


@dataclass(frozen=True)
class Job:
    """One output file to write from one input."""

    source: Path
    target: Path


# ----------------------------------------------------------------------------------- IDD


def idd_name_table() -> dict[str, int]:
    """IDD polygon label name -> train id of the paper's 26-class level-3 space.

    Built from the label space's ``raw_id_names`` and ``raw_to_train_id`` tables (name -> the
    public code's raw id -> train id), plus the publisher's void names (-> ignore).
    """
    space = label_space("idd")
    table = raw_table("idd")
    out = {n: space.ignore_index for n in IDD_VOID_NAMES}
    for raw, name in space_info("idd")["raw_id_names"].items():
        out[str(name)] = table.get(int(raw), space.ignore_index)
    return out


def idd_polygons_to_ids(ann: dict, names: Mapping[str, int], ignore: int = 255, source: str = "<json>") -> np.ndarray:
    """Draw one IDD polygon annotation into a uint8 (H, W) id map.

    Args:
        ann: the parsed ``*_gtFine_polygons.json`` (``imgHeight``, ``imgWidth``, ``objects``).
        names: label name -> id; a name ending in ``group`` falls back to its singular form.
        ignore: the value of pixels no polygon covers.
        source: the file name, for error messages.

    Returns:
        uint8 (imgHeight, imgWidth).
    """
    try:
        h, w = int(ann["imgHeight"]), int(ann["imgWidth"])
        objects = ann["objects"]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{source}: not an IDD polygon file (missing or bad field {e})",
                        hint="convert the *_gtFine_polygons.json files of the IDD segmentation archive.") from None
    img = Image.new("L", (w, h), ignore)
    draw = ImageDraw.Draw(img)
    for i, obj in enumerate(objects):
        if obj.get("deleted"):
            continue
        label = str(obj.get("label", ""))
        key = label if label in names else label[:-5] if label.endswith("group") and label[:-5] in names else None
        if key is None:
            raise BadIds(f"{source}: object {i} has label {label!r}, which is not an IDD class",
                         hint=f"known labels: {', '.join(sorted(names))}.")
        pts = [(float(x), float(y)) for x, y in obj.get("polygon", [])]
        if len(pts) >= 2:
            draw.polygon(pts, fill=int(names[key]))
    return np.asarray(img, dtype=np.uint8)


def idd_jobs(root: Path, splits: Sequence[str] | None = None) -> list[Job]:
    """Polygon JSON -> level-3 PNG jobs of the given splits (default: every split with JSON)."""
    from uniseg_cli.data.formats.idd import LABEL_SUFFIX, POLYGON_SUFFIX

    gt = root / "gtFine"
    if not gt.is_dir():
        raise DataError(f"IDD root {root}: expected {gt} (gtFine/<split>/<seq>/*{POLYGON_SUFFIX}); found instead: "
                        f"{listing(root)}", hint="pass --root the folder that holds leftImg8bit/ and gtFine/.")
    names = list(splits) if splits else sorted(p.name for p in gt.iterdir() if p.is_dir())
    jobs = []
    for split in names:
        d = gt / split
        if not d.is_dir():
            raise DataError(f"IDD root {root}: expected split folder {d}; found instead: {listing(gt)}",
                            hint="pass --split with one of the folders under gtFine/.")
        for src in sorted(d.glob(f"*/*{POLYGON_SUFFIX}")):
            jobs.append(Job(src, src.with_name(src.name[: -len(POLYGON_SUFFIX)] + LABEL_SUFFIX)))
    if not jobs:
        raise DataError(f"IDD root {root}: no *{POLYGON_SUFFIX} files under {gt}/<split>/<seq>/",
                        hint="extract the IDD segmentation archive (gtFine holds the polygon JSON files).")
    return jobs


def _idd_one(job: Job, names: Mapping[str, int], ignore: int) -> None:
    try:
        ann = json.loads(job.source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{job.source}: cannot read the polygon JSON ({e})",
                        hint="re-extract the file from the IDD archive.") from None
    write_png_atomic(idd_polygons_to_ids(ann, names, ignore, str(job.source)), job.target)


def convert_idd(root: Path | str, splits: Sequence[str] | None = None, force: bool = False,
                progress: Progress | None = None, workers: int = 1) -> dict:
    """Write ``*_gtFine_labellevel3Ids.png`` beside every IDD polygon JSON.

    Returns:
        ``{"dataset": "idd", "root", "splits", "written", "outputs": [first few paths]}``.
    """
    root = Path(root).expanduser()
    jobs = idd_jobs(root, splits)
    _refuse_existing(jobs, force, "idd", root)
    names = idd_name_table()
    ignore = label_space("idd").ignore_index
    _run(_idd_one, [(j, names, ignore) for j in jobs], workers, progress)
    return _summary("idd", root, jobs, splits)


# ----------------------------------------------------------------------------------- panoptic


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Panoptic segment ids of an RGB panoptic PNG: ``R + 256 G + 256^2 B`` (int64 (H, W))."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def read_panoptic_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise DataError(f"{path}: expected an RGB panoptic PNG, found a {im.mode} image",
                                hint="point at the panoptic PNG folder that belongs to the panoptic JSON.")
            return rgb_to_segment_ids(np.asarray(im))
    except FileNotFoundError:
        raise DataError(f"{path}: panoptic PNG not found", hint="extract the panoptic PNG archive next to its JSON.") from None
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the panoptic PNG ({e})", hint="re-extract the file.") from None


def panoptic_to_category(seg: np.ndarray, segments_info: Sequence[dict], source: str,
                         unlabeled: int = 0, strict: bool = True) -> np.ndarray:
    """Per-pixel ``category_id`` of a panoptic segment-id map (int64 (H, W)).

    Pixels of segment 0 (and, unless ``strict``, of segments missing from ``segments_info``) get
    ``unlabeled``; ``strict`` makes an unlisted segment id a :class:`BadIds` error.
    """
    ids = {int(s["id"]): int(s["category_id"]) for s in segments_info}
    present = np.unique(seg)
    missing = [int(v) for v in present if v != 0 and int(v) not in ids]
    if missing and strict:
        raise BadIds(f"{source}: segment ids {missing[:8]} are in the PNG but not in the JSON's segments_info",
                     hint="the PNG and the JSON do not belong together; use the pair from the same archive.")
    keys = np.array(sorted(ids), dtype=np.int64)
    vals = np.array([ids[k] for k in keys.tolist()], dtype=np.int64)
    out = np.full(seg.shape, unlabeled, dtype=np.int64)
    if len(keys):
        pos = np.clip(np.searchsorted(keys, seg), 0, len(keys) - 1)
        hit = keys[pos] == seg
        out[hit] = vals[pos[hit]]
    return out


def load_panoptic_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        _ = data["annotations"], data["categories"]
        return data
    except FileNotFoundError:
        raise DataError(f"panoptic JSON {path} not found; found instead: {listing(path.parent)}",
                        hint="extract the panoptic annotations archive into the dataset root.") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO panoptic JSON ({e})", hint="re-extract the panoptic annotations.") from None


def coco_jobs(root: Path, splits: Sequence[str]) -> list[tuple[Job, list[dict]]]:
    from uniseg_cli.data.formats.coco_panoptic import SEMSEG_DIR

    out = []
    for split in splits:
        disk = split if split.endswith("2017") else f"{split}2017"
        js = root / "annotations" / f"panoptic_{disk}.json"
        pngs = root / "annotations" / f"panoptic_{disk}"
        data = load_panoptic_json(js)
        if not pngs.is_dir():
            raise DataError(f"COCO root {root}: expected {pngs} (the panoptic PNGs of {js.name}); found instead: "
                            f"{listing(pngs.parent)}", hint=f"extract annotations/panoptic_{disk}.zip into annotations/.")
        for ann in data["annotations"]:
            src = pngs / ann["file_name"]
            out.append((Job(src, root / SEMSEG_DIR.format(split=disk) / (Path(ann["file_name"]).stem + ".png")),
                        ann.get("segments_info", [])))
    return out


def convert_coco_panoptic(root: Path | str, splits: Sequence[str] | None = None, force: bool = False,
                          progress: Progress | None = None, workers: int = 1) -> dict:
    """Write the 133-class semantic PNGs of COCO panoptic train and val (or ``splits``).

    Every segment is labelled with its category (crowd segments included, as in the panoptic
    -> semantic conversion of detectron2/Mask2Former); pixels of no segment become 255.
    """
    root = Path(root).expanduser()
    if root.is_dir() and not (root / "annotations").is_dir() and (root / "coco" / "annotations").is_dir():
        root = root / "coco"
    if not (root / "annotations").is_dir():
        raise DataError(f"COCO root {root}: expected {root / 'annotations'} (panoptic_{{train,val}}2017.json and "
                        f"PNG folders); found instead: {listing(root)}",
                        hint="pass --root the folder that holds train2017/, val2017/ and annotations/.")
    splits = list(splits) if splits else ["train", "val"]
    bad = [s for s in splits if s.removesuffix("2017") not in ("train", "val")]
    if bad:
        raise UsageError(f"coco-panoptic: unknown split(s) {bad}", hint="use --split train and/or --split val.")
    pairs = coco_jobs(root, splits)
    table = LabelTable(raw_table("coco_panoptic_133"), label_space("coco_panoptic_133").ignore_index)
    _refuse_existing([j for j, _ in pairs], force, "coco-panoptic", root)
    _run(_coco_one, [(job, segs, table) for job, segs in pairs], workers, progress)
    return _summary("coco-panoptic", root, [j for j, _ in pairs], splits)


def _coco_one(job: Job, segs: Sequence[dict], table: LabelTable) -> None:
    cats = panoptic_to_category(read_panoptic_png(job.source), segs, str(job.source), unlabeled=0)
    # category 0 is "no segment" here; the table maps it to 255 like the public code.
    write_png_atomic(table.apply(cats, job.source), job.target)


# ----------------------------------------------------------------------------------- shared


def _call(fn: Callable, args: tuple) -> tuple[str, str, str | None] | None:
    """Run one job; a known error comes back as (class name, message, hint) so its hint survives pickling."""
    try:
        fn(*args)
        return None
    except UnisegError as e:
        return type(e).__name__, e.message, e.hint


def _run(fn: Callable, jobs: Sequence[tuple], workers: int, progress: Progress | None) -> None:
    """Run ``fn(*job)`` for every job, in ``workers`` processes; stop at the first error."""
    errors = {c.__name__: c for c in (BadIds, DataError, UsageError, OutputExistsError)}

    def done(i: int, res) -> None:
        if res is not None:
            raise errors.get(res[0], DataError)(res[1], hint=res[2])
        if progress:
            progress(i + 1, len(jobs))

    if workers <= 1 or len(jobs) < 2:
        for i, job in enumerate(jobs):
            done(i, _call(fn, job))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        try:
            for i, res in enumerate(pool.map(_call, [fn] * len(jobs), jobs, chunksize=8)):
                done(i, res)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _refuse_existing(jobs: Sequence[Job], force: bool, kind: str, root: Path) -> None:
    if force:
        return
    existing = [j.target for j in jobs if j.target.exists()]
    if existing:
        raise OutputExistsError(
            f"{len(existing)} of {len(jobs)} outputs of `convert {kind}` already exist (first: {existing[0]})",
            hint=f"re-run with --force to overwrite them: uniseg convert {kind} --root {root} --force",
        )


def _summary(kind: str, root: Path, jobs: Sequence[Job], splits) -> dict:
    return {
        "dataset": kind,
        "root": str(root),
        "splits": list(splits) if splits else sorted({j.source.parent.parent.name for j in jobs}),
        "written": len(jobs),
        "outputs": [str(j.target) for j in jobs[:5]],
    }


CONVERTERS: dict[str, Callable[..., dict]] = {"idd": convert_idd, "coco-panoptic": convert_coco_panoptic}
