"""Pictures and tables of a taxonomy: the bipartite graph of dataset labels and unified nodes.

The picture (``taxonomy.svg``, hand-written SVG; ``taxonomy.png`` drawn with Pillow) puts the unified
nodes in a middle column and the datasets' labels in two side columns, one band per dataset, so that
the paper's size (7 datasets, 448 labels, ~231 nodes) stays readable: about 230 rows of text per side.
Nodes are ordered by the barycentre heuristic (alternating: nodes by the mean row of their labels,
labels within their dataset band by the mean slot of their nodes) to reduce crossings.

Edge colours say what kind of relation an edge takes part in:

* **split** (orange): the label maps to more than one unified node (a coarse label such as "vehicle"
  that the taxonomy splits into car, truck, ...);
* **merge** (blue): the node joins labels of two or more datasets (e.g. "car" and "automobile");
* **1:1** (grey): the node holds this dataset's label only.

Edge opacity follows the soft weight when one is given.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np

COLORS = {"split": "#e6550d", "merge": "#3182bd", "1:1": "#8c8c8c"}
BAND_FILLS = ("#f4f6fb", "#fbf6ef")
ROW_H = 14
FONT = 11
TEXT_W = 190
EDGE_W = 200
NODE_W = 230
MARGIN = 16
TOP = 70


@dataclasses.dataclass
class _Label:
    dataset: str
    label_id: int
    name: str
    side: int  # 0 left, 1 right
    y: float = 0.0


@dataclasses.dataclass
class _Node:
    uid: int
    name: str
    merged: bool
    y: float = 0.0


@dataclasses.dataclass
class Layout:
    """Everything a writer needs: positions in pixels, edges with their relation."""

    width: int
    height: int
    title: str
    labels: list[_Label]
    nodes: list[_Node]
    bands: list[tuple[str, int, float, float]]  # dataset, side, y0, y1
    edges: list[tuple[_Label, _Node, str, float]]  # label, node, relation, opacity
    x: dict[str, float]


def _member_matrix(mappings: Mapping[str, np.ndarray]) -> int:
    n = {np.asarray(m).shape[1] for m in mappings.values()}
    if len(n) != 1:
        raise ValueError(f"mappings disagree on the number of unified nodes: {sorted(n)}")
    return n.pop()


def layout_taxonomy(
    datasets: Mapping[str, Sequence[str]],
    mappings: Mapping[str, np.ndarray],
    names: Mapping[int, str] | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
    title: str | None = None,
    sweeps: int = 6,
) -> Layout:
    """Place labels, nodes and edges.

    Args:
        datasets: dataset name -> ordered class names (the bands, in this order per side).
        mappings: dataset name -> bool ``(n_d, N)``; ``True`` where label c maps to node u.
        names: unified id -> readable name (default ``node <id>``).
        weights: dataset name -> float ``(n_d, N)`` soft weights in [0, 1] (edge opacity).
        title: the picture's title line.
        sweeps: barycentre sweeps.
    """
    n_nodes = _member_matrix(mappings)
    names = dict(names or {})
    ds_names = list(datasets)
    maps = {d: np.asarray(mappings[d], dtype=bool) for d in ds_names}
    # balance the two sides by row count (largest first), keeping the given order within a side
    side_of, load = {}, [0, 0]
    for d in sorted(ds_names, key=lambda d: -len(datasets[d])):
        s = 0 if load[0] <= load[1] else 1
        side_of[d] = s
        load[s] += len(datasets[d]) + 2
    datasets_of_node = np.zeros(n_nodes, dtype=int)
    for d in ds_names:
        datasets_of_node += maps[d].any(axis=0)
    active = np.flatnonzero(datasets_of_node > 0)
    nodes = {int(u): _Node(int(u), names.get(int(u), f"node {int(u)}"), bool(datasets_of_node[u] > 1)) for u in active}
    labels = {d: [_Label(d, i, str(c), side_of[d]) for i, c in enumerate(datasets[d])] for d in ds_names}

    # initial rows: bands stacked per side, a header row and a gap row per band
    order = {d: list(range(len(datasets[d]))) for d in ds_names}

    def place_labels() -> tuple[list[tuple[str, int, float, float]], int]:
        bands, row = [], [0, 0]
        for d in ds_names:
            s = side_of[d]
            y0 = TOP + row[s] * ROW_H
            row[s] += 1  # header
            for i in order[d]:
                labels[d][i].y = TOP + (row[s] + 0.5) * ROW_H
                row[s] += 1
            bands.append((d, s, y0, TOP + row[s] * ROW_H))
            row[s] += 1  # gap
        return bands, max(row)

    bands, n_rows = place_labels()
    body_h = max(n_rows, 1) * ROW_H

    def place_nodes(ordered: list[int]) -> None:
        step = body_h / max(len(ordered), 1)
        for k, u in enumerate(ordered):
            nodes[u].y = TOP + (k + 0.5) * step

    node_order = sorted(nodes, key=lambda u: (np.mean([lab.y for d in ds_names for lab in _members(labels[d], maps[d], u)]), u))
    place_nodes(node_order)
    for _ in range(sweeps):
        for d in ds_names:
            m = maps[d]
            bary = [
                (float(np.mean([nodes[int(u)].y for u in np.flatnonzero(m[i])])) if m[i].any() else labels[d][i].y, i)
                for i in range(len(datasets[d]))
            ]
            order[d] = [i for _, i in sorted(bary)]
        bands, _ = place_labels()
        node_order = sorted(nodes, key=lambda u: (np.mean([lab.y for d in ds_names for lab in _members(labels[d], maps[d], u)]), u))
        place_nodes(node_order)

    x = {"lt": MARGIN + TEXT_W, "ln": MARGIN + TEXT_W + EDGE_W}
    x["rn"] = x["ln"] + NODE_W
    x["rt"] = x["rn"] + EDGE_W
    width = int(x["rt"] + TEXT_W + MARGIN)
    edges = []
    for d in ds_names:
        m = maps[d]
        w = np.asarray(weights[d], dtype=float) if weights and d in weights else None
        fan_out = m.sum(axis=1)
        for i, u in zip(*np.nonzero(m)):
            rel = "split" if fan_out[i] > 1 else ("merge" if nodes[int(u)].merged else "1:1")
            op = 0.85 if w is None else float(0.25 + 0.65 * np.clip(w[i, u], 0.0, 1.0))
            edges.append((labels[d][i], nodes[int(u)], rel, op))
    n_labels = sum(len(v) for v in datasets.values())
    n_split = sum(int((maps[d].sum(axis=1) > 1).sum()) for d in ds_names)
    n_merged = sum(1 for n in nodes.values() if n.merged)
    head = title or "taxonomy"
    head += (f"  -  {len(nodes)} unified nodes, {n_labels} labels in {len(ds_names)} datasets; "
             f"{n_merged} merged nodes, {n_split} split labels")
    all_labels = [lab for d in ds_names for lab in labels[d]]
    return Layout(width, int(TOP + body_h + MARGIN), head, all_labels, [nodes[u] for u in node_order], bands, edges, x)


def _members(labels: list[_Label], m: np.ndarray, u: int) -> list[_Label]:
    return [labels[i] for i in np.flatnonzero(m[:, u])]


def _edge_points(lay: Layout, lab: _Label, node: _Node) -> tuple[tuple[float, float], ...]:
    """Start, two Bezier control points, end of the edge's curve."""
    if lab.side == 0:
        x0, x1 = lay.x["lt"] + 4, lay.x["ln"]
    else:
        x0, x1 = lay.x["rt"] - 4, lay.x["rn"]
    mid = (x0 + x1) / 2
    return (x0, lab.y), (mid, lab.y), (mid, node.y), (x1, node.y)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def to_svg(lay: Layout) -> str:
    """The picture as a standalone SVG document (well-formed XML)."""
    a = lambda s: escape(str(s), {'"': "&quot;"})  # noqa: E731
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="{FONT}">',
        f'<rect x="0" y="0" width="{lay.width}" height="{lay.height}" fill="white"/>',
        f'<text x="{MARGIN}" y="22" font-size="14" font-weight="bold">{a(lay.title)}</text>',
    ]
    lx = MARGIN
    for rel, col in COLORS.items():
        out.append(f'<line x1="{lx}" y1="42" x2="{lx + 24}" y2="42" stroke="{col}" stroke-width="2.5"/>')
        desc = {"split": "split: label spans several nodes", "merge": "merge: node joins datasets",
                "1:1": "1:1: node of one dataset"}[rel]
        out.append(f'<text x="{lx + 30}" y="46">{a(desc)}</text>')
        lx += 250
    for k, (d, side, y0, y1) in enumerate(lay.bands):
        x0 = MARGIN if side == 0 else lay.x["rt"]
        out.append(f'<g class="dataset" data-dataset="{a(d)}">')
        out.append(f'<rect x="{x0 - 4}" y="{y0}" width="{TEXT_W + 8}" height="{y1 - y0}" '
                   f'fill="{BAND_FILLS[k % 2]}" stroke="#d0d0d0"/>')
        tx, anchor = (x0 + TEXT_W, "end") if side == 0 else (x0 + 4, "start")
        out.append(f'<text x="{tx}" y="{y0 + ROW_H - 3}" text-anchor="{anchor}" font-weight="bold">{a(d)}</text>')
        out.append("</g>")
    out.append('<g fill="none" stroke-width="1.2">')
    for lab, node, rel, op in lay.edges:
        (x0, y0), (c1x, c1y), (c2x, c2y), (x1, y1) = _edge_points(lay, lab, node)
        out.append(f'<path d="M{x0:.1f},{y0:.1f} C{c1x:.1f},{c1y:.1f} {c2x:.1f},{c2y:.1f} {x1:.1f},{y1:.1f}" '
                   f'stroke="{COLORS[rel]}" stroke-opacity="{op:.2f}"><title>{a(lab.dataset)}/{a(lab.name)} → '
                   f'{a(node.name)} ({rel})</title></path>')
    out.append("</g>")
    for lab in lay.labels:
        if lab.side == 0:
            out.append(f'<text x="{lay.x["lt"]}" y="{lab.y + 4:.1f}" text-anchor="end">{a(_short(lab.name, 30))}</text>')
        else:
            out.append(f'<text x="{lay.x["rt"]}" y="{lab.y + 4:.1f}">{a(_short(lab.name, 30))}</text>')
    step = (lay.nodes[1].y - lay.nodes[0].y) if len(lay.nodes) > 1 else ROW_H
    box_h = max(4.0, min(ROW_H - 2, step - 1))
    for n in lay.nodes:
        fill = "#deebf7" if n.merged else "#f0f0f0"
        out.append(f'<rect x="{lay.x["ln"]}" y="{n.y - box_h / 2:.1f}" width="{NODE_W}" height="{box_h:.1f}" '
                   f'fill="{fill}" stroke="#9e9e9e" stroke-width="0.6"><title>{n.uid}: {a(n.name)}</title></rect>')
        fs = min(FONT, max(6, int(box_h)))
        out.append(f'<text x="{lay.x["ln"] + NODE_W / 2}" y="{n.y + fs / 2.8:.1f}" font-size="{fs}" '
                   f'text-anchor="middle">{a(_short(f"{n.uid} {n.name}", 36))}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _bezier(p: tuple[tuple[float, float], ...], k: int = 14) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, k)[:, None]
    (p0, p1, p2, p3) = (np.array(q) for q in p)
    pts = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return [tuple(map(float, q)) for q in pts]


def to_png(lay: Layout, path, scale: float = 2.0) -> None:
    """Draw the same picture with Pillow into ``path`` (PNG)."""
    from PIL import Image, ImageColor, ImageDraw, ImageFont

    s = float(scale)
    img = Image.new("RGB", (max(1, int(lay.width * s)), max(1, int(lay.height * s))), "white")
    draw = ImageDraw.Draw(img, "RGBA")
    font = ImageFont.load_default(size=max(6, int(FONT * s)))
    bold = ImageFont.load_default(size=max(7, int(14 * s)))
    S = lambda v: v * s  # noqa: E731
    draw.text((S(MARGIN), S(10)), lay.title, fill="black", font=bold)
    lx = MARGIN
    for rel, col in COLORS.items():
        draw.line([(S(lx), S(42)), (S(lx + 24), S(42))], fill=col, width=max(1, int(2.5 * s)))
        draw.text((S(lx + 30), S(36)), {"split": "split", "merge": "merge", "1:1": "1:1"}[rel], fill="black", font=font)
        lx += 120
    for k, (d, side, y0, y1) in enumerate(lay.bands):
        x0 = MARGIN if side == 0 else lay.x["rt"]
        draw.rectangle([S(x0 - 4), S(y0), S(x0 + TEXT_W + 4), S(y1)], fill=BAND_FILLS[k % 2], outline="#d0d0d0")
        tx, anchor = (x0 + TEXT_W, "rs") if side == 0 else (x0 + 4, "ls")
        draw.text((S(tx), S(y0 + ROW_H - 3)), d, fill="black", font=font, anchor=anchor, stroke_width=0)
    for lab, node, rel, op in lay.edges:
        r, g, b = ImageColor.getrgb(COLORS[rel])
        pts = [(S(px), S(py)) for px, py in _bezier(_edge_points(lay, lab, node))]
        draw.line(pts, fill=(r, g, b, int(255 * op)), width=max(1, int(1.2 * s)))
    for lab in lay.labels:
        if lab.side == 0:
            draw.text((S(lay.x["lt"]), S(lab.y)), _short(lab.name, 30), fill="black", font=font, anchor="rm")
        else:
            draw.text((S(lay.x["rt"]), S(lab.y)), _short(lab.name, 30), fill="black", font=font, anchor="lm")
    step = (lay.nodes[1].y - lay.nodes[0].y) if len(lay.nodes) > 1 else ROW_H
    box_h = max(4.0, min(ROW_H - 2, step - 1))
    for n in lay.nodes:
        draw.rectangle([S(lay.x["ln"]), S(n.y - box_h / 2), S(lay.x["rn"]), S(n.y + box_h / 2)],
                       fill="#deebf7" if n.merged else "#f0f0f0", outline="#9e9e9e")
        nf = ImageFont.load_default(size=max(5, int(min(FONT, box_h) * s)))
        draw.text((S(lay.x["ln"] + NODE_W / 2), S(n.y)), _short(f"{n.uid} {n.name}", 36), fill="black", font=nf,
                  anchor="mm")
    img.save(path, format="PNG", optimize=True)


# ---------------------------------------------------------------------------------------- taxonomy objects


def layout_of(tax, title: str | None = None) -> Layout:
    """The layout of a :class:`uniseg_cli.taxonomy.schema.Taxonomy`."""
    return layout_taxonomy({d: list(c) for d, c in tax.datasets.items()}, tax.mappings, tax.names, tax.weights,
                           title=title)


def render_taxonomy(tax, svg_path=None, png_path=None, title: str | None = None, png_scale: float = 2.0) -> Layout:
    """Write the picture of ``tax`` as SVG and/or PNG; returns the layout used."""
    from uniseg_cli.artifacts import atomic_write_text

    lay = layout_of(tax, title)
    if svg_path is not None:
        atomic_write_text(svg_path, to_svg(lay))
    if png_path is not None:
        to_png(lay, png_path, scale=png_scale)
    return lay


def node_rows(tax, datasets: Sequence[str] | None = None, name: str | None = None) -> list[dict]:
    """One entry per active unified node: its labels in each dataset (for ``uniseg taxonomy show``).

    Args:
        tax: the taxonomy.
        datasets: keep only these datasets (columns) and the nodes that have a label in one of them.
        name: keep nodes whose name or any member label contains this text (case-insensitive).

    Returns:
        ``[{"unified_id", "unified_name", "labels": {dataset: [label, ...]}, "label_ids": {dataset: [id, ...]},
        "weights": {dataset: [w, ...]}}]``
    """
    from uniseg_cli.errors import UsageError

    cols = list(datasets) if datasets else list(tax.datasets)
    unknown = [d for d in cols if d not in tax.datasets]
    if unknown:
        raise UsageError(f"--dataset {', '.join(unknown)}: not in this taxonomy",
                         hint=f"its datasets: {', '.join(tax.datasets)}")
    needle = (name or "").strip().lower()
    rows = []
    for u in tax.active_nodes():
        labels = {d: [tax.datasets[d][c] for c in np.flatnonzero(tax.mappings[d][:, u])] for d in cols}
        if datasets and not any(labels.values()):
            continue
        uname = tax.names.get(u, tax.default_name(u))
        if needle and needle not in uname.lower() and not any(needle in lab.lower() for v in labels.values() for lab in v):
            continue
        ids = {d: [int(c) for c in np.flatnonzero(tax.mappings[d][:, u])] for d in cols}
        weights = {d: [round(float(tax.weights[d][c, u]), 4) for c in ids[d]] for d in cols}
        rows.append({"unified_id": u, "unified_name": uname, "labels": labels, "label_ids": ids, "weights": weights})
    return rows


def show_table(tax, rows: list[dict], datasets: Sequence[str] | None = None, title: str | None = None):
    """A rich table of :func:`node_rows`: one row per unified node, one column per dataset.

    A label that maps to several nodes (split) is marked with ``*``.
    """
    from rich.table import Table

    cols = list(datasets) if datasets else list(tax.datasets)
    t = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    t.add_column("id", justify="right", no_wrap=True)
    t.add_column("unified node", overflow="fold")
    for d in cols:
        t.add_column(d, overflow="fold")
    for r in rows:
        u = r["unified_id"]
        cells = []
        for d in cols:
            parts = []
            for lab, c in zip(r["labels"][d], r["label_ids"][d]):
                parts.append(lab + ("*" if tax.mappings[d][c].sum() > 1 else ""))
            cells.append(", ".join(parts) if parts else "-")
        t.add_row(str(u), r["unified_name"], *cells)
    return t
