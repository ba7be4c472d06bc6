"""Tiny generic-format datasets written into tmp_path (helpers for the data tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from uniseg_cli.data.generic import write_labels_yaml

#: class id -> RGB colour, so a label can be read back from its image
COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200]], np.uint8)
IGNORE_COLOUR = np.array([0, 0, 0], np.uint8)


def block_label(h: int, w: int, n_classes: int, seed: int, ignore: int = 255, block: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, n_classes + 1, size=(h // block + 1, w // block + 1))
    lab = np.kron(small, np.ones((block, block), np.int64))[:h, :w]
    lab[lab == n_classes] = ignore
    return lab


def image_of(label: np.ndarray, ignore: int = 255) -> np.ndarray:
    img = np.zeros(label.shape + (3,), np.uint8)
    ok = label != ignore
    img[ok] = COLOURS[label[ok]]
    return img


def label_of(image: np.ndarray, ignore: int = 255) -> np.ndarray:
    """Nearest colour → class id (ignore for black)."""
    pal = np.concatenate([COLOURS, IGNORE_COLOUR[None]], 0).astype(np.int64)
    d = ((image[..., None, :].astype(np.int64) - pal[None, None]) ** 2).sum(-1)
    idx = d.argmin(-1)
    return np.where(idx == len(COLOURS), ignore, idx)


def write_generic(root: Path, name: str = "toy", classes=("road", "car", "sky"), ignore: int = 255,
                  splits: dict | None = None, size=(16, 20), seed: int = 0, dtype=np.uint8) -> Path:
    splits = splits if splits is not None else {"train": 4, "val": 2}
    write_labels_yaml(root, name, list(classes), ignore, [f"a {c}" for c in classes])
    for si, (split, n) in enumerate(splits.items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            lab = block_label(*size, len(classes), seed * 1000 + si * 100 + i, ignore)
            Image.fromarray(image_of(lab, ignore)).save(root / "images" / split / f"s{i:03d}.png")
            Image.fromarray(lab.astype(dtype)).save(root / "annotations" / split / f"s{i:03d}.png")
    return root
