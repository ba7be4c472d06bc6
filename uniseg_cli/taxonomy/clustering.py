"""Node clustering: the number of unified nodes and the initial mapping (METHOD.md §3, "Appendix B").

Input: the cross-dataset pixel confusion ``hist[a][b]`` (n_a × n_b) of dataset a's ground truth
against dataset b's head, for every ordered pair (a, b) including a == b.

1. Rates ``R_a^b[i, j] = hist[a][b][i, j] / Σ_j' hist[a][b][i, j']`` (a row of zeros stays zero)
   and self-accuracy ``acc_a(i) = R_a^a[i, i]`` — written correctly for *every* dataset (the
   public code stored it at the wrong row, so it was 0 for every non-Cityscapes class: bug B2).
2. A pair (a_i, b_j), a ≠ b, is admissible iff ``R_a^b[i,j] > max(acc_a(i) − τ, 0)`` and
   ``R_b^a[j,i] > max(acc_b(j) − τ, 0)``, and it is *valid* if also ``cost({a_i, b_j}) ≤
   pair_cost_threshold`` (0.05).
3. ``cost(C) = Σ_{c∈C} [acc(c) − mean_{c'∈C} R_{src(c)}^{src(c')}[idx(c), idx(c')]]``: the recall
   lost when c's pixels are credited to any member of C (the mean includes c itself).
4. Growth: breadth-first over dataset tuples; a cluster is extended only with a label of a later
   dataset that forms a valid pair with *every* member; extensions must cost ≤
   ``extension_cost_threshold`` (τ = 0.4 in the public code), and per size only the
   ``max_new_nodes[size]`` cheapest are kept.
5. Selection: a real 0/1 integer program (scipy ``milp``/HiGHS, ``integrality=1``) minimising
   ``Σ_C x_C (|C|·cost(C) − λ(|C| − 1))`` subject to every label lying in at most one selected
   cluster. N = selected clusters + labels left alone.

What this criterion can and cannot merge
----------------------------------------
Every cluster holds at most one label per dataset, so it only ever proposes *one-to-one*
equivalences. A coarse label c of dataset A whose pixels another dataset B splits into fine labels
f1, f2 is normally left alone together with f1 and f2: with an even split ``R_A^B[c, f1] ≈
acc_A(c)/2``, so ``cost({c, f1}) ≈ acc_A(c)/4`` (≈ 0.2 for a good head) is far above 0.05, and the
admissibility test ``R_A^B[c, f1] > acc_A(c) − τ`` also fails once acc_A(c) > 2τ. The three labels
become three nodes, so the coarse-vs-fine relation stays *recoverable*: the GNN/UOT stage, whose
mappings are many-to-one, can later map c to both f1's and f2's nodes. Merging c with f1 would
instead have hidden f2's pixels inside "c = f1". Only when one fine label takes nearly all of the
coarse label's pixels (share s with ``acc·(1 − s)/2 ≲ 0.05``, i.e. s ≳ 0.9 for acc ≈ 0.9) is c
merged with that dominant fine label; the rare remainder stays its own node. Labels never seen in
the held-out images (all-zero rows) have acc = 0 and are never admissible, so they stay alone.
Because every cluster has ≤ 1 label of the largest dataset, ``max_d n_d ≤ N ≤ Σ_d n_d``.

A false merge the rates cannot rule out: every head must give every pixel one of *its* labels, so a
concept that dataset B never annotates is still predicted as some B label. If that B label's pixels
are in turn predicted as the A label (a driving ``car`` and an indoor ``bed`` that the shared
embedding confuses), the pair passes both tests at a low cost: the rates cannot tell "B's head has
no class for this" from "B's class is the same". Low self-accuracy makes this worse, because the
admissibility bound ``max(acc − τ, 0)`` is then 0. A well-trained stage 1 reduces such merges; the
GNN/UOT stage re-solves the mapping and can undo them.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from uniseg_cli.errors import UnisegError, UsageError

#: The public code's caps on candidates kept per cluster size (size 2: 3500 pairs).
DEFAULT_MAX_NEW_NODES: tuple[int, ...] = (3500, 4000, 3000, 1500, 1000, 500)  # sizes 2, 3, 4, 5, 6, 7 (and up)


@dataclasses.dataclass(frozen=True)
class ClusterParams:
    """Thresholds of Appendix B (defaults: the public code's values)."""

    tau: float = 0.4  # admissibility slack: R_a^b[i,j] > max(acc_a(i) - tau, 0) both ways
    pair_cost_threshold: float = 0.05  # a valid pair costs at most this
    extension_cost_threshold: float = 0.4  # a grown cluster (size >= 3) costs at most this (tau in the public code)
    merge_reward: float = 0.5  # lambda: the objective rewards each merge by this much
    max_new_nodes: tuple[int, ...] = DEFAULT_MAX_NEW_NODES  # candidates kept per size 2, 3, ...; the last repeats
    time_limit_s: float = 120.0  # HiGHS time limit for the integer program
    min_centroid_cos: float = 0.0  # a pair also needs this cosine between the labels' mean pixel embeddings (0: off, public code)
    min_generic_share: float = 0.0  # a pair (and a union part) needs this appearance support (evidence.py; 0: off)
    unions: bool = False  # link a coarse label to the nodes of the finer labels it is the union of (off: public code)
    union_min_back: float = 0.8  # union part f of dataset B: the coarse label's head calls >= this share of f's pixels c
    union_min_part: float = 0.005  # ... and B's head calls >= this share of c's pixels f
    union_cover: float = 0.8  # the parts together take >= this share of c's pixels
    # clusters of 3+ grow from every admissible pair and over admissible pairs, judged by the
    # extension cost alone (off: the public code, which grows only from and over cheap valid pairs)
    grow_from_admissible: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must lie in [0, 1], got {self.tau}")
        if self.pair_cost_threshold < 0 or self.extension_cost_threshold < 0:
            raise ValueError("cost thresholds must be >= 0")
        if self.merge_reward < 0:
            raise ValueError(f"merge_reward must be >= 0, got {self.merge_reward}")
        if not self.max_new_nodes or any(int(m) < 0 for m in self.max_new_nodes):
            raise ValueError("max_new_nodes must be a non-empty list of counts >= 0")
        if self.time_limit_s <= 0:
            raise ValueError("time_limit_s must be > 0")
        for name in ("min_generic_share", "union_min_back", "union_min_part", "union_cover"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def cap(self, size: int) -> int:
        caps = self.max_new_nodes
        return int(caps[min(size - 2, len(caps) - 1)])


@dataclasses.dataclass
class ClusterResult:
    """The selected clusters and the initial mapping.

    ``clusters``: each a tuple of (dataset index, label id), datasets ascending; the unified node
    ids are: the clusters in this order, then the labels left alone in (dataset, label) order.
    """

    datasets: list[str]
    num_classes: list[int]
    clusters: list[tuple[tuple[int, int], ...]]
    cluster_costs: list[float]
    singletons: list[tuple[int, int]]
    objective: float
    mip_status: str
    candidates_per_size: dict[int, int]
    timings: dict[str, float]
    #: union links added after the selection: {"label": (d, c), "parts": [(d2, f), ...], "cover": share}
    unions: list[dict] = dataclasses.field(default_factory=list)
    #: the nodes after :func:`add_unions` (None: the clusters, then the singletons)
    node_members: list[tuple[tuple[int, int], ...]] | None = None

    @property
    def num_nodes(self) -> int:
        return len(self.nodes())

    def nodes(self) -> list[tuple[tuple[int, int], ...]]:
        """Members of every unified node, in node order (a union label is a member of several)."""
        if self.node_members is not None:
            return list(self.node_members)
        return list(self.clusters) + [(s,) for s in self.singletons]

    def mappings(self) -> dict[str, np.ndarray]:
        """Boolean (n_d, N) per dataset: label c of d is mapped to node u."""
        out = {d: np.zeros((n, self.num_nodes), dtype=bool) for d, n in zip(self.datasets, self.num_classes)}
        for u, members in enumerate(self.nodes()):
            for d, c in members:
                out[self.datasets[d]][c, u] = True
        return out

    def merge_counts(self) -> dict[str, dict[str, int]]:
        """merges[a][b] (a before b in dataset order): selected clusters holding a label of both."""
        out = {a: {b: 0 for b in self.datasets[i + 1:]} for i, a in enumerate(self.datasets[:-1])}
        for members in self.clusters:
            ds = sorted(d for d, _ in members)
            for x in range(len(ds)):
                for y in range(x + 1, len(ds)):
                    out[self.datasets[ds[x]]][self.datasets[ds[y]]] += 1
        return out


# --------------------------------------------------------------------------------------------- rates


def _check_hist(hist: Sequence[Sequence[np.ndarray]], num_classes: Sequence[int] | None = None) -> list[int]:
    k = len(hist)
    if k == 0:
        raise UsageError("the confusion has no datasets", hint="estimate-nodes needs at least one training dataset.")
    sizes = list(num_classes) if num_classes is not None else [np.asarray(hist[a][a]).shape[0] for a in range(k)]
    for a in range(k):
        if len(hist[a]) != k:
            raise UsageError(f"confusion row {a} has {len(hist[a])} heads, expected {k}")
        for b in range(k):
            h = np.asarray(hist[a][b])
            if h.shape != (sizes[a], sizes[b]):
                raise UsageError(f"confusion[{a}][{b}] has shape {h.shape}, expected {(sizes[a], sizes[b])}")
            if not np.all(np.isfinite(h)) or (h < 0).any():
                raise UsageError(f"confusion[{a}][{b}] holds negative or non-finite counts")
    return sizes


def rates_from_confusion(hist: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    """R[a][b] = row-normalised hist[a][b] (float64); rows without pixels stay all zero."""
    _check_hist(hist)
    out = []
    for row in hist:
        r = []
        for h in row:
            h = np.asarray(h, dtype=np.float64)
            s = h.sum(axis=1, keepdims=True)
            r.append(np.divide(h, s, out=np.zeros_like(h), where=s > 0))
        out.append(r)
    return out


def self_accuracy(rates: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """acc_d(i) = R_d^d[i, i] for every dataset d (bug B2 fixed: the right entry for all datasets)."""
    return [np.diag(np.asarray(rates[d][d])).astype(np.float64).copy() for d in range(len(rates))]


def admissible(rates, acc, a: int, b: int, tau: float) -> np.ndarray:
    """Bool (n_a, n_b): R_a^b[i,j] > max(acc_a(i) − τ, 0) and R_b^a[j,i] > max(acc_b(j) − τ, 0)."""
    fwd = rates[a][b] > np.maximum(acc[a] - tau, 0.0)[:, None]
    bwd = rates[b][a].T > np.maximum(acc[b] - tau, 0.0)[None, :]
    return fwd & bwd


def cluster_cost(members: Sequence[tuple[int, int]], rates, acc) -> float:
    """cost(C) = Σ_c [acc(c) − mean_{c'∈C} R_{src(c)}^{src(c')}[idx(c), idx(c')]] (reference form)."""
    total = 0.0
    for da, i in members:
        mean = np.mean([rates[da][db][i, j] for db, j in members])
        total += acc[da][i] - mean
    return float(total)


def global_rates(rates) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(R (L, L), acc (L,), src (L,), offsets (k+1,)): all blocks in one matrix, rows in dataset order."""
    sizes = [rates[a][a].shape[0] for a in range(len(rates))]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    R = np.block([[np.asarray(rates[a][b], dtype=np.float64) for b in range(len(sizes))] for a in range(len(sizes))])
    if R.size == 0:
        R = np.zeros((int(offsets[-1]),) * 2)
    src = np.repeat(np.arange(len(sizes)), sizes)
    return R, np.diag(R).copy(), src, offsets


# --------------------------------------------------------------------------------------------- candidates


def valid_pairs(R: np.ndarray, acc: np.ndarray, src: np.ndarray, p: ClusterParams,
                cos: np.ndarray | None = None, support: np.ndarray | None = None,
                cost_cut: bool = True) -> np.ndarray:
    """Bool (L, L), symmetric: admissible pairs of different datasets whose cost ≤ the pair threshold
    (``cost_cut=False``: every admissible pair, whatever its cost).

    With ``cos`` (L, L) and ``p.min_centroid_cos > 0`` a pair must also look alike: the cosine of
    the two labels' mean pixel embeddings on held-out images must reach the threshold. This rules
    out the cross-domain false merges the rates cannot (see the module docstring): a driving
    ``car`` and an indoor ``bed`` are predicted as each other by heads that never saw the other,
    but their pixels embed far apart.

    With ``support`` (L, L) (:func:`uniseg_cli.taxonomy.evidence.pair_support`) and
    ``p.min_generic_share > 0`` a pair must also be supported by the appearance evidence.
    """
    thr = np.maximum(acc - p.tau, 0.0)
    fwd = R > thr[:, None]
    adm = fwd & fwd.T & (src[:, None] != src[None, :])
    if cos is not None and p.min_centroid_cos > 0:
        adm &= np.asarray(cos) >= p.min_centroid_cos
    if support is not None and p.min_generic_share > 0:
        adm &= np.asarray(support) >= p.min_generic_share
    if not cost_cut:
        return adm
    pair_cost = 0.5 * (acc[:, None] + acc[None, :]) - 0.5 * (R + R.T)
    # 1e-12: the cost of an exact tie is computed two ways; do not let rounding decide it
    return adm & (pair_cost <= p.pair_cost_threshold + 1e-12)


def _keep_cheapest(clusters: np.ndarray, costs: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    if len(costs) <= cap:
        order = np.lexsort(tuple(clusters.T[::-1]) + (costs,))
    else:
        order = np.lexsort(tuple(clusters.T[::-1]) + (costs,))[:cap]
    return clusters[order], costs[order]


def grow_candidates(R, acc, src, offsets, p: ClusterParams, cos: np.ndarray | None = None,
                    support: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate clusters per size: [(members int (m, k) global ids, costs (m,)) for k = 2, 3, ...].

    Members are sorted by dataset; a size-k cluster is only extended with labels of datasets after
    its last member's, so every cluster is generated once (breadth-first over dataset tuples).

    With the appearance gate (``support`` and ``p.min_generic_share > 0``) a pair candidate needs the
    support between its two labels, and a label joins a larger cluster when the rates accept it with
    *every* member and the appearance supports it with *at least one* (a chain): the support of two
    labels of the same concept in two far-apart domains can be low while each is close to a third
    dataset's label. With ``p.grow_from_admissible`` clusters of 3+ grow from every supported
    admissible pair and over admissible pairs, judged by the extension cost alone: a true
    three-dataset concept whose one pair costs just over ``pair_cost_threshold`` is still found,
    while the pair candidates themselves stay the cheap valid ones.
    """
    V = valid_pairs(R, acc, src, p, cos, support)
    gate = support is not None and p.min_generic_share > 0
    grow_ok = valid_pairs(R, acc, src, p, cos, None, cost_cut=not p.grow_from_admissible)  # rates (and cos) only
    linked = (np.asarray(support) >= p.min_generic_share) if gate else np.ones_like(V)

    def pairs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gi, gj = np.nonzero(np.triu(mask))
        pc = 0.5 * (acc[gi] + acc[gj]) - 0.5 * (R[gi, gj] + R[gj, gi])
        return _keep_cheapest(np.stack([gi, gj], axis=1).astype(np.int64), pc, p.cap(2))

    cl, costs = pairs(V)
    levels = [(cl, costs)]
    if p.grow_from_admissible:
        cl, _ = pairs(grow_ok & linked)  # the seeds of growth, not candidates themselves
    k_ds = len(offsets) - 1
    L = R.shape[0]
    while len(cl) and cl.shape[1] < k_ds:
        k = cl.shape[1]
        sub = R[cl[:, :, None], cl[:, None, :]]  # (m, k, k)
        sum_acc = acc[cl].sum(axis=1)  # (m,)
        sum_sub = sub.sum(axis=(1, 2))
        allowed = grow_ok[cl].all(axis=1) & linked[cl].any(axis=1)  # (m, L): rates accept every member, support one
        first_after = offsets[src[cl[:, -1]] + 1]  # only later datasets
        allowed &= np.arange(L)[None, :] >= first_after[:, None]
        ci, h = np.nonzero(allowed)
        if len(ci) == 0:
            break
        cross = R[cl[ci], h[:, None]].sum(axis=1) + R[h[:, None], cl[ci]].sum(axis=1)
        new_cost = sum_acc[ci] + acc[h] - (sum_sub[ci] + cross + acc[h]) / (k + 1)
        ok = new_cost <= p.extension_cost_threshold + 1e-12
        new = np.concatenate([cl[ci[ok]], h[ok, None]], axis=1)
        cl, costs = _keep_cheapest(new, new_cost[ok], p.cap(k + 1))
        if len(cl) == 0:
            break
        levels.append((cl, costs))
    return levels


# --------------------------------------------------------------------------------------------- selection


@dataclasses.dataclass
class Selection:
    """The integer program's answer: ``chosen`` indexes the candidates; ``x`` is HiGHS's raw solution."""

    chosen: list[int]
    objective: float
    status: str
    x: np.ndarray  # (n_candidates,) raw values (0 for candidates left out as never beneficial)
    coef: np.ndarray  # (n_candidates,) objective coefficient of each candidate


def select_clusters(clusters: list[np.ndarray], costs: np.ndarray, num_labels: int, p: ClusterParams) -> Selection:
    """Solve the 0/1 program over candidate clusters (global label ids).

    Minimise Σ_C x_C (|C|·cost(C) − λ(|C| − 1)) s.t. Σ_{C∋l} x_C ≤ 1 for every label l, x ∈ {0,1}.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csc_array

    sizes = np.array([len(c) for c in clusters], dtype=np.float64)
    coef = sizes * np.asarray(costs, dtype=np.float64) - p.merge_reward * (sizes - 1)
    # A cluster with coef >= 0 never improves a packing (x_C = 0 is feasible and no worse), so
    # leaving it out keeps the program exact and small.
    use = np.nonzero(coef < 0)[0]
    x_full = np.zeros(len(clusters))
    if len(use) == 0:
        return Selection([], 0.0, "no beneficial candidate", x_full, coef)
    rows = np.concatenate([np.asarray(clusters[i], dtype=np.int64) for i in use])
    cols = np.repeat(np.arange(len(use)), [len(clusters[i]) for i in use])
    A = csc_array((np.ones(len(rows)), (rows, cols)), shape=(num_labels, len(use)))
    res = milp(
        coef[use],
        constraints=LinearConstraint(A, -np.inf, 1.0),
        integrality=np.ones(len(use)),
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": float(p.time_limit_s), "mip_rel_gap": 0.0, "presolve": True},
    )
    if res.x is None:
        raise UnisegError(
            f"the cluster-selection integer program found no solution ({res.message})",
            hint="raise --time-limit-s, or lower max_new_nodes to shrink the program.",
        )
    x_full[use] = res.x
    chosen = [int(i) for i in np.nonzero(np.round(x_full) == 1)[0]]
    status = "optimal" if res.status == 0 else f"feasible ({res.message})"
    return Selection(chosen, float(coef[chosen].sum()), status, x_full, coef)


def estimate_nodes(
    hist: Sequence[Sequence[np.ndarray]], datasets: Sequence[str], params: ClusterParams | None = None,
    centroid_cos: np.ndarray | None = None, support: np.ndarray | None = None,
) -> ClusterResult:
    """Appendix B end to end: confusion → rates → candidates → integer program → nodes.

    Args:
        hist: hist[a][b] float/int (n_a, n_b) pixel counts, a's ground truth vs b's head argmax.
        datasets: names, in the order of ``hist``.
        params: thresholds (defaults: the public code's).
        centroid_cos: optional (L, L) cosine of the labels' mean pixel embeddings, rows in dataset
            order; used when ``params.min_centroid_cos > 0``.
        support: optional (L, L) appearance support (evidence.py); gates pairs when
            ``params.min_generic_share > 0`` and union parts when ``params.unions``.

    Returns:
        A :class:`ClusterResult`; ``result.mappings()`` gives bool (n_d, N) per dataset.
    """
    p = params or ClusterParams()
    p.validate()
    if len(datasets) != len(hist):
        raise UsageError(f"{len(datasets)} dataset names for a confusion over {len(hist)} datasets")
    sizes = _check_hist(hist)
    t0 = time.perf_counter()
    rates = rates_from_confusion(hist)
    R, acc, src, offsets = global_rates(rates)
    t1 = time.perf_counter()
    levels = grow_candidates(R, acc, src, offsets, p, centroid_cos, support)
    t2 = time.perf_counter()
    clusters = [row for cl, _ in levels for row in cl]
    costs = np.concatenate([c for _, c in levels]) if levels else np.zeros(0)
    selection = select_clusters(clusters, costs, int(offsets[-1]), p)
    chosen, objective, status = list(selection.chosen), selection.objective, selection.status
    t3 = time.perf_counter()

    def local(g: int) -> tuple[int, int]:
        return int(src[g]), int(g - offsets[src[g]])

    chosen.sort(key=lambda i: tuple(clusters[i]))
    used = np.zeros(int(offsets[-1]), dtype=bool)
    sel = []
    for i in chosen:
        used[clusters[i]] = True
        sel.append(tuple(local(int(g)) for g in clusters[i]))
    res = ClusterResult(
        datasets=list(datasets),
        num_classes=sizes,
        clusters=sel,
        cluster_costs=[float(costs[i]) for i in chosen],
        singletons=[local(int(g)) for g in np.nonzero(~used)[0]],
        objective=objective,
        mip_status=status,
        candidates_per_size={int(cl.shape[1]): int(len(cl)) for cl, _ in levels},
        timings={"rates_s": t1 - t0, "growth_s": t2 - t1, "selection_s": t3 - t2},
    )
    return add_unions(res, rates, support, p) if p.unions else res


def add_unions(res: ClusterResult, rates, support: np.ndarray | None, p: ClusterParams) -> ClusterResult:
    """Link every coarse label to the nodes of the finer labels it is the union of (many-to-many).

    Label c of dataset A is the union of labels f_1..f_k (k >= 2) of dataset B when, for each part,
    A's head calls at least ``union_min_back`` of f_i's pixels c, B's head calls at least
    ``union_min_part`` of c's pixels f_i, and (with ``support`` and ``min_generic_share > 0``)
    the appearance evidence supports the pair; and the parts take at least ``union_cover`` of c's
    pixels. Then c joins every node of every part that holds no label of A yet (a node keeps at most
    one label per dataset). A node that held only c is dropped, since the parts' nodes now carry its
    pixels. citydrive ``road`` = vistadrive ``Road`` + ``Lane Marking - General`` +
    ``Lane Marking - Crosswalk`` is such a union; Appendix B leaves all four apart
    (module docstring), and without the appearance gate an indoor ``table`` that both driving
    heads confuse with the lane markings would pass the rates alike.
    """
    R, _, src, offsets = global_rates(rates)
    gate = support is not None and p.min_generic_share > 0
    nodes = [dict(m) for m in res.nodes()]  # node -> {dataset: label}
    where: dict[tuple[int, int], list[int]] = {}
    for u, m in enumerate(nodes):
        for d, c in m.items():
            where.setdefault((d, c), []).append(u)
    own = {key: list(us) for key, us in where.items()}
    unions, coarse = [], set()
    k = len(offsets) - 1
    for a in range(k):
        for c in range(int(offsets[a + 1] - offsets[a])):
            gc = int(offsets[a] + c)
            for b in range(k):
                if b == a:
                    continue
                fs = np.arange(offsets[b], offsets[b + 1])
                ok = (R[fs, gc] >= p.union_min_back) & (R[gc, fs] >= p.union_min_part)
                if gate:
                    ok &= np.asarray(support)[gc, fs] >= p.min_generic_share
                parts = fs[ok]
                cover = float(R[gc, parts].sum())
                if len(parts) < 2 or cover < p.union_cover:
                    continue
                added = []
                for g in parts:
                    f = int(g - offsets[b])
                    for u in where.get((b, f), []):
                        if a not in nodes[u]:
                            nodes[u][a] = c
                            where.setdefault((a, c), []).append(u)
                            added.append(u)
                if added:
                    unions.append({"label": (a, c), "parts": [(b, int(g - offsets[b])) for g in parts],
                                   "cover": round(cover, 4)})
                    coarse.add((a, c))
    drop = {u for key in coarse for u in own.get(key, []) if nodes[u] == {key[0]: key[1]}}
    kept = [tuple(sorted(m.items())) for u, m in enumerate(nodes) if u not in drop and m]
    return dataclasses.replace(res, unions=unions, node_members=kept)
