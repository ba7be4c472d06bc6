"""Stage-3 mapping re-estimation from held-out pixels (training/unify.py::reestimate_mappings)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from uniseg_cli.training.unify import prune_mappings, reestimate_mappings


def test_union_label_gains_the_nodes_its_pixels_show_and_foreign_nodes_link_nowhere():
    # Dataset "city": labels road (0), curb (1), sky (2). Nodes: 0 road, 1 lane marking, 2 crosswalk,
    # 3 curb, 4 barrier, 5 sky, 6 bed (another domain), 7 unused.
    h = np.zeros((3, 8), np.int64)
    h[0, [0, 1, 2]] = [7000, 900, 600]  # road's pixels fall on road, lane and crosswalk nodes
    h[0, 6] = 3  # a few scattered pixels won by the indoor node
    h[1, [3, 4]] = [500, 400]  # curb = curb + barrier
    h[2, 5] = 5000
    h[2, 6] = 2
    old = np.zeros((3, 8), bool)
    old[0, 0] = old[1, 3] = old[2, 5] = True  # what the learned adjacency linked
    old[2, 7] = True  # a false link the images do not support
    (m,) = reestimate_mappings([old], [h], min_row_share=0.01, min_col_share=0.5, min_presence=0.002)
    want = np.zeros((3, 8), bool)
    want[0, [0, 1, 2]] = want[1, [3, 4]] = want[2, 5] = True
    assert (m == want).all()
    # The reference's pruning can only remove edges: road never gains lane/crosswalk.
    (p,) = prune_mappings([old], [h], 0.01)
    assert not p[0, 1] and not p[0, 2]


def test_label_without_pixels_keeps_a_previous_node():
    h = np.zeros((2, 4), np.int64)
    h[0, 0] = 100
    old = np.zeros((2, 4), bool)
    old[0, 0] = old[1, 2] = True
    (m,) = reestimate_mappings([old], [h])
    assert m[0, 0] and m[1, 2] and m.sum() == 2


def test_node_dominated_by_another_label_is_not_shared():
    # terrain's pixels are mostly predicted as the vegetation node: terrain keeps its own node.
    h = np.array([[800, 10], [300, 40]], np.int64)  # rows vegetation, terrain; nodes veg, terrain
    old = np.eye(2, dtype=bool)
    (m,) = reestimate_mappings([old], [h], min_presence=0.0)
    assert m.tolist() == [[True, False], [False, True]]


@given(st.integers(1, 6), st.integers(0, 6), st.data())
@settings(max_examples=80, deadline=None)
def test_invariants_hold_on_random_counts(n, extra, data):
    N = n + extra
    h = np.array(data.draw(st.lists(st.lists(st.integers(0, 50), min_size=N, max_size=N), min_size=n, max_size=n)))
    old = np.zeros((n, N), bool)
    old[np.arange(n), np.arange(n)] = True
    (m,) = reestimate_mappings([old], [h])
    assert m.shape == (n, N)
    assert (m.sum(axis=0) <= 1).all()  # a node has at most one label in the dataset
    assert m.any(axis=1).all()  # every label keeps at least one node
