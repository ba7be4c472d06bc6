"""`uniseg predict`: label maps for images, in the unified space or in a training dataset's label space.

Inputs are image files, folders (searched recursively for .jpg/.jpeg/.png) and datasets (a split of a
dataset in any known format). The model comes from a training artifact (``model.json`` +
``model.safetensors``); its unified logits are bilinearly upsampled to the image and, for
``--space <dataset>``, turned into that dataset's logits through the boolean mapping (``M_d · z``, the
same head the model was trained with). Unified channels that no dataset label maps to (inactive nodes,
left out of the exported taxonomy) are never predicted.

Large images go through a sliding window (``--tile``): windows of ``tile`` pixels with ``overlap``
between neighbours; the logits of overlapping windows are averaged. Windows of the same shape are
batched (``--batch-size``), across images.

Outputs under ``--out DIR``; nothing is overwritten unless ``--force``::

    DIR/labels/<name>.png      single channel: uint8 when every class id fits, else uint16
    DIR/overlays/<name>.png    the image blended with a colour per class (unless --no-overlay)
    DIR/classes.json           space, class names and colours by id

``<name>`` keeps the input's relative path inside a folder or dataset split (``img/a/b.jpg`` ->
``a/b.png``), so files from different folders do not collide.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from uniseg_cli.errors import OutputExistsError, UsageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class PredictParams:
    space: str = "unified"  # "unified", or the name of a training dataset
    batch_size: int = 4  # windows per forward pass
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    tile: int = 0  # sliding-window size in pixels (0: whole image at once)
    overlap: float = 0.25  # overlap between neighbouring windows, as a fraction of the tile
    overlay: bool = True  # also write colour overlays
    alpha: float = 0.5  # overlay opacity of the class colours


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image to predict: where it is and the relative name of its outputs (without suffix)."""

    path: Path
    name: str


# --------------------------------------------------------------------------------------------- inputs


def collect_images(paths: Sequence[str | Path] = (), datasets: Sequence = (), split: str | None = None) -> list[ImageItem]:
    """The images to predict, in a stable order, each with a unique output name.

    Args:
        paths: image files and folders (folders are searched recursively).
        datasets: :class:`uniseg_cli.data.base.DatasetSpec` entries; their ``split`` (default: each
            spec's ``val_split``) is read through the dataset's adapter.
        split: the split to read from each dataset.
    """
    items: list[ImageItem] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS
                           and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not found:
                raise UsageError(f"folder {p} holds no images ({', '.join(IMAGE_EXTS)})",
                                 hint="pass image files, a folder of images, or --dataset.")
            items += [ImageItem(q, str(q.relative_to(p).with_suffix("").as_posix())) for q in found]
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTS:
                raise UsageError(f"{p} is not an image file ({', '.join(IMAGE_EXTS)})", hint="pass images or folders.")
            items.append(ImageItem(p, p.stem))
        else:
            raise UsageError(f"{p} does not exist", hint="check the path.")
    if datasets:
        from uniseg_cli.data import open_dataset

        for spec in datasets:
            ad = open_dataset(spec)
            sp = split or spec.val_split
            if sp not in ad.splits():
                raise UsageError(f"dataset {spec.name} has no split {sp!r} (it has: {', '.join(ad.splits()) or 'none'})",
                                 hint="choose one with --split.")
            items += [ImageItem(Path(s.image_path), f"{spec.name}/{s.stem}") for s in ad.samples(sp)]
    if not items:
        raise UsageError("no images to predict", hint="pass image files or folders, or --dataset SPEC.")
    seen: dict[str, Path] = {}
    for it in items:
        if it.name in seen:
            raise UsageError(f"{it.path} and {seen[it.name]} would both be written as {it.name}.png",
                             hint="predict them in separate runs or from their folders.")
        seen[it.name] = it.path
    return items


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from uniseg_cli.errors import DataError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {path}: {e}", hint="check that the file is a valid image.") from None


# --------------------------------------------------------------------------------------------- inference


def windows(h: int, w: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) windows covering an ``h`` × ``w`` image; one window when ``tile`` is 0 or large enough."""
    if tile <= 0 or (h <= tile and w <= tile):
        return [(0, h, 0, w)]
    if not 0.0 <= overlap < 1.0:
        raise UsageError(f"--overlap {overlap}: must be in [0, 1)", hint="e.g. --overlap 0.25.")
    stride = max(1, int(round(tile * (1.0 - overlap))))

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, stride)) + [n - tile]
        return sorted(set(s))

    return [(y, min(y + tile, h), x, min(x + tile, w)) for y in starts(h) for x in starts(w)]


def predict_logits(
    forward: Callable,
    images: Iterable[tuple[int, np.ndarray]],
    *,
    tile: int = 0,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: str = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pad_to: int = 32,
) -> Iterator[tuple[int, "torch.Tensor"]]:  # noqa: F821
    """Run ``forward`` over images window by window; yield ``(key, logits (C, H, W))`` per image, in input order.

    Args:
        forward: normalised images ``(B, 3, h, w)`` -> logits ``(B, C, h', w')`` (any resolution; upsampled).
        images: ``(key, uint8 RGB (H, W, 3))`` pairs.
        tile, overlap: sliding window (see :func:`windows`).
        batch_size: windows per forward call; windows of one shape are batched across images.
        device: torch device of the forward pass.
        mean, std: normalisation of [0, 1] RGB.
        pad_to: windows are padded (zeros after normalisation: the mean colour) to a multiple of this,
            then cropped back, as :func:`~uniseg_cli.training.unify.full_res_logits` does for evaluation.
    """
    import torch
    import torch.nn.functional as F

    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    state: dict[int, dict] = {}  # key -> {"sum", "count", "left"}
    order: list[int] = []
    queue: list[tuple[int, tuple[int, int, int, int], "torch.Tensor"]] = []

    def flush() -> Iterator[tuple[int, "torch.Tensor"]]:
        if not queue:
            return
        x = torch.stack([q[2] for q in queue]).to(device)
        x = (x / 255.0 - m) / s
        hh, ww = x.shape[-2:]
        ph, pw = (-hh) % pad_to, (-ww) % pad_to
        if ph or pw:  # zeros = the mean colour, as in training crops and `uniseg evaluate`
            x = F.pad(x, (0, pw, 0, ph))
        with torch.inference_mode():
            y = forward(x).float()
            if y.shape[-2:] != x.shape[-2:]:  # as in training and `uniseg evaluate`: align_corners=True
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)
            y = y[..., :hh, :ww]
        for (key, (y0, y1, x0, x1), _), logit in zip(queue, y):
            st = state[key]
            if st["sum"] is None:
                st["sum"] = torch.zeros((logit.shape[0], *st["hw"]), dtype=torch.float32, device=device)
                st["count"] = torch.zeros(st["hw"], dtype=torch.float32, device=device)
            st["sum"][:, y0:y1, x0:x1] += logit
            st["count"][y0:y1, x0:x1] += 1
            st["left"] -= 1
        queue.clear()
        while order and state[order[0]]["left"] == 0:  # emit finished images in input order
            k = order.pop(0)
            st = state.pop(k)
            yield k, st["sum"] / st["count"].clamp_min(1)

    for key, img in images:
        h, w = img.shape[:2]
        wins = windows(h, w, tile, overlap)
        state[key] = {"sum": None, "count": None, "left": len(wins), "hw": (h, w)}
        order.append(key)
        t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float()
        for win in wins:
            y0, y1, x0, x1 = win
            crop = t[:, y0:y1, x0:x1]
            if queue and (queue[0][2].shape != crop.shape or len(queue) >= batch_size):
                yield from flush()
            queue.append((key, win, crop))
    yield from flush()


def dataset_logits(unified: "torch.Tensor", mapping: np.ndarray, mode: str = "sum") -> "torch.Tensor":  # noqa: F821
    """Dataset logits ``(n_d, H, W)`` from unified logits ``(N, H, W)`` and bool ``(n_d, N)``, formed as the
    model was trained (``mode``: :func:`~uniseg_cli.models.heads.label_logits`)."""
    import torch

    from uniseg_cli.models.heads import label_logits

    m = torch.as_tensor(np.asarray(mapping, dtype=np.float32), device=unified.device)
    return label_logits(unified, m, mode)


# --------------------------------------------------------------------------------------------- outputs


def palette(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 distinct colours: the PASCAL VOC bit-interleaving palette, extended past 256 ids.

    Class 0 takes VOC's colour 1 (and so on): VOC's black is its background, but here 0 is a real class.
    """
    ids = np.arange(1, n + 1, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return out.astype(np.uint8)


def label_png(label: np.ndarray, path: Path, num_classes: int) -> str:
    """Write a single-channel PNG (uint8 when ``num_classes <= 256``, else uint16); returns the dtype name."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if num_classes <= 256:
        Image.fromarray(label.astype(np.uint8), mode="L").save(path)
        return "uint8"
    Image.fromarray(label.astype(np.uint16)).save(path)
    return "uint16"


def overlay_png(image: np.ndarray, label: np.ndarray, colors: np.ndarray, path: Path, alpha: float) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colors[label].astype(np.float32)
    Image.fromarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8)).save(path)


def planned_outputs(items: Sequence[ImageItem], out: Path, overlay: bool) -> list[Path]:
    paths = [out / "classes.json"]
    for it in items:
        paths.append(out / "labels" / f"{it.name}.png")
        if overlay:
            paths.append(out / "overlays" / f"{it.name}.png")
    return paths


def check_outputs(items: Sequence[ImageItem], out: Path, overlay: bool, force: bool) -> None:
    """Refuse (exit 4) before any work when an output file exists and ``force`` is not set."""
    if force:
        return
    existing = [p for p in planned_outputs(items, out, overlay) if p.exists()]
    if existing:
        more = f" (and {len(existing) - 3} more)" if len(existing) > 3 else ""
        raise OutputExistsError(f"{len(existing)} output file(s) exist under {out}: "
                                + ", ".join(str(p) for p in existing[:3]) + more,
                                hint="re-run with --force to overwrite them, or choose another --out.")


# --------------------------------------------------------------------------------------------- run


@dataclasses.dataclass
class Predictor:
    """A trained model ready for inference.

    Attributes:
        forward: normalised images ``(B, 3, H, W)`` -> unified logits ``(B, N, h, w)``.
        taxonomy: the training taxonomy (datasets, bool mappings ``(n_d, N)``, node names).
        device: where ``forward`` runs.
        mean, std: input normalisation of [0, 1] RGB.
        source: where the model came from (for the report).
        label_logits: how a dataset label's logit is formed from its nodes' (as in training).
    """

    forward: Callable
    taxonomy: object
    device: str = "cpu"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    source: str = ""
    label_logits: str = "sum"


def space_classes(tax, space: str) -> tuple[list[str], np.ndarray | None, np.ndarray]:
    """(class names by id, bool mapping ``(n_d, N)`` or None for unified, active-channel mask ``(N,)``)."""
    active = np.zeros(tax.num_channels, dtype=bool)
    active[tax.active_nodes()] = True
    if space == "unified":
        names = [tax.names.get(u, tax.default_name(u)) if active[u] else f"(inactive {u})" for u in range(tax.num_channels)]
        return names, None, active
    if space not in tax.datasets:
        raise UsageError(f"--space {space!r}: not 'unified' and not a training dataset of this model",
                         hint=f"use unified or one of: {', '.join(tax.datasets)}.")
    return list(tax.datasets[space]), tax.mapping(space), active


def run_predict(predictor: Predictor, items: Sequence[ImageItem], out: str | Path, params: PredictParams,
                force: bool = False, on_image: Callable[[int], None] | None = None) -> dict:
    """Predict every image and write label maps (and overlays) under ``out``.

    Returns:
        ``{"out", "space", "num_classes", "dtype", "classes_file", "images": [{"input", "label", "overlay",
        "height", "width", "classes_present"}]}``
    """
    import torch

    out = Path(out)
    if params.batch_size < 1:
        raise UsageError(f"--batch-size {params.batch_size}: must be at least 1")
    if params.tile < 0:
        raise UsageError(f"--tile {params.tile}: must be 0 (no tiling) or a window size in pixels")
    if not 0.0 <= params.alpha <= 1.0:
        raise UsageError(f"--alpha {params.alpha}: must be in [0, 1]")
    tax = predictor.taxonomy
    classes, mapping, active = space_classes(tax, params.space)
    check_outputs(items, out, params.overlay, force)
    colors = palette(len(classes))
    masked = torch.as_tensor(~active, device=predictor.device)
    written, dtype = [], "uint8" if len(classes) <= 256 else "uint16"
    images = {}

    def feed() -> Iterator[tuple[int, np.ndarray]]:
        for k, it in enumerate(items):
            images[k] = read_rgb(it.path)
            yield k, images[k]

    for k, logits in predict_logits(predictor.forward, feed(), tile=params.tile, overlap=params.overlap,
                                    batch_size=params.batch_size, device=predictor.device,
                                    mean=predictor.mean, std=predictor.std):
        if logits.shape[0] != tax.num_channels:
            raise UsageError(f"the model gives {logits.shape[0]} output channels, its taxonomy has {tax.num_channels}",
                             hint="the training artifact is inconsistent; rebuild it with `uniseg train --force`.")
        logits = logits.masked_fill(masked[:, None, None], float("-inf"))  # inactive nodes are never predicted
        if mapping is not None:
            logits = dataset_logits(logits.masked_fill(masked[:, None, None], 0.0), mapping, predictor.label_logits)
        label = logits.argmax(dim=0).cpu().numpy()
        it = items[k]
        img = images.pop(k)
        lp = out / "labels" / f"{it.name}.png"
        label_png(label, lp, len(classes))
        entry = {"input": str(it.path), "label": str(lp), "height": int(label.shape[0]), "width": int(label.shape[1]),
                 "classes_present": sorted(int(c) for c in np.unique(label))}
        if params.overlay:
            op = out / "overlays" / f"{it.name}.png"
            overlay_png(img, label, colors, op, params.alpha)
            entry["overlay"] = str(op)
        written.append(entry)
        if on_image:
            on_image(len(written))
    cf = out / "classes.json"
    from uniseg_cli.artifacts import atomic_write_text

    atomic_write_text(cf, json.dumps({
        "space": params.space, "source": predictor.source, "dtype": dtype,
        "classes": [{"id": i, "name": n, "color": [int(v) for v in colors[i]]} for i, n in enumerate(classes)],
    }, indent=1) + "\n")
    return {"out": str(out), "space": params.space, "num_classes": len(classes), "dtype": dtype,
            "classes_file": str(cf), "images": written}


def load_predictor(train, device: str = "auto", taxonomy_file: str | Path | None = None) -> Predictor:
    """Rebuild the model of a training artifact (``model.json`` + ``model.safetensors``) for inference.

    The label spaces come from the model's own (final, pruned) boolean mappings; node names from its
    members, or from ``taxonomy_file`` (an exported taxonomy.parquet of this model, e.g. with LLM names).
    """
    from uniseg_cli.stages.export_taxonomy import member_names
    from uniseg_cli.taxonomy.schema import Taxonomy
    from uniseg_cli.training.distributed import resolve_device
    from uniseg_cli.training.model_io import NORM_MEAN, NORM_STD, load_unified_model

    dev = resolve_device(device)
    model = load_unified_model(train, dev)
    maps = {d: model.head.mapping(i).detach().cpu().numpy() > 0.5 for i, d in enumerate(model.datasets)}
    tax = Taxonomy.from_mappings(maps, datasets=model.datasets)
    tax.names = member_names(tax)
    if taxonomy_file is not None:
        from uniseg_cli.taxonomy.schema import read_taxonomy

        named = read_taxonomy(taxonomy_file)
        tax.names.update({u: n for u, n in named.names.items() if u in tax.names})
    info = model.meta.get("model", {})
    mean = [v / 255.0 for v in info.get("mean", NORM_MEAN)]
    std = [v / 255.0 for v in info.get("std", NORM_STD)]
    return Predictor(forward=model.unified_logits, taxonomy=tax, device=str(dev), mean=mean, std=std,
                     source=str(getattr(train, "path", train)), label_logits=model.head.label_logits)


def check_space(train, space: str) -> None:
    """Refuse an unknown ``--space`` from ``model.json`` alone, before the model is loaded."""
    p = Path(getattr(train, "path", train))
    try:
        meta = json.loads((p / "model.json").read_text())
        names = [str(d[0]) for d in meta["model"]["datasets"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return  # load_predictor reports a damaged model properly
    if space != "unified" and space not in names:
        raise UsageError(f"--space {space!r}: not 'unified' and not a training dataset of the model {p}",
                         hint=f"use unified or one of: {', '.join(names)}.")
