"""Scene layouts and appearance rendering for the synthetic world (see :mod:`.synthetic`).

A layout draws a map of universal class indices with class-typical shapes; the appearance step
paints each class with its two colours mixed by its texture (random phase, slight jitter of angle
and period per image), adds smooth illumination and pixel noise, then the dataset's colour shift.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def _ellipse(m: np.ndarray, cy: float, cx: float, ry: float, rx: float, value: int, below: float | None = None) -> None:
    h, w = m.shape
    y0, y1 = max(0, int(cy - ry)), min(h, int(cy + ry) + 1)
    x0, x1 = max(0, int(cx - rx)), min(w, int(cx + rx) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
    if below is not None:
        inside &= yy < below
    m[y0:y1, x0:x1][inside] = value


def _rect(m: np.ndarray, y0: float, y1: float, x0: float, x1: float, value: int) -> None:
    h, w = m.shape
    m[max(0, int(y0)):min(h, int(round(y1))), max(0, int(x0)):min(w, int(round(x1)))] = value


def drive_scene(rng: np.random.Generator, h: int, w: int, u: dict[str, int], hood: bool = False) -> np.ndarray:
    """A street: sky, skyline of buildings and trees, a road in perspective with lane dashes and an
    optional crosswalk, curbs (or a barrier) along sidewalks or terrain, cars, trucks, people, bicycles."""
    m = np.full((h, w), u["sky"], np.uint8)
    yh = int(h * rng.uniform(0.32, 0.46))
    x = 0
    while x < w:
        bw = int(rng.integers(max(4, w // 10), max(5, w // 3)))
        top = int(rng.integers(int(yh * 0.05), max(int(yh * 0.05) + 1, int(yh * 0.7))))
        if rng.random() < 0.35:
            _ellipse(m, yh, x + bw / 2, yh - top, bw / 2 + 1, u["vegetation"], below=yh)
        else:
            _rect(m, top, yh, x, x + bw, u["building"])
        x += bw + int(rng.integers(0, max(1, w // 12)))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    t = np.clip((ys - yh) / max(1, h - yh), 0, 1)  # 0 at the horizon, 1 at the bottom
    cx = w * rng.uniform(0.4, 0.6)
    left = cx - w * 0.06 - t * (cx - w * rng.uniform(0.0, 0.2))
    right = cx + w * 0.06 + t * (w * rng.uniform(0.8, 1.0) - cx)
    ground = ys >= yh
    m[ground & (xs >= left) & (xs < right)] = u["road"]
    curb_w = 2 + 0.07 * w * t
    for side, edge in (("l", left), ("r", right)):
        outer = (xs < edge - curb_w) if side == "l" else (xs >= edge + curb_w)
        strip = ((xs >= edge - curb_w) & (xs < edge)) if side == "l" else ((xs >= edge) & (xs < edge + curb_w))
        m[ground & outer] = u["terrain"] if rng.random() < 0.3 else u["sidewalk"]
        m[ground & strip] = u["curb"]
    if rng.random() < 0.6:  # a barrier along one road edge, over part of its length
        y0 = yh + (h - yh) * rng.uniform(0.0, 0.4)
        y1 = y0 + (h - yh) * rng.uniform(0.3, 0.6)
        bw = 3 + 0.12 * w * t
        edge = left if rng.random() < 0.5 else right
        band = (xs >= edge - bw) & (xs < edge + 0.3 * bw)
        m[(ys >= y0) & (ys < y1) & band & ground] = u["barrier"]
    road = m == u["road"]
    for frac in ([0.5] if rng.random() < 0.5 else [0.35, 0.65]):
        lc = left + frac * (right - left)
        lw = 1.0 + 0.05 * w * t
        period = 6 + 20 * t
        dash = ((ys - yh + rng.uniform(0, 10)) % period) < 0.55 * period
        m[road & (np.abs(xs - lc) < lw / 2) & dash] = u["lane marking"]
    if rng.random() < 0.5:
        y0 = yh + (h - yh) * rng.uniform(0.25, 0.7)
        y1 = y0 + h * rng.uniform(0.08, 0.15)
        on_road = (m == u["road"]) | (m == u["lane marking"])
        m[on_road & (ys >= y0) & (ys < y1)] = u["crosswalk"]
    objs = []
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.choice(["car", "truck", "person", "bicycle"], p=[0.35, 0.15, 0.3, 0.2])
        yb = yh + (h - yh) * rng.uniform(0.15, 1.0)
        objs.append((yb, str(kind), rng.uniform(0.05, 0.95) * w))
    for yb, kind, ox in sorted(objs):  # far first
        s = 0.3 + 0.7 * (yb - yh) / max(1, h - yh)
        if kind == "car":
            ow = w * 0.3 * s
            _rect(m, yb - ow * 0.5, yb, ox - ow / 2, ox + ow / 2, u["car"])
            _rect(m, yb - ow * 0.75, yb - ow * 0.45, ox - ow / 3, ox + ow / 3, u["car"])
        elif kind == "truck":
            ow = w * 0.36 * s
            _rect(m, yb - ow * 0.9, yb, ox - ow / 2, ox + ow / 2, u["truck"])
        elif kind == "person":
            ph = h * 0.38 * s
            _ellipse(m, yb - ph * 0.42, ox, ph * 0.42, ph * 0.16, u["person"])
            _ellipse(m, yb - ph * 0.9, ox, ph * 0.1, ph * 0.1, u["person"])
        else:
            bw = w * 0.22 * s
            _ellipse(m, yb - bw * 0.22, ox - bw * 0.28, bw * 0.22, bw * 0.22, u["bicycle"])
            _ellipse(m, yb - bw * 0.22, ox + bw * 0.28, bw * 0.22, bw * 0.22, u["bicycle"])
            _rect(m, yb - bw * 0.5, yb - bw * 0.3, ox - bw * 0.3, ox + bw * 0.3, u["bicycle"])
    if hood:
        hh = h * rng.uniform(0.08, 0.14)
        _ellipse(m, h + hh * 0.5, w / 2, hh * 1.5, w * 0.75, u["ego vehicle"])
    return m


def indoor_scene(rng: np.random.Generator, h: int, w: int, u: dict[str, int], hood: bool = False) -> np.ndarray:
    """A room: ceiling, wall and floor with sloped edges, windows, a bed, a table on legs, chairs, a person."""
    m = np.full((h, w), u["wall"], np.uint8)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    yc = h * rng.uniform(0.1, 0.24) + rng.uniform(-0.08, 0.08) * (xs - w / 2)
    yf = h * rng.uniform(0.58, 0.74) + rng.uniform(-0.1, 0.1) * (xs - w / 2)
    m[ys < yc] = u["ceiling"]
    m[ys >= yf] = u["floor"]
    top, bottom = float(np.max(yc)), float(np.min(yf))
    for _ in range(int(rng.integers(0, 3))):
        ww, wh = w * rng.uniform(0.12, 0.26), (bottom - top) * rng.uniform(0.35, 0.65)
        x0, y0 = rng.uniform(0, w - ww), top + rng.uniform(0.05, 0.3) * (bottom - top)
        _rect(m, y0, y0 + wh, x0, x0 + ww, u["window"])
    if rng.random() < 0.55:
        bw, bh = w * rng.uniform(0.35, 0.55), h * rng.uniform(0.2, 0.32)
        x0, y0 = rng.uniform(-0.1, 0.7) * w, bottom - bh * rng.uniform(0.2, 0.5)
        _rect(m, y0, y0 + bh, x0, x0 + bw, u["bed"])
    if rng.random() < 0.6:
        tw, th = w * rng.uniform(0.25, 0.4), h * rng.uniform(0.07, 0.11)
        x0, y0 = rng.uniform(0, 0.75) * w, bottom + h * rng.uniform(-0.05, 0.12)
        _rect(m, y0, y0 + th, x0, x0 + tw, u["table"])
        legh = h * rng.uniform(0.1, 0.18)
        for lx in (x0 + tw * 0.05, x0 + tw * 0.87):
            _rect(m, y0 + th, y0 + th + legh, lx, lx + max(3.0, tw * 0.1), u["table"])
    for _ in range(int(rng.integers(0, 3))):
        cw = w * rng.uniform(0.11, 0.18)
        x0, y0 = rng.uniform(0, 0.9) * w, bottom + h * rng.uniform(0.0, 0.2)
        _rect(m, y0, y0 + cw * 0.35, x0, x0 + cw, u["chair"])
        _rect(m, y0 - cw * 0.9, y0, x0, x0 + cw * 0.3, u["chair"])
        _rect(m, y0 + cw * 0.35, y0 + cw * 0.9, x0, x0 + cw * 0.15, u["chair"])
        _rect(m, y0 + cw * 0.35, y0 + cw * 0.9, x0 + cw * 0.85, x0 + cw, u["chair"])
    if rng.random() < 0.45:
        ph = h * rng.uniform(0.4, 0.6)
        ox, yb = rng.uniform(0.1, 0.9) * w, min(h, bottom + h * rng.uniform(0.05, 0.3))
        _ellipse(m, yb - ph * 0.42, ox, ph * 0.42, ph * 0.15, u["person"])
        _ellipse(m, yb - ph * 0.9, ox, ph * 0.1, ph * 0.1, u["person"])
    return m


SCENES = {"drive": drive_scene, "indoor": indoor_scene}


def _smooth_field(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] with features of roughly ``scale`` pixels (deterministic)."""
    gh, gw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
    return np.clip(field / (field.std() + 1e-6) * 0.5, -1, 1)


def _texture(kind: str, p: dict, ys: np.ndarray, xs: np.ndarray, rng: np.random.Generator,
             field: np.ndarray | None, h: int) -> np.ndarray:
    """Mixing weight in [0, 1] at the given pixel coordinates."""
    if kind == "plain":
        return np.full(ys.shape, 0.3, np.float32) + 0.15 * (field if field is not None else 0)
    if kind == "gradient":
        return np.clip(ys / (0.5 * h), 0, 1) * 0.8 + 0.1
    if kind == "noise":
        return np.clip(0.5 + 0.5 * field, 0, 1)
    period = p["period"] * rng.uniform(0.9, 1.1)
    ph_x, ph_y = rng.uniform(0, period, size=2)
    if kind == "stripes":
        th = np.deg2rad(p["angle"] + rng.uniform(-6, 6))
        v = (xs * np.cos(th) + ys * np.sin(th)) / period + ph_x / period
        return 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * v))
    if kind == "checker":
        return ((np.floor((xs + ph_x) / period) + np.floor((ys + ph_y) / period)) % 2).astype(np.float32)
    if kind == "grid":
        return (((xs + ph_x) % period < 1.6) | ((ys + ph_y) % period < 1.6)).astype(np.float32)
    if kind == "dots":
        dx = (xs + ph_x) % period - period / 2
        dy = (ys + ph_y) % period - period / 2
        return (dx * dx + dy * dy <= p["radius"] ** 2).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def render_appearance(cmap: np.ndarray, specs: list[tuple], rng: np.random.Generator,
                      shift: tuple = ((1.0, 1.0, 1.0), (0, 0, 0))) -> np.ndarray:
    """Paint a class map: uint8 (H, W, 3). ``specs[k] = (domain, colour A, colour B, texture, params)``."""
    h, w = cmap.shape
    img = np.zeros((h, w, 3), np.float32)
    for k in np.unique(cmap):
        _, ca, cb, kind, params = specs[int(k)]
        ys, xs = np.nonzero(cmap == k)
        ys_f, xs_f = ys.astype(np.float32), xs.astype(np.float32)
        field = None
        if kind in ("noise", "plain"):
            field = _smooth_field(rng, h, w, params.get("scale", 8))[ys, xs]
        t = _texture(kind, params, ys_f, xs_f, rng, field, h)[:, None]
        img[ys, xs] = np.asarray(ca, np.float32) * (1 - t) + np.asarray(cb, np.float32) * t
    light = _smooth_field(rng, h, w, max(h, w) / 2.0)[..., None] * 10.0 + rng.uniform(-10, 10)
    img += light + rng.normal(0, 4.0, size=img.shape).astype(np.float32)
    gain, offset = shift
    img = img * np.asarray(gain, np.float32) + np.asarray(offset, np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
