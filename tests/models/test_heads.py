"""Heads: UniSegHead semantics (identity = plain classifier, dataset logit = sum or logsumexp), mixed batches."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uniseg_cli.errors import UsageError
from uniseg_cli.models import MultiSegHead, SingleHead, UniSegHead, split_by_dataset, upsample_logits
from uniseg_cli.models.heads import label_logits


def emb_batch(b=3, d=8, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, h, w, generator=g), dim=1)


def test_identity_mapping_equals_a_plain_classifier():
    n, d = 6, 8
    head = UniSegHead(n, d, [np.eye(n, dtype=bool)])
    emb = emb_batch(d=d)
    plain = F.conv2d(emb, head.prototypes.detach()[:, :, None, None])  # 1x1 conv, no bias
    torch.testing.assert_close(head.dataset_logits(emb, 0), plain)
    torch.testing.assert_close(head.unified_logits(emb), plain)


def test_dataset_logit_is_the_sum_of_its_mapped_unified_logits():
    rng = np.random.default_rng(0)
    N, D = 9, 8
    m = np.zeros((4, N), dtype=bool)
    m[rng.integers(0, 4, N), np.arange(N)] = True
    m[:, 0] = False  # a node without a label in this dataset
    m[3] = False
    m[3, 0] = True
    head = UniSegHead(N, D, [m])
    emb = emb_batch(d=D)
    z = head.unified_logits(emb)
    s = head.dataset_logits(emb, 0)
    for c in range(4):
        expected = sum(z[:, u] for u in range(N) if m[c, u])
        torch.testing.assert_close(s[:, c], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.map_logits(z, head.mapping(0)), s, rtol=1e-5, atol=1e-6)


def _partition(seed=0, n_labels=4, n_nodes=9):
    rng = np.random.default_rng(seed)
    m = np.zeros((n_labels, n_nodes), dtype=bool)
    m[np.arange(n_nodes) % n_labels, np.arange(n_nodes)] = True  # every label has 2-3 nodes
    return m[:, rng.permutation(n_nodes)]


def test_logsumexp_label_probability_is_the_sum_of_its_nodes_probabilities():
    m = _partition()
    head = UniSegHead(9, 8, [m], label_logits="logsumexp")
    emb = emb_batch(d=8)
    with torch.no_grad():
        head.prototypes.mul_(200.0)  # logits of tens: the softmax is peaked
    z = head.unified_logits(emb)
    p_label = torch.softmax(head.dataset_logits(emb, 0), dim=1)
    p_node = torch.softmax(z, dim=1)
    expected = torch.einsum("bnhw,kn->bkhw", p_node, torch.as_tensor(m, dtype=torch.float32))
    torch.testing.assert_close(p_label, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.map_logits(z, head.mapping(0)), head.dataset_logits(emb, 0))


def test_logsumexp_equals_sum_for_one_node_per_label():
    g = torch.Generator().manual_seed(0)
    m = torch.as_tensor(np.eye(4, 6, dtype=bool))
    z = torch.randn(2, 6, 3, 5, generator=g) * 10
    torch.testing.assert_close(label_logits(z, m, "logsumexp"), label_logits(z, m))
    # far apart: a label more than ~69 below the best one is floored there, the ranking never changes
    z = torch.randn(2, 6, 3, 5, generator=g) * 100
    lse, plain = label_logits(z, m, "logsumexp"), label_logits(z, m)
    near = plain >= plain.amax(dim=1, keepdim=True) - 60
    torch.testing.assert_close(lse[near], plain[near])
    assert bool((lse[~near] >= plain[~near] - 1e-3).all()) and torch.equal(lse.argmax(dim=1), plain.argmax(dim=1))


def test_logsumexp_is_stable_and_a_label_without_nodes_never_wins():
    m = torch.zeros(3, 5)
    m[0, 0] = m[0, 1] = m[1, 2] = 1.0  # label 2 has no node; node 3 and 4 belong to no label
    z = torch.zeros(1, 5, 2, 2)
    z[:, 0], z[:, 1], z[:, 2], z[:, 3] = -5000.0, -4999.0, -4998.0, 1e6  # huge unmapped node, far-negative mapped ones
    s = label_logits(z, m, "logsumexp")
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s[0, 0], torch.full((2, 2), -4999.0 + float(np.log1p(np.exp(-1.0)))))
    torch.testing.assert_close(s[0, 1], torch.full((2, 2), -4998.0))
    assert bool((s[0, 2] < s[0, 0] - 50).all())


def test_logsumexp_gives_a_union_labels_gradient_to_the_part_that_explains_it():
    # a coarse label (nodes 0, 1): with sum both nodes are pushed up equally; with logsumexp the one that
    # already explains the pixel takes the push, so the part a finer dataset trains stays itself
    m = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    grads = {}
    for mode in ("sum", "logsumexp"):
        z = torch.tensor([4.0, -4.0, 0.0]).view(1, 3, 1, 1).requires_grad_(True)
        F.cross_entropy(label_logits(z, m, mode), torch.zeros(1, 1, 1, dtype=torch.long)).backward()
        grads[mode] = -z.grad.view(3)
    assert grads["sum"][0] == pytest.approx(grads["sum"][1])
    assert grads["logsumexp"][0] > 100 * grads["logsumexp"][1] > 0


def test_unknown_label_logits_is_a_usage_error():
    with pytest.raises(UsageError, match="label_logits 'max'"):
        UniSegHead(3, 4, [np.eye(3, dtype=bool)], label_logits="max")
    with pytest.raises(UsageError, match="sum or logsumexp|sum, logsumexp"):
        label_logits(torch.zeros(1, 3, 1, 1), torch.eye(3), "mean")


def test_mixed_batch_gives_per_dataset_groups():
    sizes = [3, 5]
    multi = MultiSegHead(sizes, 8)
    uni = UniSegHead(6, 8, num_classes=sizes)
    emb = emb_batch(b=5)
    dataset_idx = torch.tensor([1, 0, 1, 1, 0])
    for head in (multi, uni):
        outs = head(emb, dataset_idx)
        assert [o.dataset for o in outs] == [0, 1]
        assert outs[0].index.tolist() == [1, 4] and outs[1].index.tolist() == [0, 2, 3]
        assert outs[0].logits.shape == (2, 3, 5, 6) and outs[1].logits.shape == (3, 5, 5, 6)
    torch.testing.assert_close(multi(emb, dataset_idx)[1].logits,
                               torch.einsum("bdhw,kd->bkhw", emb[[0, 2, 3]], multi.prototypes[1]))


def test_live_prototypes_and_soft_mapping_override_and_get_gradients():
    head = UniSegHead(4, 8, [np.eye(2, 4, dtype=bool)])
    p = torch.randn(4, 8, requires_grad=True)
    s = torch.softmax(torch.randn(2, 4, requires_grad=True), dim=0)
    s.retain_grad()
    out = head.dataset_logits(emb_batch(), 0, prototypes=p, mapping=s)
    out.square().sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert head.prototypes.grad is None


def test_set_mappings_and_prototypes_and_state_dict_round_trip():
    head = UniSegHead(5, 8, num_classes=[2, 3])
    new = [np.eye(2, 5, dtype=bool), np.eye(3, 5, k=2, dtype=bool)]
    head.set_mappings(new)
    proto = torch.randn(5, 8)
    head.set_prototypes(proto, trainable=False)
    assert not head.prototypes.requires_grad
    torch.testing.assert_close(head.prototypes.detach(), proto)
    rebuilt = UniSegHead(5, 8, num_classes=[2, 3])
    rebuilt.load_state_dict(head.state_dict())
    for a, b in zip(rebuilt.mappings, new):
        assert a.bool().numpy().tolist() == b.tolist()
    head.set_prototypes(proto, trainable=True)
    assert head.prototypes.requires_grad


def test_bad_shapes_raise_usage_errors():
    head = UniSegHead(5, 8, num_classes=[2])
    with pytest.raises(UsageError, match="has 3 rows"):
        head.set_mappings([np.zeros((3, 5))])
    with pytest.raises(UsageError, match=r"\(labels, 5\)"):
        head.set_mappings([np.zeros((2, 4))])
    with pytest.raises(UsageError, match="expected shape"):
        head.set_prototypes(torch.zeros(5, 7), trainable=True)
    with pytest.raises(UsageError, match="out of range"):
        head.dataset_logits(emb_batch(), 3)
    with pytest.raises(UsageError):
        UniSegHead(5, 8)


def test_single_head_logits_are_not_normalised():
    """B10 fixed: the baseline's logits are a plain linear map, not L2-normalised."""
    head = SingleHead(4, 8)
    with torch.no_grad():
        head.classifier.weight.mul_(50)
    logits = head(emb_batch())
    assert logits.shape == (3, 4, 5, 6)
    assert logits.norm(dim=1).max() > 2.0


def test_split_and_upsample_helpers():
    assert [(d, i.tolist()) for d, i in split_by_dataset(torch.tensor([2, 0, 2]))] == [(0, [1]), (2, [0, 2])]
    x = torch.randn(1, 2, 4, 4)
    assert upsample_logits(x, (16, 16)).shape == (1, 2, 16, 16)
    assert upsample_logits(x, (4, 4)) is x
