"""Helpers that write tiny files in the exact encodings the publishers use (8x8 images)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from uniseg_cli.data import open_dataset
from uniseg_cli.data.base import DatasetSpec

H, W = 8, 8


def rgb_image(path: Path, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A random RGB image (PNG or JPEG by suffix); returns what a reader gets back for PNGs."""
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)
    return arr


def id_png(path: Path, ids: np.ndarray, palette: bool = False) -> None:
    """A single-channel id PNG (mode L), or a palette PNG (mode P) whose indices are the ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(ids, dtype=np.uint8), "L")
    if palette:
        im = im.convert("P")  # L -> P keeps the values as indices with a grey palette
        pal = np.random.default_rng(1).integers(0, 256, 768, dtype=np.uint8).tolist()
        im.putpalette(pal)
    im.save(path)


def color_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8), "RGB").save(path)


def panoptic_png(path: Path, seg_ids: np.ndarray) -> None:
    """RGB panoptic PNG with segment id = R + 256 G + 256^2 B."""
    seg = np.asarray(seg_ids, dtype=np.int64)
    rgb = np.stack([seg % 256, (seg // 256) % 256, seg // 65536], axis=-1).astype(np.uint8)
    color_png(path, rgb)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def grid(values, h: int = H, w: int = W) -> np.ndarray:
    """An (h, w) map whose rows cycle through ``values`` (every value appears)."""
    vals = np.asarray(values)
    return np.resize(vals, h * w).reshape(h, w)


def open_fmt(fmt: str, root: Path, name: str = "ds"):
    return open_dataset(DatasetSpec(name=name, root=str(root), format=fmt))
