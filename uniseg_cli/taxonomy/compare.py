"""Compare two taxonomies on the datasets both share.

Two labels of different datasets are *related* when they share a unified node. With ``a`` the
taxonomy under test and ``b`` the reference (e.g. the synthetic world's ``truth.parquet``):

- precision = |R_a ∩ R_b| / |R_a|, recall = |R_a ∩ R_b| / |R_b|, F1 their harmonic mean, over the
  unordered related pairs R of labels of different shared datasets;
- hard recall: the recall restricted to the *hard* relations of ``b``: related labels x (dataset
  d1), y (d2) whose node sets differ once restricted to the nodes both datasets use (unions, splits,
  different granularity — where label names mislead);
- exact share: the share of labels whose set of related labels (in the other shared datasets) is
  the same in ``a`` and ``b``;
- node counts, and every disagreeing pair.

Labels are matched by (dataset, label name); a dataset whose class sets differ is an error.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from uniseg_cli.errors import UsageError
from uniseg_cli.taxonomy.schema import Taxonomy

Label = tuple[str, str]  # (dataset, label name)


def _node_sets(tax: Taxonomy, datasets: list[str]) -> dict[Label, frozenset[int]]:
    return {(d, name): frozenset(tax.nodes_of(d, c)) for d in datasets for c, name in enumerate(tax.datasets[d])}


def relations(tax: Taxonomy, datasets: list[str]) -> set[frozenset[Label]]:
    """Unordered pairs of labels of different datasets that share a node."""
    out: set[frozenset[Label]] = set()
    for u in tax.active_nodes():
        mem = [(d, tax.datasets[d][c]) for d in datasets for c in np.flatnonzero(tax.mappings[d][:, u])]
        for x, y in combinations(mem, 2):
            if x[0] != y[0]:
                out.add(frozenset((x, y)))
    return out


def hard_relations(tax: Taxonomy, datasets: list[str]) -> set[frozenset[Label]]:
    """Related pairs whose node sets differ on the nodes both of their datasets use."""
    nodes = _node_sets(tax, datasets)
    used = {d: frozenset(np.flatnonzero(tax.mappings[d].any(axis=0)).tolist()) for d in datasets}
    hard = set()
    for pair in relations(tax, datasets):
        x, y = sorted(pair)
        common = used[x[0]] & used[y[0]]
        if nodes[x] & common != nodes[y] & common:
            hard.add(pair)
    return hard


def _ratio(n: int, d: int) -> float | None:
    return n / d if d else None


def compare(a: Taxonomy, b: Taxonomy) -> dict:
    """Scores of ``a`` against the reference ``b`` on their shared datasets (see module docstring)."""
    shared = [d for d in a.datasets if d in b.datasets]
    if len(shared) < 2:
        raise UsageError(
            f"the taxonomies share {len(shared)} dataset{'s' if len(shared) != 1 else ''} "
            f"({', '.join(shared) or 'none'}); relations need at least two",
            hint=f"A covers {', '.join(a.datasets)}; B covers {', '.join(b.datasets)}.")
    for d in shared:
        sa, sb = set(a.datasets[d]), set(b.datasets[d])
        if sa != sb:
            diff = sorted(sa ^ sb)[:6]
            raise UsageError(f"dataset {d!r} has different classes in the two taxonomies "
                             f"(e.g. {', '.join(map(repr, diff))})",
                             hint="compare taxonomies built on the same label spaces.")
    ra, rb = relations(a, shared), relations(b, shared)
    hard = hard_relations(b, shared)
    tp = len(ra & rb)
    precision, recall = _ratio(tp, len(ra)), _ratio(tp, len(rb))
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    if not ra and not rb:
        precision = recall = f1 = 1.0

    def partners(rel: set[frozenset[Label]]) -> dict[Label, set[Label]]:
        out: dict[Label, set[Label]] = {}
        for p in rel:
            x, y = tuple(p)
            out.setdefault(x, set()).add(y)
            out.setdefault(y, set()).add(x)
        return out

    pa, pb = partners(ra), partners(rb)
    labels = [(d, name) for d in shared for name in b.datasets[d]]
    exact = sum(pa.get(lab, set()) == pb.get(lab, set()) for lab in labels)

    def fmt(lab: Label) -> str:
        return f"{lab[0]}:{lab[1]}"

    disagreements = [{"labels": sorted(fmt(x) for x in p), "in": "A only", "hard": False} for p in ra - rb]
    disagreements += [{"labels": sorted(fmt(x) for x in p), "in": "B only", "hard": p in hard} for p in rb - ra]
    disagreements.sort(key=lambda e: (e["in"], e["labels"]))

    def nodes_on(tax: Taxonomy) -> int:
        return int(np.sum(np.any([tax.mappings[d].any(axis=0) for d in shared], axis=0)))

    return {
        "datasets": shared,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "hard_recall": _ratio(len(ra & hard), len(hard)),
        "exact_share": _ratio(exact, len(labels)),
        "relations": {"a": len(ra), "b": len(rb), "both": tp, "hard_b": len(hard), "hard_found": len(ra & hard)},
        "labels": len(labels),
        "labels_exact": int(exact),
        "nodes": {"a": nodes_on(a), "b": nodes_on(b), "a_total": a.num_nodes, "b_total": b.num_nodes},
        "disagreements": disagreements,
    }


def format_report(r: dict, name_a: str = "A", name_b: str = "B", max_rows: int = 30) -> str:
    """A human summary of :func:`compare`'s result."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"datasets compared: {', '.join(r['datasets'])}",
        f"nodes: {name_a} {r['nodes']['a']}, {name_b} {r['nodes']['b']} (on these datasets)",
        f"relations: {name_a} {r['relations']['a']}, {name_b} {r['relations']['b']}, shared {r['relations']['both']}",
        f"precision {pct(r['precision'])}  recall {pct(r['recall'])}  F1 {pct(r['f1'])}",
        f"hard-relation recall {pct(r['hard_recall'])} ({r['relations']['hard_found']}/{r['relations']['hard_b']})",
        f"labels with exactly the same relations: {pct(r['exact_share'])} ({r['labels_exact']}/{r['labels']})",
    ]
    dis = r["disagreements"]
    if dis:
        lines.append(f"disagreements ({len(dis)}):")
        for e in dis[:max_rows]:
            who = name_a if e["in"] == "A only" else name_b
            lines.append(f"  only in {who}: {' ~ '.join(e['labels'])}{'  [hard]' if e['hard'] else ''}")
        if len(dis) > max_rows:
            lines.append(f"  ... and {len(dis) - max_rows} more (--json lists all)")
    return "\n".join(lines)
