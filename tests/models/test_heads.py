"""Heads: UniSegHead semantics (identity = plain classifier, dataset logit = sum), mixed batches."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uniseg_cli.errors import UsageError
from uniseg_cli.models import MultiSegHead, SingleHead, UniSegHead, split_by_dataset, upsample_logits


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
    torch.testing.assert_close(UniSegHead.map_logits(z, head.mapping(0)), s, rtol=1e-5, atol=1e-6)


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
