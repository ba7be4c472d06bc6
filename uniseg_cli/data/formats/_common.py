"""Shared base of the published-format adapters (issue 9).

Every adapter in this package reads a dataset in the layout its publisher ships and yields
``(image uint8 (H, W, 3), label int64 (H, W))`` in the train ids of a built-in label space, with the
label space's ``ignore_index`` for unlabelled pixels. A subclass of :class:`PublishedFormat` says
where the images and labels of a split live (``_images``, ``_label_path``) and how a label file
decodes into raw ids (``read_raw``); the raw ids become train ids through a :class:`LabelTable`.

An adapter pointed at the wrong folder fails when it is opened, with a :class:`DataError` (exit 5)
that names the file or folder it expected and lists what it found there instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np
from PIL import Image

from uniseg_cli.data.base import DatasetSpec, LabelSpace, Problem, Sample
from uniseg_cli.errors import DataError

#: Sentinel in a lookup table: the raw id is not defined by the format.
UNKNOWN = -2


class BadIds(DataError):
    """A label file holds values (ids, colours, segments) its format does not define."""


# ----------------------------------------------------------------------------------- label spaces


def label_space(name: str) -> LabelSpace:
    """The built-in label space ``name`` (from :mod:`uniseg_cli.data.labelspaces`)."""
    from uniseg_cli.data import labelspaces

    return labelspaces.get_label_space(name)


def raw_table(name: str) -> dict[int, int]:
    """The raw id -> train id table of the built-in label space ``name`` as ``{int: int}``."""
    from uniseg_cli.data import labelspaces

    return labelspaces.raw_to_train_dict(name)


def space_info(name: str) -> dict:
    """The full reference entry of a built-in label space (``raw_id_names``, ``notes``, ...)."""
    from uniseg_cli.data import labelspaces

    return labelspaces.info(name)


class LabelTable:
    """Raw id -> train id lookup; raw ids the table does not define are reported, never guessed.

    Args:
        mapping: raw id -> train id (negative raw ids, such as Cityscapes' license plate -1, are
            kept out of the lookup: they never occur in a PNG).
        ignore_index: the label space's ignore value.
    """

    def __init__(self, mapping: Mapping[int, int], ignore_index: int = 255):
        self.ignore_index = int(ignore_index)
        self.mapping = {int(k): int(v) for k, v in mapping.items() if int(k) >= 0}
        size = max(self.mapping, default=0) + 1
        self.lut = np.full(size, UNKNOWN, dtype=np.int64)
        for k, v in self.mapping.items():
            self.lut[k] = v

    def unknown_ids(self, raw: np.ndarray) -> list[int]:
        """Sorted raw values in ``raw`` that the table does not define."""
        vals = np.unique(raw)
        bad = vals[(vals < 0) | (vals >= len(self.lut))].tolist()
        inside = vals[(vals >= 0) & (vals < len(self.lut))]
        bad += inside[self.lut[inside] == UNKNOWN].tolist()
        return sorted(int(v) for v in bad)

    def apply(self, raw: np.ndarray, path: Path | str) -> np.ndarray:
        """Train ids (int64) of a raw id map; DataError naming ``path`` on undefined raw ids."""
        raw = raw.astype(np.int64, copy=False)
        if raw.size and raw.min() >= 0 and raw.max() < len(self.lut):
            out = self.lut[raw]
            if not (out == UNKNOWN).any():
                return out
        bad = self.unknown_ids(raw)
        if bad:
            raise BadIds(
                f"{path}: raw label ids {_short(bad)} are not defined by this format "
                f"(defined: {_short(sorted(self.mapping))})",
                hint="check that the dataset's format matches its files (`uniseg datasets` lists the layouts), "
                "or run `uniseg check-data` to list every faulty file.",
            )
        return self.lut[raw]


def _short(ids: Sequence[int], n: int = 12) -> str:
    ids = list(ids)
    return "[" + ", ".join(map(str, ids[:n])) + (f", ... ({len(ids)} in all)" if len(ids) > n else "") + "]"


# ----------------------------------------------------------------------------------- file helpers


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found", hint="restore the file or remove it from the split.") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the image ({e})", hint="re-extract the file from the dataset archive.") from None


def read_id_png(path: Path, missing_hint: str | None = None) -> np.ndarray:
    """Raw ids of a single-channel (L, P, I;16, I) label PNG, as int64 (H, W)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                raise DataError(
                    f"{path}: expected a single-channel id PNG, found a {im.mode} image"
                    + (" (a colour rendering of the labels?)" if im.mode in ("RGB", "RGBA") else ""),
                    hint="point the dataset at the id label files of the layout shown by `uniseg datasets`.",
                )
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found", hint=missing_hint or "restore the file from the dataset "
                        "archive (`uniseg datasets` shows the layout).") from None
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the label file ({e})", hint="re-extract the file from the dataset archive.") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def write_png_atomic(arr: np.ndarray, path: Path) -> None:
    """Write a uint8 single-channel PNG; a crash never leaves a half-written file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def listing(folder: Path, n: int = 8) -> str:
    """A short listing of a folder's entries, for error messages."""
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return f"{folder} is empty"
    more = f", ... ({len(names)} entries)" if len(names) > n else ""
    return f"{folder} holds: " + ", ".join(names[:n]) + more


def glob_stems(folder: Path, pattern: str, suffix: str) -> dict[str, Path]:
    """``{stem: path}`` of files matching ``pattern`` under ``folder``; ``suffix`` is cut off the name."""
    if not folder.is_dir():
        return {}
    out = {}
    for p in folder.glob(pattern):
        if p.is_file() and p.name.endswith(suffix) and not p.name.startswith("."):
            out[p.name[: len(p.name) - len(suffix)]] = p
    return out


def _top(rel: str) -> str:
    """``leftImg8bit/`` for a folder path, ``panoptic.json`` for a file (for hints)."""
    first = Path(rel).parts[0]
    return first if "." in first else first + "/"


def read_list(path: Path) -> list[str]:
    """Non-empty, stripped lines of a split list file."""
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


# ----------------------------------------------------------------------------------- the base adapter


class PublishedFormat:
    """Base of an adapter for a dataset in its publisher's layout.

    Subclasses set ``format_name``, ``space`` (built-in label space name), ``layout`` (shown by
    ``uniseg datasets``), ``required`` (paths below the root that must exist, with what they hold),
    ``split_dirs`` (canonical split name -> the publisher's name), and implement ``_images`` and
    ``_label_path``. ``read_raw`` and ``to_train`` default to an id PNG and the space's raw table.
    """

    format_name: ClassVar[str] = ""
    space: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    required: ClassVar[tuple[tuple[str, str], ...]] = ()
    split_dirs: ClassVar[dict[str, str]] = {"train": "train", "val": "val"}
    split_aliases: ClassVar[dict[str, str]] = {}
    missing_label_hint: ClassVar[str | None] = None
    root_children: ClassVar[tuple[str, ...]] = ()  # archive folders to descend into when root is their parent

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.root = Path(spec.root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"dataset {spec.name!r} (format {self.format_name}): root {self.root} is not a folder "
                f"({listing(self.root.parent) if self.root.parent.is_dir() else 'its parent does not exist either'})",
                hint=f"set `root:` to the folder laid out as `uniseg datasets` shows for {self.format_name}.",
            )
        for child in self.root_children:  # the user may point at the archive's parent folder
            if (self.root / child).is_dir() and not any((self.root / r).exists() for r, _ in self.required):
                self.root = self.root / child
                break
        self.label_space: LabelSpace = label_space(self.space)
        self.table = self.make_table()
        self.check_layout()

    def check_layout(self) -> None:
        """Fail early when the root does not look like this format (default: ``required`` paths)."""
        for rel, what in self.required:
            self.expect(rel, what)

    # -- layout checks -----------------------------------------------------------------------------
    def expect(self, rel: str, what: str) -> Path:
        """The path ``root/rel``; DataError saying what was expected and what is there instead."""
        p = self.root / rel
        if not p.exists():
            parent = p.parent
            while parent != self.root and not parent.exists():
                parent = parent.parent
            raise DataError(
                f"dataset {self.spec.name!r} (format {self.format_name}): expected {p} ({what}); "
                f"found instead: {listing(parent)}",
                hint=f"point `root:` at the folder that holds {_top(rel)} "
                f"(expected layout: {self.layout.splitlines()[0] if self.layout else self.format_name}).",
            )
        return p

    # -- splits --------------------------------------------------------------------------------------
    def expect_any(self, rels: Sequence[str], what: str) -> None:
        """At least one of ``root/rel`` must exist; else DataError listing what is there."""
        if not any((self.root / r).exists() for r in rels):
            raise DataError(
                f"dataset {self.spec.name!r} (format {self.format_name}): expected "
                + " or ".join(str(self.root / r) for r in rels) + f" ({what}); found instead: {listing(self.root)}",
                hint=f"point `root:` at the folder laid out as `uniseg datasets` shows for {self.format_name}.",
            )

    def disk_split(self, split: str) -> str:
        """The publisher's name of ``split`` (canonical names and publisher names are both accepted)."""
        if split in self.split_dirs:
            return self.split_dirs[split]
        if split in self.split_aliases:
            return self.split_aliases[split]
        if split in self.split_dirs.values():
            return split
        raise DataError(
            f"dataset {self.spec.name!r} (format {self.format_name}): unknown split {split!r}",
            hint=f"use one of: {', '.join(self.split_dirs)} (present on disk: {', '.join(self.splits()) or 'none'}).",
        )

    def split_present(self, disk: str) -> bool:
        return bool(self._images(disk))

    def splits(self) -> list[str]:
        return [c for c, d in self.split_dirs.items() if self.split_present(d)]

    # -- samples -------------------------------------------------------------------------------------
    def _images(self, disk: str) -> dict[str, Path]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _label_path(self, disk: str, stem: str, image: Path) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    def _labels(self, disk: str) -> dict[str, Path]:
        """Label files present on disk by stem (to report labels without an image); optional."""
        return {}

    def samples(self, split: str) -> list[Sample]:
        disk = self.disk_split(split)
        images = self._images(disk)
        if not images:
            raise DataError(
                f"dataset {self.spec.name!r} (format {self.format_name}): split {split!r} has no images "
                f"(expected {self.split_hint(disk)})",
                hint=f"splits present: {', '.join(self.splits()) or 'none'}; the layout is shown by `uniseg datasets`.",
            )
        return [Sample(s, p, self._label_path(disk, s, p)) for s, p in sorted(images.items())]

    def split_hint(self, disk: str) -> str:
        return f"images of split {disk!r} under {self.root}"

    # -- decoding ------------------------------------------------------------------------------------
    def make_table(self) -> LabelTable:
        return LabelTable(raw_table(self.space), self.label_space.ignore_index)

    def read_raw(self, path: Path) -> np.ndarray:
        return read_id_png(path, self.missing_label_hint)

    def to_train(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return self.table.apply(raw, path)

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        img = read_rgb(sample.image_path)
        if sample.label_path is None:
            return img, np.full(img.shape[:2], self.label_space.ignore_index, dtype=np.int64)
        lab = self.to_train(self.read_raw(sample.label_path), sample.label_path)
        if lab.shape != img.shape[:2]:
            raise DataError(
                f"{sample.label_path}: label is {lab.shape[1]}x{lab.shape[0]} but its image {sample.image_path} "
                f"is {img.shape[1]}x{img.shape[0]} (W x H)",
                hint="the pair does not belong together; restore both files from the dataset archive.",
            )
        return img, lab

    # -- check ---------------------------------------------------------------------------------------
    def check(self, splits: Sequence[str] | None = None, deep: bool = True) -> list[Problem]:
        """Every problem of the given splits (default: all present) at once.

        ``deep=False`` reads file headers only (pairs, sizes, unreadable files): cheap enough to run
        over a whole training split before training starts; ids are then checked on load.
        """
        problems: list[Problem] = []
        names = list(splits) if splits is not None else self.splits()
        if not names:
            problems.append(self._problem(self.root, "no-splits", f"no split found ({self.layout.splitlines()[0]})"))
        for split in names:
            try:
                samples = self.samples(split)
            except DataError as e:
                problems.append(self._problem(self.root, "missing-split", e.message))
                continue
            disk = self.disk_split(split)
            stems = {s.stem for s in samples}
            labels = self._labels(disk)
            if not labels and self.missing_label_hint and not any(s.label_path and s.label_path.is_file() for s in samples):
                # a conversion that never ran: one problem for the split, not one per image
                problems.append(self._problem(samples[0].label_path.parent, "missing-label",
                                              f"none of the {len(samples)} images of split {split!r} has its label file "
                                              f"(e.g. {samples[0].label_path.name}); {self.missing_label_hint}"))
                continue
            for stem, p in sorted(labels.items()):
                if stem not in stems:
                    problems.append(self._problem(p, "missing-image", f"label without an image (stem {stem!r})"))
            for s in samples:
                problems.extend(self.inspect(s, deep=deep))
        return problems

    def inspect(self, s: Sample, deep: bool = True) -> list[Problem]:
        """The problems of one sample (``deep``: decode the label and check its ids too)."""
        if not s.image_path.is_file():
            return [self._problem(s.image_path, "missing-image", "image file not found")]
        if s.label_path is None:
            return []
        if not s.label_path.is_file():
            extra = f"; {self.missing_label_hint}" if self.missing_label_hint else ""
            return [self._problem(s.label_path, "missing-label", f"label file not found for image {s.image_path.name}{extra}")]
        try:
            h, w = image_size(s.image_path)
        except (OSError, ValueError) as e:
            return [self._problem(s.image_path, "unreadable", f"cannot read the image ({e})")]
        if not deep:
            try:
                lh, lw = image_size(s.label_path)
            except (OSError, ValueError) as e:
                return [self._problem(s.label_path, "unreadable", f"cannot read the label file ({e})")]
            if (lh, lw) != (h, w):
                return [self._problem(s.label_path, "size-mismatch", f"label is {lw}x{lh}, image is {w}x{h} (W x H)")]
            return []
        try:
            raw = self.read_raw(s.label_path)
        except DataError as e:
            code = "bad-ids" if isinstance(e, BadIds) else "multi-channel" if "single-channel" in e.message else "unreadable"
            return [self._problem(s.label_path, code, e.message.split(": ", 1)[-1])]
        out = []
        if raw.shape[:2] != (h, w):
            out.append(self._problem(s.label_path, "size-mismatch",
                                     f"label is {raw.shape[1]}x{raw.shape[0]}, image is {w}x{h} (W x H)"))
        try:
            self.to_train(raw, s.label_path)
        except DataError as e:
            out.append(self._problem(s.label_path, "bad-ids", e.message.split(": ", 1)[-1]))
        return out

    def _problem(self, path: Path | str, code: str, message: str) -> Problem:
        return Problem(self.spec.name, str(path), code, message)


def register(cls: type[PublishedFormat]) -> type[PublishedFormat]:
    """Class decorator: register ``cls`` under its ``format_name`` with its layout text."""
    from uniseg_cli.data import register_format

    register_format(cls.format_name, cls, layout=cls.layout)
    return cls

