"""The UOT mapping solver: constraints, planted recovery, B3 repair, POT equality, state."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from uniseg_cli.errors import UsageError
from uniseg_cli.taxonomy.solver import MappingSolver, SolverConfig, discretise


def soft_from_logits(logits, temperature=0.07):
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=0).numpy()


def check_constraints(mappings, sizes, n_nodes):
    for m, n in zip(mappings, sizes):
        assert m.dtype == bool and m.shape == (n, n_nodes)
        assert (m.sum(axis=0) <= 1).all(), "a unified node has two labels in one dataset"
        assert (m.sum(axis=1) >= 1).all(), "a label has no unified node"


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n_nodes=st.integers(2, 12), n_datasets=st.integers(1, 3),
       min_link=st.sampled_from([0.0, 0.5]), scale=st.sampled_from([0.02, 1.0, 10.0]))
def test_constraints_hold_on_random_inputs(data, n_nodes, n_datasets, min_link, scale):
    sizes = [data.draw(st.integers(1, n_nodes)) for _ in range(n_datasets)]
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    soft = [soft_from_logits(rng.normal(0, scale, (n, n_nodes))) for n in sizes]
    solver = MappingSolver(SolverConfig(min_link_weight=min_link, num_iter_max=200))
    check_constraints(solver.solve(soft), sizes, n_nodes)
    check_constraints(solver.solve(soft), sizes, n_nodes)  # again with the EMA-updated β


def planted(rng, sizes, n_nodes, foreign_share=0.5):
    """A planted mapping: every label ≥ 1 node, some nodes absent from each dataset."""
    mappings = []
    for n in sizes:
        m = np.zeros((n, n_nodes), dtype=bool)
        nodes = rng.permutation(n_nodes)
        m[np.arange(n), nodes[:n]] = True  # every label gets one node
        rest = nodes[n:]
        extra = rest[rng.random(rest.size) > foreign_share]  # more nodes for some labels
        m[rng.integers(0, n, extra.size), extra] = True
        mappings.append(m)
    return mappings


def test_recovers_planted_mapping_exactly_from_sharp_adjacency():
    rng = np.random.default_rng(0)
    sizes, n_nodes = [5, 9, 3], 20
    truth = planted(rng, sizes, n_nodes)
    # adjacency logits as the GNN is initialised (0/1), plus small noise of a few training steps
    soft = [soft_from_logits(m.astype(float) + rng.normal(0, 0.005, m.shape)) for m in truth]
    got = MappingSolver().solve(soft)
    for g, t in zip(got, truth):
        np.testing.assert_array_equal(g, t)


def test_reference_mode_links_foreign_nodes_but_default_does_not():
    """METHOD §5.3: with slightly noisy foreign columns the reference maps (almost) every node."""
    rng = np.random.default_rng(1)
    sizes, n_nodes = [6, 4], 40
    truth = planted(rng, sizes, n_nodes, foreign_share=0.9)
    soft = [soft_from_logits(m.astype(float) + rng.normal(0, 0.02, m.shape)) for m in truth]
    ref = MappingSolver(SolverConfig.reference()).solve(soft)
    ours = MappingSolver().solve(soft)
    for r, o, t in zip(ref, ours, truth):
        assert r.any(axis=0).sum() > t.any(axis=0).sum()  # false links in the reference
        np.testing.assert_array_equal(o, t)
        check_constraints([r], [t.shape[0]], n_nodes)


def test_repair_steals_the_best_matching_node():
    # 4 nodes, 3 labels; argmax gives label 2 no node. Nodes 1, 2, 3 sit on label 0 (count 3),
    # node 3 has the most mass toward label 2 -> it moves (the reference's ascending sort took node 2).
    qbar = np.array([
        [0.00, 0.20, 0.00],
        [0.15, 0.00, 0.02],
        [0.14, 0.00, 0.00],
        [0.13, 0.00, 0.09],
    ])
    qbar = qbar / qbar.sum()
    soft = np.full((3, 4), 1 / 3)
    m = discretise(qbar, soft, prune_ratio=0.0, min_link_weight=0.0)
    assert m[2].tolist() == [False, False, False, True]
    assert m[0].tolist() == [False, True, True, False]
    assert m[1].tolist() == [True, False, False, False]


def test_repair_never_steals_a_labels_only_node():
    qbar = np.array([[0.3, 0.0, 0.29], [0.0, 0.3, 0.0], [0.0, 0.2, 0.01]])
    m = discretise(qbar / qbar.sum(), np.full((3, 3), 1 / 3), prune_ratio=0.0, min_link_weight=0.0)
    # label 2 is empty after argmax; node 0 matches it best but is label 0's only node, so the best
    # node of the two-node label 1 (node 2) moves
    assert m[:, 0].tolist() == [True, False, False]
    assert m[:, 1].tolist() == [False, True, False]
    assert m[:, 2].tolist() == [False, False, True]


def test_pruning_drops_weak_edges_of_multi_node_labels_and_keeps_the_best():
    qbar = np.array([[0.5, 0.0], [0.001, 0.0], [0.0, 0.3], [0.0, 0.2]])
    qbar = qbar / qbar.sum()
    m = discretise(qbar, np.full((2, 4), 0.5), prune_ratio=1.0, min_link_weight=0.0)
    assert m[0].tolist() == [True, False, False, False]  # node 1 is far below the mean entry
    assert m[1].tolist() == [False, False, True, True]


def test_numpy_backend_equals_pot():
    rng = np.random.default_rng(2)
    sizes, n_nodes = [4, 7, 11], 15
    soft = [soft_from_logits(rng.normal(0, 0.3, (n, n_nodes))) for n in sizes]
    a, b = MappingSolver(SolverConfig(backend="numpy")), MappingSolver(SolverConfig(backend="pot"))
    ma, mb = a.solve(soft), b.solve(soft)
    for pa, pb in zip(a.last_plans, b.last_plans):
        np.testing.assert_allclose(pa, pb, rtol=1e-6, atol=1e-12)
    for x, y in zip(ma, mb):
        np.testing.assert_array_equal(x, y)


def test_beta_ema_state_round_trip_through_json():
    rng = np.random.default_rng(3)
    soft = [soft_from_logits(rng.normal(0, 1, (n, 10))) for n in (3, 5)]
    solver = MappingSolver()
    solver.solve(soft)
    plans = solver.last_plans
    state = solver.state_dict()
    assert set(state) == {"beta.0", "beta.1"}
    np.testing.assert_allclose(state["beta.0"], 0.7 / 3 + 0.3 * plans[0].sum(axis=0))
    restored = MappingSolver()
    restored.load_state_dict({k: json.loads(json.dumps(v.tolist())) for k, v in state.items()})
    for x, y in zip(solver.solve(soft, update_state=False), restored.solve(soft, update_state=False)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(restored.state_dict()["beta.1"], state["beta.1"])
    fresh = MappingSolver()
    fresh.solve(soft, update_state=False)
    assert fresh.state_dict() == {}


def test_bad_inputs_raise_usage_errors():
    solver = MappingSolver()
    with pytest.raises(UsageError, match="only 3 unified nodes"):
        solver.solve([np.full((4, 3), 0.25)])
    with pytest.raises(UsageError, match="dataset #1 has 4 unified nodes"):
        solver.solve([np.full((2, 3), 0.5), np.full((2, 4), 0.5)])
    with pytest.raises(UsageError, match="negative or non-finite"):
        solver.solve([np.array([[np.nan, 1.0]])])
    solver.solve([np.full((2, 3), 0.5)])
    with pytest.raises(UsageError, match="target marginal for 2"):
        solver.solve([np.full((3, 3), 1 / 3)])
    with pytest.raises(UsageError, match="unexpected key"):
        solver.load_state_dict({"alpha": [1.0]})
    with pytest.raises(UsageError, match="reg must be > 0"):
        SolverConfig(reg=0)


def test_accepts_torch_tensors_with_grad():
    s = torch.softmax(torch.randn(3, 6, requires_grad=True) / 0.07, dim=0)
    (m,) = MappingSolver().solve([s])
    assert m.shape == (3, 6)
