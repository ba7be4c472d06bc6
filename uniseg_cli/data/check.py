"""Checks shared by every dataset adapter, so that `check-data`, training and evaluation stop on the
same problems with the same messages.

The building blocks work on files and arrays and return :class:`Problem` lists; an adapter's
``load`` raises :func:`problems_error` of what they found, and its ``check`` collects them all:

- :func:`pair_files` — match images and labels by stem (missing pair either way, duplicate stems);
- :func:`read_image` / :func:`read_label` — decode (or with ``header_only`` just open) a file:
  unreadable files, multi-channel labels, unsupported modes;
- :func:`size_problem` — image and label sizes differ;
- :func:`id_problem` — ids outside the label space, with the offending values and pixel counts;
- :func:`check_pairs` — every sample of the given splits of any adapter, through its ``inspect``
  method when it has one (``inspect(sample, deep) -> list[Problem]``), else through ``load``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from uniseg_cli.data.base import DatasetAdapter, Problem, Sample
from uniseg_cli.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LABEL_EXTS = (".png",)
#: PIL modes that hold one value per pixel (P: palette images, whose indices are the ids).
SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")


class SampleError(DataError):
    """A DataError that carries the problems found in one sample (``problems``)."""

    def __init__(self, message: str, hint: str | None, problems: list[Problem]):
        super().__init__(message, hint)
        self.problems = problems


def problems_error(problems: Sequence[Problem], what: str = "") -> SampleError:
    """One DataError for a list of problems: the first in full, then how many more."""
    first = problems[0]
    msg = f"dataset {first.dataset!r}: {first}"
    if len(problems) > 1:
        msg += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    if what:
        msg = f"{what}: {msg}"
    return SampleError(msg, hint="run `uniseg check-data` on the dataset to list every problem, and fix the files.",
                       problems=list(problems))


def list_files(folder: Path, exts: Sequence[str]) -> tuple[dict[str, Path], list[tuple[str, list[Path]]]]:
    """Files of ``folder`` with one of ``exts`` (case-insensitive) by stem, and the duplicate stems."""
    by_stem: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts:
                by_stem.setdefault(p.stem, []).append(p)
    dups = [(s, ps) for s, ps in by_stem.items() if len(ps) > 1]
    return {s: ps[0] for s, ps in by_stem.items()}, dups


def pair_files(dataset: str, images: dict[str, Path], labels: dict[str, Path],
               image_dups: Iterable[tuple[str, list[Path]]] = (), label_dir: Path | None = None,
               image_dir: Path | None = None) -> tuple[list[Sample], list[Problem]]:
    """Samples sorted by stem (label_path None where missing) and the pairing problems."""
    probs: list[Problem] = []
    samples = []
    for stem in sorted(images):
        lab = labels.get(stem)
        if lab is None:
            want = (label_dir / f"{stem}.png") if label_dir is not None else f"{stem}.png"
            probs.append(Problem(dataset, str(images[stem]), "missing-label",
                                 f"image has no label file (expected {want})"))
        samples.append(Sample(stem=stem, image_path=images[stem], label_path=lab))
    for stem in sorted(set(labels) - set(images)):
        where = f" in {image_dir}" if image_dir is not None else ""
        probs.append(Problem(dataset, str(labels[stem]), "missing-image",
                             f"label has no image (expected {stem}.jpg or {stem}.png{where})"))
    for stem, paths in image_dups:
        probs.append(Problem(dataset, str(paths[0]), "duplicate-image",
                             f"several images share the stem {stem!r}: {', '.join(p.name for p in paths)}"))
    return samples, probs


Decoded = tuple[np.ndarray | None, tuple[int, int] | None, list[Problem]]


def read_image(dataset: str, path: Path, header_only: bool = False) -> Decoded:
    """Decode an image to uint8 RGB (H, W, 3). Returns (array or None, (H, W) or None, problems)."""
    try:
        with Image.open(path) as im:
            size = (im.height, im.width)
            if header_only:
                return None, size, []
            arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
            return arr, size, []
    except FileNotFoundError:
        return None, None, [Problem(dataset, str(path), "unreadable", "file does not exist")]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return None, None, [Problem(dataset, str(path), "unreadable", f"cannot decode image ({_short(e)})")]


def read_label(dataset: str, path: Path, header_only: bool = False) -> Decoded:
    """Decode a single-channel label PNG to int64 (H, W). Returns (array or None, (H, W) or None, problems)."""
    try:
        with Image.open(path) as im:
            size = (im.height, im.width)
            if im.mode not in SINGLE_CHANNEL_MODES:
                bands = len(im.getbands())
                what = f"{bands} channels (mode {im.mode})" if bands > 1 else f"mode {im.mode}"
                return None, size, [Problem(dataset, str(path), "multi-channel",
                                            f"label must be a single-channel uint8/uint16 PNG, found {what}")]
            if header_only:
                return None, size, []
            arr = np.asarray(im).astype(np.int64, copy=False)
            return arr, size, []
    except FileNotFoundError:
        return None, None, [Problem(dataset, str(path), "unreadable", "file does not exist")]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return None, None, [Problem(dataset, str(path), "unreadable", f"cannot decode label ({_short(e)})")]


def size_problem(dataset: str, label_path: Path, image_size: tuple[int, int] | None,
                 label_size: tuple[int, int] | None, image_path: Path | None = None) -> list[Problem]:
    if image_size is None or label_size is None or image_size == label_size:
        return []
    (ih, iw), (lh, lw) = image_size, label_size
    img = f" {Path(image_path).name}" if image_path is not None else ""
    return [Problem(dataset, str(label_path), "size-mismatch",
                    f"label is {lw}x{lh} (WxH) but image{img} is {iw}x{ih}")]


def out_of_space(label: np.ndarray, num_classes: int, ignore_index: int) -> dict[int, int]:
    """{value: pixel count} of the ids that are neither a class id nor the ignore index."""
    bad = (label < 0) | ((label >= num_classes) & (label != ignore_index))
    if not bad.any():
        return {}
    vals, counts = np.unique(label[bad], return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, counts)}


def id_problem(dataset: str, path: Path, counts: dict[int, int], num_classes: int, ignore_index: int,
               what: str = "class ids") -> list[Problem]:
    """A ``bad-ids`` problem listing the offending values and their pixel counts (largest first)."""
    if not counts:
        return []
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{v} ({c} px)" for v, c in top[:8]) + (f", and {len(top) - 8} more" if len(top) > 8 else "")
    return [Problem(dataset, str(path), "bad-ids",
                    f"{what} outside the label space (valid: 0..{num_classes - 1}, ignore {ignore_index}): {shown}")]


def check_pairs(adapter: DatasetAdapter, splits: Sequence[str] | None = None, deep: bool = True) -> list[Problem]:
    """Every problem of every sample of ``splits`` (default: all on disk), plus empty splits.

    Uses ``adapter.inspect(sample, deep=...)`` when the adapter has it; otherwise ``adapter.load``
    and turns a raised DataError into a problem (one per sample then).
    """
    name = adapter.spec.name
    probs: list[Problem] = []
    for split in (splits if splits is not None else adapter.splits()):
        samples = adapter.samples(split)
        if not samples:
            probs.append(Problem(name, split_path(adapter, split), "empty-split", f"split {split!r} has no images"))
            continue
        inspect = getattr(adapter, "inspect", None)
        for s in samples:
            if inspect is not None:
                probs.extend(inspect(s, deep=deep))
                continue
            if s.label_path is None:
                probs.append(Problem(name, str(s.image_path), "missing-label", "image has no label file"))
                continue
            if not deep:
                continue
            try:
                adapter.load(s)
            except SampleError as e:
                probs.extend(e.problems)
            except DataError as e:
                probs.append(Problem(name, str(s.label_path), "bad-sample", e.message))
    return probs


def split_path(adapter: DatasetAdapter, split: str) -> str:
    fn = getattr(adapter, "split_dir", None)
    return str(fn(split)) if fn is not None else f"{adapter.spec.root} [{split}]"


def _short(e: Exception) -> str:
    s = str(e).strip() or type(e).__name__
    return s if len(s) < 160 else s[:157] + "..."
