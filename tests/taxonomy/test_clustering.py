"""Appendix B node clustering: hand-computed costs, planted clusters, bounds on N, the integer program."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniseg_cli.errors import UsageError
from uniseg_cli.taxonomy.clustering import (
    ClusterParams,
    admissible,
    cluster_cost,
    estimate_nodes,
    global_rates,
    grow_candidates,
    rates_from_confusion,
    select_clusters,
    self_accuracy,
)
from uniseg_cli.taxonomy.confusion import random_world, read_confusion, simulate_confusion, write_confusion

# Two datasets A, B with two classes each; rows = ground truth, columns = head prediction (100 px per class).
TOY = [
    [np.array([[90, 10], [20, 80]]), np.array([[85, 15], [30, 70]])],
    [np.array([[93, 7], [5, 95]]), np.array([[95, 5], [10, 90]])],
]


def test_rates_and_self_accuracy_of_every_dataset():
    R = rates_from_confusion(TOY)
    np.testing.assert_allclose(R[0][1], [[0.85, 0.15], [0.30, 0.70]])
    acc = self_accuracy(R)
    # B2: the second dataset's self-accuracy is its own diagonal, not zero
    np.testing.assert_allclose(acc[0], [0.90, 0.80])
    np.testing.assert_allclose(acc[1], [0.95, 0.90])


def test_admissibility_by_hand():
    R = rates_from_confusion(TOY)
    acc = self_accuracy(R)
    # tau 0.4: A0~B0 (0.85 > 0.5, 0.93 > 0.55) and A1~B1 (0.70 > 0.4, 0.95 > 0.5); off-diagonal fail
    np.testing.assert_array_equal(admissible(R, acc, 0, 1, 0.4), [[True, False], [False, True]])
    # tau 0.1: A1~B1 needs 0.70 > 0.70 (strict) -> no; A0~B0 needs 0.85 > 0.8 and 0.93 > 0.85 -> yes
    np.testing.assert_array_equal(admissible(R, acc, 0, 1, 0.1), [[True, False], [False, False]])
    # a row without pixels (acc 0) is never admissible: R > max(0 - tau, 0) = 0 fails
    empty = [[np.array([[0, 0], [20, 80]]), TOY[0][1] * np.array([[0], [1]])], TOY[1]]
    R2 = rates_from_confusion(empty)
    assert not admissible(R2, self_accuracy(R2), 0, 1, 0.4)[0].any()


def test_cost_by_hand():
    R = rates_from_confusion(TOY)
    acc = self_accuracy(R)
    # cost({A0,B0}) = [0.90 - (0.90 + 0.85)/2] + [0.95 - (0.93 + 0.95)/2] = 0.025 + 0.010
    assert cluster_cost([(0, 0), (1, 0)], R, acc) == pytest.approx(0.035)
    assert cluster_cost([(0, 1), (1, 1)], R, acc) == pytest.approx(0.05 - 0.025)
    assert cluster_cost([(0, 0)], R, acc) == pytest.approx(0.0)  # a label alone loses nothing
    res = estimate_nodes(TOY, ["A", "B"])
    assert res.clusters == [((0, 0), (1, 0)), ((0, 1), (1, 1))]
    assert res.num_nodes == 2
    assert res.objective == pytest.approx((2 * 0.035 - 0.5) + (2 * 0.025 - 0.5))
    # a tighter pair threshold drops the A0~B0 pair (cost 0.035) but keeps A1~B1 (0.025)
    res = estimate_nodes(TOY, ["A", "B"], ClusterParams(pair_cost_threshold=0.03))
    assert res.clusters == [((0, 1), (1, 1))] and res.num_nodes == 3
    assert res.merge_counts() == {"A": {"B": 1}}


def test_vectorised_growth_costs_match_the_reference_formula():
    rng = np.random.default_rng(3)
    M = random_world([6, 9, 7, 5], 14, rng)
    H = simulate_confusion(M, rng, shift=1.0)
    R = rates_from_confusion(H)
    acc = self_accuracy(R)
    Rg, accg, src, off = global_rates(R)
    levels = grow_candidates(Rg, accg, src, off, ClusterParams())
    assert len(levels) >= 3  # the world is easy enough to grow clusters of 4
    for cl, costs in levels:
        for members, c in zip(cl, costs):
            local = [(int(src[g]), int(g - off[src[g]])) for g in members]
            assert c == pytest.approx(cluster_cost(local, R, acc), abs=1e-12)
            assert len({d for d, _ in local}) == len(local)  # one label per dataset


def _planted(names, classes, universal, seed=0):
    memb = []
    for cls in classes:
        m = np.zeros((len(cls), len(universal)), dtype=bool)
        for i, parts in enumerate(cls.values()):
            for u in parts:
                m[i, universal.index(u)] = True
        memb.append(m)
    rng = np.random.default_rng(seed)
    mass = [np.full(len(universal), 1000.0) for _ in classes]  # an even coarse-vs-fine split
    return simulate_confusion(memb, rng, acc_range=(0.75, 0.95), shift=1.0, mass=mass)


def test_planted_equal_classes_and_coarse_fine_split_are_recovered():
    universal = ["road", "sky", "car", "truck", "person", "tree", "building"]
    A = {"road": ["road"], "sky": ["sky"], "vehicle": ["car", "truck"], "person": ["person"], "tree": ["tree"]}
    B = {"street": ["road"], "sky": ["sky"], "car": ["car"], "truck": ["truck"], "pedestrian": ["person"],
         "building": ["building"]}
    for seed in range(5):
        res = estimate_nodes(_planted(["A", "B"], [A, B], universal, seed), ["A", "B"])
        assert res.clusters == [((0, 0), (1, 0)), ((0, 1), (1, 1)), ((0, 3), (1, 4))], seed
        # the coarse label and both fine labels stay apart, so a later many-to-one mapping can relate them
        assert set(res.singletons) == {(0, 2), (0, 4), (1, 2), (1, 3), (1, 5)}
        assert res.num_nodes == 8


def test_coarse_label_merges_only_with_a_fine_label_that_dominates_it():
    # universal classes road, car, truck; A: road, vehicle (= car + truck); B: road, car, truck
    memb = [np.array([[1, 0, 0], [0, 1, 1]], bool), np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)]
    for car_share, merged in ((0.5, False), (0.7, False), (0.97, True)):
        mass = [np.array([2000.0, 2000 * car_share, 2000 * (1 - car_share)]), np.full(3, 1000.0)]
        H = simulate_confusion(memb, np.random.default_rng(1), acc_range=(0.9, 0.95), shift=1.0, mass=mass)
        res = estimate_nodes(H, ["A", "B"])
        assert (((0, 1), (1, 1)) in res.clusters) is merged, car_share
        assert (1, 2) in res.singletons  # the minority fine label always stays its own node


def test_planted_three_datasets_grow_to_full_clusters():
    universal = ["road", "sky", "car", "truck", "person", "grass"]
    A = {"road": ["road"], "sky": ["sky"], "vehicle": ["car", "truck"], "person": ["person"]}
    B = {"road": ["road"], "car": ["car"], "truck": ["truck"], "person": ["person"], "grass": ["grass"]}
    C = {"road": ["road"], "sky": ["sky"], "car": ["car"], "human": ["person"]}
    res = estimate_nodes(_planted("ABC", [A, B, C], universal), list("ABC"))
    assert sorted(res.clusters) == sorted([
        ((0, 0), (1, 0), (2, 0)), ((0, 1), (2, 1)), ((1, 1), (2, 2)), ((0, 3), (1, 3), (2, 3))])
    assert set(res.singletons) == {(0, 2), (1, 2), (1, 4)}
    m = res.mappings()
    assert all(v.sum(axis=1).tolist() == [1] * v.shape[0] for v in m.values())
    assert res.merge_counts() == {"A": {"B": 2, "C": 3}, "B": {"C": 3}}


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
    shift=st.floats(0.85, 1.0),
    tau=st.floats(0.0, 1.0),
    reward=st.floats(0.0, 2.0),
    raw=st.booleans(),
)
def test_node_count_between_largest_label_space_and_total(sizes, seed, shift, tau, reward, raw):
    rng = np.random.default_rng(seed)
    if raw:  # arbitrary counts, including empty rows
        H = [[rng.integers(0, 5, size=(a, b)).astype(float) for b in sizes] for a in sizes]
    else:
        H = simulate_confusion(random_world(sizes, max(sizes) + 3, rng), rng, shift=shift)
    p = ClusterParams(tau=tau, merge_reward=reward, extension_cost_threshold=1.0)
    res = estimate_nodes(H, [f"d{i}" for i in range(len(sizes))], p)
    assert max(sizes) <= res.num_nodes <= sum(sizes)
    for name, m in res.mappings().items():
        assert (m.sum(axis=1) == 1).all(), name  # every label in exactly one node
    cols = np.concatenate([m for m in res.mappings().values()], axis=0)
    assert (cols.sum(axis=0) >= 1).all()
    for members in res.clusters:  # at most one label per dataset per node
        assert len({d for d, _ in members}) == len(members)


def _packing_objective(clusters, coef, pick):
    labels = [g for i in pick for g in clusters[i]]
    return None if len(labels) != len(set(labels)) else float(sum(coef[i] for i in pick))


def test_integer_program_is_integral_and_beats_single_merges_and_the_lp():
    # an odd cycle of pairs: the LP relaxation takes x = 1/2 each (objective -0.75); only one may be chosen
    clusters = [np.array([0, 1]), np.array([1, 2]), np.array([0, 2])]
    sel = select_clusters(clusters, np.zeros(3), 3, ClusterParams())
    assert len(sel.chosen) == 1 and sel.objective == pytest.approx(-0.5)
    np.testing.assert_allclose(sel.x, np.round(sel.x), atol=1e-9)

    rng = np.random.default_rng(7)
    M = random_world([5, 6, 4, 5], 9, rng)
    H = simulate_confusion(M, rng, shift=0.97)
    p = ClusterParams(extension_cost_threshold=1.0, pair_cost_threshold=0.2, tau=0.6)
    R = rates_from_confusion(H)
    Rg, accg, src, off = global_rates(R)
    levels = grow_candidates(Rg, accg, src, off, p)
    clusters = [row for cl, _ in levels for row in cl]
    costs = np.concatenate([c for _, c in levels])
    sel = select_clusters(clusters, costs, int(off[-1]), p)
    assert sel.status == "optimal"
    np.testing.assert_allclose(sel.x, np.round(sel.x), atol=1e-9)  # integral, not a relaxation
    assert _packing_objective(clusters, sel.coef, sel.chosen) == pytest.approx(sel.objective)
    assert all(sel.objective <= c + 1e-9 for c in sel.coef)  # no single merge does better
    assert sel.objective <= 0.0
    # exact on the cheapest 14 candidates: brute force over every packing
    small = list(np.argsort(sel.coef)[:14])
    sub = [clusters[i] for i in small]
    sub_sel = select_clusters(sub, costs[small], int(off[-1]), p)
    best = min(
        v for r in range(len(sub) + 1) for pick in itertools.combinations(range(len(sub)), r)
        if (v := _packing_objective(sub, sub_sel.coef, pick)) is not None
    )
    assert sub_sel.objective == pytest.approx(best)


def test_bad_confusion_is_a_usage_error():
    with pytest.raises(UsageError, match=r"confusion\[0\]\[1\] has shape"):
        estimate_nodes([[np.ones((2, 2)), np.ones((2, 3))], [np.ones((2, 2)), np.ones((2, 2))]], ["a", "b"])
    with pytest.raises(UsageError, match="negative"):
        estimate_nodes([[-np.ones((2, 2))]], ["a"])
    with pytest.raises(UsageError, match="invalid|tau"):
        from uniseg_cli.config import build_params

        build_params(ClusterParams, {"tau": 3})


def test_confusion_file_round_trip(tmp_path):
    classes = {"A": ["x", "y"], "B": ["u", "v"]}
    write_confusion(tmp_path / "c.h5", TOY, classes, kind="node-estimate", run_id="abc", split={"split": "val"})
    H, cls, attrs = read_confusion(tmp_path / "c.h5")
    assert cls == classes and attrs["run_id"] == "abc" and attrs["kind"] == "node-estimate"
    np.testing.assert_array_equal(H[1][0], TOY[1][0])


def test_centroid_gate_blocks_a_cross_domain_pair_the_rates_accept():
    """Two heads that never saw each other's concept predict it as their own: the rates call it a pair."""
    from uniseg_cli.taxonomy.clustering import ClusterParams, estimate_nodes

    # dataset A: car, road; dataset B: bed, wall. A's head calls beds "car", B's head calls cars "bed".
    hist = [[np.array([[95.0, 5.0], [5.0, 95.0]]), np.array([[95.0, 5.0], [10.0, 90.0]])],
            [np.array([[94.0, 6.0], [8.0, 92.0]]), np.array([[96.0, 4.0], [4.0, 96.0]])]]
    plain = estimate_nodes(hist, ["A", "B"], ClusterParams())
    assert plain.num_nodes == 2  # both pairs merged on the rates alone
    cos = np.eye(4)
    cos[0, 2] = cos[2, 0] = 0.3  # car and bed pixels embed far apart
    cos[1, 3] = cos[3, 1] = 0.97  # road and wall look alike (say)
    gated = estimate_nodes(hist, ["A", "B"], ClusterParams(min_centroid_cos=0.8), centroid_cos=cos)
    assert gated.num_nodes == 3
    merged = [m for m in gated.nodes() if len(m) == 2]
    assert merged == [((0, 1), (1, 1))]


def _union_world():
    """A: road, sky, table (an indoor label); B: Road, Lane Marking, Crosswalk, Sky.

    A's road = B's Road + Lane Marking + Crosswalk: A's head calls every B road part "road", B's head
    splits A's road pixels 80/12/8. B's head also calls A's table pixels markings, but A's head calls
    the markings "road", not "table": a one-way confusion is no union.
    """
    hist = [[np.diag([100.0, 100.0, 100.0]), np.array([[80.0, 12.0, 8.0, 0.0], [0.0, 0.0, 0.0, 100.0],
                                                      [0.0, 60.0, 40.0, 0.0]])],
            [np.array([[98.0, 0.0, 2.0], [97.0, 0.0, 3.0], [96.0, 0.0, 4.0], [0.0, 100.0, 0.0]]),
             np.diag([100.0, 100.0, 100.0, 100.0])]]
    return hist


def test_unions_link_a_coarse_label_to_every_part_and_drop_its_own_node():
    hist = _union_world()
    plain = estimate_nodes(hist, ["A", "B"], ClusterParams())
    m = plain.mappings()
    assert not (m["A"][0] & m["B"][1]).any()  # Appendix B never links road with Lane Marking
    res = estimate_nodes(hist, ["A", "B"], ClusterParams(unions=True))
    m = res.mappings()
    road_nodes = set(np.flatnonzero(m["A"][0]))
    parts = {int(np.flatnonzero(m["B"][f])[0]) for f in range(3)}
    assert road_nodes == parts  # road = Road + Lane Marking + Crosswalk, and nothing else
    assert res.num_nodes == plain.num_nodes - 1  # road's own node is gone
    assert (m["A"].sum(axis=0) <= 1).all() and (m["B"].sum(axis=0) <= 1).all()  # one label per dataset and node
    assert res.unions == [{"label": (0, 0), "parts": [(1, 0), (1, 1), (1, 2)], "cover": 1.0}]


def test_appearance_support_gates_union_parts_and_pairs():
    hist = _union_world()
    L = 7
    support = np.ones((L, L))
    support[0, 3 + 1] = support[3 + 1, 0] = 0.0  # road's pixels never look like the lane markings
    res = estimate_nodes(hist, ["A", "B"], ClusterParams(unions=True, min_generic_share=0.1), support=support)
    assert res.unions == [{"label": (0, 0), "parts": [(1, 0), (1, 2)], "cover": 0.88}]  # the gated part is left out
    res = estimate_nodes(hist, ["A", "B"], ClusterParams(unions=True, min_generic_share=0.1, union_cover=0.9),
                         support=support)
    assert res.unions == []  # the parts left no longer cover road
    # a pair the rates accept (sky ~ Sky) is refused when the images say the two never look alike
    support[1, 6] = support[6, 1] = 0.0
    gated = estimate_nodes(hist, ["A", "B"], ClusterParams(min_generic_share=0.1), support=support)
    assert all(len(mem) == 1 for mem in gated.nodes())


def test_union_leaves_out_a_part_the_coarse_head_only_guesses():
    """A: road, sky; B: Road, Lane Marking, Terrain, Sky. A has no terrain label, so its head calls
    60 % of B's terrain "road" (a forced guess), against 97-98 % for the true parts."""
    hist = [[np.diag([100.0, 100.0]), np.array([[70.0, 15.0, 10.0, 5.0], [0.0, 0.0, 0.0, 100.0]])],
            [np.array([[98.0, 2.0], [97.0, 3.0], [60.0, 40.0], [0.0, 100.0]]), np.diag([100.0] * 4)]]
    res = estimate_nodes(hist, ["A", "B"], ClusterParams(unions=True))
    assert res.unions == [{"label": (0, 0), "parts": [(1, 0), (1, 1)], "cover": 0.85}]
    loose = estimate_nodes(hist, ["A", "B"], ClusterParams(unions=True, union_min_back=0.5))
    assert loose.unions[0]["parts"] == [(1, 0), (1, 1), (1, 2)]  # the old default took terrain in


def _three_way(r_ab: float, r_ac: float = 0.95, r_bc: float = 0.95):
    """Datasets A, B, C with labels (x, y): x is one concept in all three, A's x and B's x are
    predicted as each other at rate ``r_ab`` (both ways); every y is its own (heads split it 50/50)."""
    r = {(0, 1): r_ab, (0, 2): r_ac, (1, 2): r_bc}
    hist = [[None] * 3 for _ in range(3)]
    for a in range(3):
        for b in range(3):
            rate = 0.95 if a == b else r[(min(a, b), max(a, b))]
            y_row = [5.0, 95.0] if a == b else [50.0, 50.0]
            hist[a][b] = np.array([[100 * rate, 100 * (1 - rate)], y_row])
    return hist


def test_appearance_gate_admits_a_label_through_a_chain_of_support():
    # x looks alike between A and B and between B and C, but A's and C's domains are far apart
    support = np.ones((6, 6))
    support[0, 4] = support[4, 0] = 0.0
    res = estimate_nodes(_three_way(0.95), list("ABC"), ClusterParams(min_generic_share=0.15), support=support)
    assert ((0, 0), (1, 0), (2, 0)) in res.clusters  # C's x joins through B's
    # a pair on its own still needs the support: with B's x gone, A's and C's are never merged
    support[2, :] = support[:, 2] = 0.0  # B's x (global id 2) now looks like nothing
    res = estimate_nodes(_three_way(0.95), list("ABC"), ClusterParams(min_generic_share=0.15), support=support)
    assert all(not ({(0, 0), (2, 0)} <= set(m)) for m in res.clusters)


def test_grow_from_admissible_finds_a_cluster_whose_one_pair_is_just_over_the_pair_cost():
    hist = _three_way(0.89)  # cost(A.x, B.x) = 0.95 - 0.89 = 0.06 > 0.05; the other two pairs cost 0
    plain = estimate_nodes(hist, list("ABC"), ClusterParams())
    assert all(len(m) == 2 for m in plain.clusters) and len(plain.clusters) == 1
    grown = estimate_nodes(hist, list("ABC"), ClusterParams(grow_from_admissible=True))
    assert grown.clusters == [((0, 0), (1, 0), (2, 0))]
    assert abs(grown.cluster_costs[0] - 0.04) < 1e-9  # 2 x (0.95 - (0.95 + 0.89 + 0.95) / 3)
    # the pair candidates themselves stay the cheap valid ones: no three-way cluster, no costly pair
    two = [h[:2] for h in hist[:2]]
    alone = estimate_nodes(two, ["A", "B"], ClusterParams(grow_from_admissible=True))
    assert alone.clusters == []
