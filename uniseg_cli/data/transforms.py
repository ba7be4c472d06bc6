"""Train and evaluation transforms, applied identically to an image and its label map.

Order (as the public code's dataset mapper): random short-side resize → random crop (ignore
padding; optional "no class over ``cat_max_ratio`` of the crop") → colour jitter → horizontal flip
→ optional per-channel gain/offset shift (``channel_gain``/``channel_offset``; off by default, and
when off the random stream is exactly the one without it). Normalisation (ImageNet mean/std in
0..255 RGB) happens when the sample becomes a tensor.

Resize settings:
- ``scale_mode="ratio"`` (the paper's "random resize ratio 0.5 to 2"): the new short side is
  ``ratio × base``, ``ratio ~ U(ratio_range)``, ``base`` = ``base_short`` or the image's own short side;
- ``scale_mode="choice"`` (the public code's ``ResizeShortestEdge(..., "choice")``): the new short
  side is drawn from ``short_sides`` (absolute pixels; :func:`public_code_short_sides` gives its list),
  with the long side capped at ``max_size``.

Images are resized bilinearly, labels with nearest neighbour; crops larger than the resized image
are padded (image with the mean colour, i.e. 0 after normalisation; label with the ignore value).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def public_code_short_sides() -> tuple[int, ...]:
    """The public code's short-side choices: ``int(x·0.1·512)`` for x = 5..40 (256..2048 px)."""
    return tuple(int(x * 0.1 * 512) for x in range(5, 41))


@dataclasses.dataclass(frozen=True)
class TrainTransformConfig:
    crop_size: tuple[int, int] = (512, 512)  # (H, W)
    scale_mode: str = "ratio"  # "ratio" | "choice" | "none"
    ratio_range: tuple[float, float] = (0.5, 2.0)
    base_short: int | None = None  # ratio mode: scale relative to this short side (default: the image's)
    short_sides: tuple[int, ...] = ()  # choice mode: absolute short sides
    max_size: int = 4096
    cat_max_ratio: float | None = None  # e.g. 0.8: retry crops where one class covers more
    cat_max_tries: int = 10
    flip_prob: float = 0.5
    color_jitter: bool = True
    # per-channel colour shift after the flip: each of R, G, B is scaled by 1 + U(-gain, gain) and
    # shifted by U(-offset, offset). It blurs a dataset's colour cast, so a head learns the object
    # rather than "the camera of dataset X" (estimate-nodes stage 1 uses it, train can; 0 turns it off)
    channel_gain: float = 0.0
    channel_offset: float = 0.0
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    @classmethod
    def of(cls, params) -> "TrainTransformConfig":
        """A stage's training transform from its params' ``crop_size``, ``channel_gain`` and ``channel_offset``."""
        return cls(crop_size=(params.crop_size, params.crop_size), channel_gain=params.channel_gain,
                   channel_offset=params.channel_offset)

    def __post_init__(self):
        if self.scale_mode not in ("ratio", "choice", "none"):
            raise ValueError(f"scale_mode must be ratio, choice or none, got {self.scale_mode!r}")
        if self.scale_mode == "choice" and not self.short_sides:
            raise ValueError("scale_mode 'choice' needs short_sides")
        if self.ratio_range[0] <= 0 or self.ratio_range[0] > self.ratio_range[1]:
            raise ValueError(f"bad ratio_range {self.ratio_range}")
        if not 0.0 <= self.channel_gain < 1.0:
            raise ValueError(f"channel_gain must lie in [0, 1) (a share of each channel), got {self.channel_gain}")
        if self.channel_offset < 0:
            raise ValueError(f"channel_offset must be >= 0 (grey levels), got {self.channel_offset}")


def resize(image: np.ndarray, label: np.ndarray | None,
           size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Bilinear image, nearest-neighbour label (pixel-centre aligned, so both stay registered)."""
    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image, label
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if label is None:
        return img, None
    return img, resize_label(label, (h, w))


def resize_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    h, w = size_hw
    sh, sw = label.shape
    rows = np.minimum(((np.arange(h) + 0.5) * sh / h).astype(np.int64), sh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * sw / w).astype(np.int64), sw - 1)
    return label[rows[:, None], cols[None, :]]


def short_side_size(h: int, w: int, short: float, max_size: int = 4096) -> tuple[int, int]:
    """(H, W) with the short side ``short`` and the long side at most ``max_size`` (aspect kept)."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def pad_to(image: np.ndarray, label: np.ndarray, size_hw: tuple[int, int], ignore: int,
           fill: tuple[float, float, float] = MEAN) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    th, tw = max(h, size_hw[0]), max(w, size_hw[1])
    if (th, tw) == (h, w):
        return image, label
    img = np.empty((th, tw, 3), np.uint8)
    img[...] = np.asarray(np.rint(fill), np.uint8)
    img[:h, :w] = image
    lab = np.full((th, tw), ignore, label.dtype)
    lab[:h, :w] = label
    return img, lab


def random_crop(image: np.ndarray, label: np.ndarray, size_hw: tuple[int, int], ignore: int,
                rng: np.random.Generator, cat_max_ratio: float | None = None,
                tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``size_hw`` (padding first where the image is smaller).

    With ``cat_max_ratio`` the crop is redrawn (up to ``tries`` times, as detectron2's
    ``RandomCrop_CategoryAreaConstraint``) until it holds more than one class and no class covers
    ``cat_max_ratio`` or more of its labelled pixels; the last draw is kept otherwise.
    """
    image, label = pad_to(image, label, size_hw, ignore)
    h, w = label.shape
    ch, cw = size_hw
    for _ in range(max(1, tries if cat_max_ratio is not None else 1)):
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        lab = label[y0:y0 + ch, x0:x0 + cw]
        if cat_max_ratio is None:
            break
        vals = lab[lab != ignore]
        if vals.size:
            cnt = np.bincount(vals.ravel()) if vals.min() >= 0 else np.unique(vals, return_counts=True)[1]
            if np.count_nonzero(cnt) > 1 and cnt.max() < cat_max_ratio * vals.size:
                break
    return image[y0:y0 + ch, x0:x0 + cw], lab


def color_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD-style photometric jitter (detectron2 ColorAugSSDTransform): brightness ±32, contrast and
    saturation ×[0.5, 1.5], hue ±18°, each with probability 0.5; contrast before or after HSV."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        img *= rng.uniform(0.5, 1.5)
    do_sat, do_hue = rng.random() < 0.5, rng.random() < 0.5
    if do_sat or do_hue:
        hsv = np.asarray(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("HSV")).astype(np.float32)
        if do_sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
        if do_hue:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-18, 18) * 255.0 / 360.0) % 256
        img = np.asarray(Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")).astype(np.float32)
    if not contrast_first and rng.random() < 0.5:
        img *= rng.uniform(0.5, 1.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def channel_shift(image: np.ndarray, rng: np.random.Generator, gain: float, offset: float) -> np.ndarray:
    """Scale each colour channel by ``1 + U(-gain, gain)`` and add ``U(-offset, offset)`` grey levels."""
    g = 1.0 + rng.uniform(-gain, gain, size=3).astype(np.float32)
    o = rng.uniform(-offset, offset, size=3).astype(np.float32)
    return np.clip(image.astype(np.float32) * g + o, 0, 255).astype(np.uint8)


class TrainTransform:
    """Random resize, crop, jitter and flip of an (image, label) pair.

    Args:
        config: the settings.

    Shapes:
        in: image uint8 (H, W, 3), label int (H, W); out: image uint8 (h, w, 3), label (h, w) with
        (h, w) = ``config.crop_size``.
    """

    def __init__(self, config: TrainTransformConfig = TrainTransformConfig()):
        self.config = config

    def __call__(self, image: np.ndarray, label: np.ndarray, ignore: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        h, w = label.shape
        if c.scale_mode == "ratio":
            base = c.base_short if c.base_short else min(h, w)
            image, label = resize(image, label, short_side_size(h, w, base * rng.uniform(*c.ratio_range), c.max_size))
        elif c.scale_mode == "choice":
            short = c.short_sides[int(rng.integers(len(c.short_sides)))]
            image, label = resize(image, label, short_side_size(h, w, short, c.max_size))
        image, label = random_crop(image, label, c.crop_size, ignore, rng, c.cat_max_ratio, c.cat_max_tries)
        if c.color_jitter:
            image = color_jitter(image, rng)
        if rng.random() < c.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        if c.channel_gain > 0 or c.channel_offset > 0:
            image = channel_shift(image, rng, c.channel_gain, c.channel_offset)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


class EvalTransform:
    """Evaluation: no change, or resize so the short side is ``short_side`` (labels nearest)."""

    def __init__(self, short_side: int | None = None, max_size: int = 4096, resize_label: bool = True):
        self.short_side, self.max_size, self.resize_label = short_side, max_size, resize_label

    def __call__(self, image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.short_side:
            return image, label
        h, w = image.shape[:2]
        size = short_side_size(h, w, self.short_side, self.max_size)
        img, _ = resize(image, None, size)
        if label is not None and self.resize_label:
            label = resize_label(label, size)
        return img, label


def _writable(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def to_tensor(image: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 (H, W, 3) → normalised float32 (3, H, W)."""
    t = torch.from_numpy(_writable(image)).permute(2, 0, 1).float()
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (t - m) / s


def batch_to_tensor(images: list[np.ndarray], mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 (H, W, 3) images of one size → normalised float32 (B, 3, H, W), in one pass."""
    t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    t.sub_(torch.tensor(mean, dtype=torch.float32)[:, None, None])
    t.div_(torch.tensor(std, dtype=torch.float32)[:, None, None])
    return t.contiguous()


def label_to_tensor(label: np.ndarray, ignore: int, ignore_out: int = -1) -> torch.Tensor:
    """Train ids (H, W) with the dataset's ignore value → int64 (H, W) with ``ignore_out``."""
    t = torch.from_numpy(_writable(label.astype(np.int64, copy=False)))
    return torch.where(t == ignore, torch.full_like(t, ignore_out), t)
