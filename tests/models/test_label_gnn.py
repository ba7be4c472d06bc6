"""LabelGNN: a hand computation on a 5-node graph, gradients, initialisation from a mapping."""
import math

import numpy as np
import pytest
import torch

from uniseg_cli.errors import UsageError
from uniseg_cli.models import GNN_PRESETS, GNNConfig, LabelGNN


def hand_forward(gnn: LabelGNN) -> tuple[np.ndarray, np.ndarray]:
    """The module docstring's equations, node by node, in float64 numpy."""
    P = {n: p.detach().double().numpy() for n, p in gnn.named_parameters()}
    feats = gnn.label_features.double().numpy()
    sizes, T = gnn.dataset_sizes, gnn.config.temperature
    L, N = feats.shape[0], gnn.num_nodes
    owner = [d for d, n in enumerate(sizes) for _ in range(n)]
    x = [feats[c] + (P["dataset_embedding"][owner[c]] if "dataset_embedding" in P else 0) for c in range(L)]
    x += [P["unified_features"][u] for u in range(N)]
    S = np.zeros((L, N))
    for u in range(N):
        for c in range(L):
            same = [c2 for c2 in range(L) if owner[c2] == owner[c]]
            S[c, u] = math.exp(P["adjacency"][c, u] / T) / sum(math.exp(P["adjacency"][c2, u] / T) for c2 in same)
    neighbours = {c: [(L + u, S[c, u]) for u in range(N)] for c in range(L)}
    neighbours.update({L + u: [(c, S[c, u]) for c in range(L)] for u in range(N)})
    h = [np.maximum(P["linear_before.weight"] @ xi + P["linear_before.bias"], 0) for xi in x]
    for k in range(len(gnn.convs)):
        new = []
        for i in range(L + N):
            total = sum(w for _, w in neighbours[i])
            agg = sum(w * h[j] for j, w in neighbours[i]) / total
            pre = (P[f"convs.{k}.lin_root.weight"] @ h[i] + P[f"convs.{k}.lin_root.bias"]
                   + P[f"convs.{k}.lin_rel.weight"] @ agg)
            new.append(np.tanh(pre))
        h = new
    out = np.stack([P["linear_out.weight"] @ hi + P["linear_out.bias"] for hi in h])
    return out[L:], out[:L]


@pytest.mark.parametrize("dataset_embedding", [False, True])
def test_matches_a_hand_computation_on_a_small_graph(dataset_embedding):
    torch.manual_seed(0)
    cfg = GNNConfig(hidden=3, out_dim=2, layers=3, dropout=0.5, temperature=0.07, dataset_embedding=dataset_embedding)
    gnn = LabelGNN(cfg, torch.randn(3, 4), [2, 1], 2).double()  # 2 + 1 label nodes, 2 unified nodes
    with torch.no_grad():
        gnn.adjacency.copy_(torch.tensor([[0.10, 0.02], [0.05, 0.09], [0.3, 0.7]]))
        if dataset_embedding:
            gnn.dataset_embedding.normal_()
    gnn.eval()
    out = gnn()
    protos, labels = hand_forward(gnn)
    np.testing.assert_allclose(out.prototypes.detach().numpy(), protos, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.label_embeddings.detach().numpy(), labels, rtol=1e-10, atol=1e-12)
    # dataset 1 has one label: its soft adjacency is all ones
    torch.testing.assert_close(out.soft[1], torch.ones(1, 2, dtype=torch.double))


def test_normalised_graph_rows():
    S = torch.tensor([[0.2, 1.0], [0.8, 0.0], [1.0, 1.0]])
    A = LabelGNN.normalised_graph(S)
    assert A.shape == (5, 5)
    torch.testing.assert_close(A.sum(1), torch.ones(5))
    torch.testing.assert_close(A[3, :3], S[:, 0] / 2.0)  # a unified row sums S over labels: 2 datasets
    assert (A[:3, :3] == 0).all() and (A[3:, 3:] == 0).all()


def test_gradients_reach_adjacency_unified_features_and_weights():
    torch.manual_seed(0)
    gnn = LabelGNN(GNNConfig(hidden=16, out_dim=8, dataset_embedding=True), torch.randn(5, 12), [3, 2], 4)
    out = gnn()
    target = torch.randn_like(out.prototypes)
    loss = (out.prototypes - target).square().sum() + sum((s * torch.randn_like(s)).sum() for s in out.soft)
    loss.backward()
    for name, p in gnn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_init_from_mapping_and_freeze():
    mapping = [np.array([[1, 0, 0, 0], [0, 1, 1, 0]], bool), np.array([[0, 0, 0, 1]], bool)]
    gnn = LabelGNN(GNN_PRESETS["tiny"], torch.randn(3, 6), [2, 1], 4, init_mapping=mapping)
    s0, s1 = gnn.soft_adjacency()
    assert (s0[:, :3].argmax(0) == torch.tensor([0, 1, 1])).all()
    assert s0[:, :3].max(0).values.min() > 0.999
    torch.testing.assert_close(s0[:, 3], torch.full((2,), 0.5))  # unmapped: uniform
    gnn.freeze_adjacency(True)
    gnn().prototypes.sum().backward()
    assert gnn.adjacency.grad is None and gnn.unified_features.grad is not None
    gnn.freeze_adjacency(False)
    assert gnn.adjacency.requires_grad


def test_paper_preset_sizes():
    cfg = GNN_PRESETS["paper"]
    assert (cfg.hidden, cfg.out_dim, cfg.layers, cfg.dropout, cfg.temperature, cfg.dataset_embedding) == \
        (2048, 512, 3, 0.5, 0.07, False)


def test_autocast_and_shapes():
    gnn = LabelGNN(GNN_PRESETS["tiny"], torch.randn(7, 10), [4, 3], 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gnn()
    assert out.prototypes.shape == (5, 16) and out.label_embeddings.shape == (7, 16)
    assert torch.isfinite(out.prototypes.float()).all()


def test_bad_inputs():
    with pytest.raises(UsageError, match="do not match dataset sizes"):
        LabelGNN(GNN_PRESETS["tiny"], torch.randn(5, 4), [3, 3], 4)
    with pytest.raises(UsageError, match="expected \\(2, 4\\)"):
        LabelGNN(GNN_PRESETS["tiny"], torch.randn(3, 4), [2, 1], 4, init_mapping=[np.zeros((2, 3)), np.zeros((1, 4))])
    with pytest.raises(UsageError, match="temperature"):
        GNNConfig(temperature=0)
