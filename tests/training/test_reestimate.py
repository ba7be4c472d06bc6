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


def test_unmapped_nodes_are_negatives_in_stage3_loss():
    """A node dataset d does not use is pushed down on d's pixels (and only with the option on)."""
    import torch

    from uniseg_cli.models import UniSegHead
    from uniseg_cli.training.engine import Phase
    from uniseg_cli.training.unify import FINAL, UnifiedTask

    torch.manual_seed(0)
    D, N = 4, 3

    class Emb(torch.nn.Module):  # a fixed unit embedding, so only the prototypes matter
        def forward(self, x):
            e = torch.zeros(x.shape[0], D, 2, 2)
            e[:, 0] = 1.0
            return e

    m = torch.zeros(2, N)
    m[0, 0] = m[1, 1] = 1.0  # node 2 has no label in this dataset
    head = UniSegHead(N, D, [m])
    with torch.no_grad():
        head.prototypes.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [3.0, 0, 0, 0]]))
    task = UnifiedTask(Emb(), head, None, [1.0], ohem={"thresh": 1.0, "min_kept_ratio": 1.0})
    batch = {"image": torch.zeros(1, 3, 8, 8), "label": torch.zeros(1, 2, 2, dtype=torch.long),
             "dataset": torch.zeros(1, dtype=torch.long)}
    phase = Phase(FINAL, 1, meta=(("kind", FINAL),))

    def loss(neg):
        task.unmapped_negatives = neg
        head.prototypes.grad = None
        out = task.forward(batch, _info(phase))
        out["loss"].backward()
        return out["loss"].item(), head.prototypes.grad[2].clone()

    plain, g_plain = loss(0.0)
    neg, g_neg = loss(0.5)
    assert torch.all(g_plain == 0)  # without the option nothing touches node 2
    assert g_neg[0] > 0  # gradient descent lowers node 2's logit on these pixels
    assert neg > plain


def _info(phase):
    from uniseg_cli.training.engine import StepInfo

    return StepInfo(iteration=0, total=1, phase=phase, phase_index=0, phase_iter=0)
