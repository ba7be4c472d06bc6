"""Segmenter: every registered backbone builds, runs forward+backward; registry errors; phases."""
import numpy as np
import pytest
import torch

from uniseg_cli.errors import ServiceError, UsageError
from uniseg_cli.models import (GNN_PRESETS, LabelGNN, MultiSegHead, SegmenterConfig, SingleHead, UniSegHead,
                               backbones, blended_ce, build_segmenter, list_backbones, multi_dataset_ce,
                               orthogonality_loss, set_phase)

@pytest.mark.parametrize("name", list_backbones())  # hrnet_w48 included: ~1 s at 32x32
def test_every_backbone_forward_backward(name):
    torch.manual_seed(0)
    seg = build_segmenter(SegmenterConfig(backbone=name, embed_dim=8))
    x = torch.randn(2, 3, 32, 32)
    emb = seg(x)
    assert emb.shape == (2, 8, 8, 8)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2, 8, 8))
    emb[:, 0].sum().backward()
    grads = [p.grad for p in seg.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in seg.backbone.parameters())


def test_registry_lists_the_paper_and_small_backbones():
    assert {"tiny", "tiny-wide", "hrnet_w48", "hrnet_w18_small_v2", "resnet18", "mobilenetv3_small_100"} <= set(list_backbones())


def test_hrnet_w48_has_the_papers_720_channels():
    spec = backbones.BACKBONES["hrnet_w48"]
    bb = backbones.build_backbone(spec)
    assert bb.channels == [48, 96, 192, 384] and bb.reductions == [4, 8, 16, 32]


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UsageError) as e:
        build_segmenter(SegmenterConfig(backbone="hrnet_w99"))
    assert "hrnet_w99" in e.value.message and "resnet18" in e.value.message and "tiny" in e.value.message


def test_pretrained_offline_without_cache_fails_fast_with_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_cached_weights", lambda hub_id: None)
    with pytest.raises(ServiceError) as e:
        build_segmenter(SegmenterConfig(backbone="resnet18", pretrained=True))
    assert "HF_HUB_OFFLINE" in e.value.message and "timm/resnet18" in e.value.message
    assert "pretrained: false" in e.value.hint


def test_tiny_learns_colour_and_texture():
    """Classes: red flat, red stripes, blue flat (colour alone or texture alone is not enough)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def batch(n=8, size=32):
        labels = torch.randint(0, 3, (n, 4, 4), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
        stripes = (torch.arange(size) // 2 % 2).float().view(1, 1, size).expand(n, size, size)
        red = torch.stack([torch.ones(n, size, size), torch.zeros(n, size, size), torch.zeros(n, size, size)], 1)
        blue = red.flip(1)
        img = torch.where((labels == 2)[:, None], blue, red)
        img = img * torch.where((labels == 1)[:, None], stripes[:, None], torch.ones(1))
        return img + 0.05 * torch.randn(img.shape, generator=g), labels

    seg = build_segmenter(SegmenterConfig(backbone="tiny", embed_dim=16))
    head = SingleHead(3, 16)
    opt = torch.optim.Adam(list(seg.parameters()) + list(head.parameters()), lr=1e-2)
    for _ in range(100):
        x, y = batch()
        logits = torch.nn.functional.interpolate(head(seg(x)), size=y.shape[-2:], mode="bilinear", align_corners=True)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seg.eval()
    x, y = batch(16)
    with torch.no_grad():
        pred = torch.nn.functional.interpolate(head(seg(x)), size=y.shape[-2:], mode="bilinear",
                                               align_corners=True).argmax(1)
    acc = (pred == y).float().mean()
    assert acc > 0.9  # colour alone gets ~0.83 (the red pixels of the stripes)


def test_autocast_cpu_bfloat16():
    seg = build_segmenter(SegmenterConfig(backbone="tiny", embed_dim=8))
    head = UniSegHead(4, 8, [np.eye(3, 4, dtype=bool)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = head(seg(torch.randn(2, 3, 32, 32)), torch.tensor([0, 0]))
    assert torch.isfinite(outs[0].logits.float()).all() and outs[0].logits.shape == (2, 3, 8, 8)


def _parts():
    torch.manual_seed(0)
    seg = build_segmenter(SegmenterConfig(backbone="tiny", embed_dim=16))
    mappings = [np.eye(3, 5, dtype=bool), np.eye(2, 5, k=2, dtype=bool)]
    head = UniSegHead(5, 16, mappings)
    gnn = LabelGNN(GNN_PRESETS["tiny"], torch.randn(5, 12), [3, 2], 5, mappings)
    return seg, head, gnn, mappings


@pytest.mark.parametrize("phase", ["stage1", "gnn", "gnn_frozen_adj", "seg", "stage3"])
def test_set_phase_returns_exactly_the_parameters_that_get_gradients(phase):
    """What DDP needs: no returned parameter unused, no gradient on a parameter left out."""
    seg, head, gnn, mappings = _parts()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 2, (4, 32, 32))
    dataset_idx = torch.tensor([0, 1, 0, 1])
    if phase == "stage1":  # a Multi-SegHead with the same API
        head = MultiSegHead([3, 2], 16)
    trainable = set_phase(phase, seg, head, gnn)
    names = {n for n, _ in trainable}
    emb = seg(x)
    if phase.startswith("gnn"):
        out = gnn()
        z = head.unified_logits(emb, out.prototypes)
        loss = orthogonality_loss(out.prototypes)
        for d in range(2):
            idx = dataset_idx == d
            loss = loss + blended_ce(z[idx], out.soft[d], torch.as_tensor(mappings[d]), 0.5, y[idx])
    else:
        loss, _ = multi_dataset_ce(head(emb, dataset_idx), y)
    loss.backward()
    parts = {"segmenter": seg, "head": head, "gnn": gnn}
    for prefix, module in parts.items():
        for n, p in module.named_parameters():
            full = f"{prefix}.{n}"
            if full in names:
                assert p.grad is not None, f"{full} is returned as trainable but gets no gradient"
            else:
                assert p.grad is None and not p.requires_grad, f"{full} is frozen but gets a gradient"
    assert seg.training == (not phase.startswith("gnn"))
    assert ("gnn.adjacency" in names) == (phase == "gnn")


def test_set_phase_rejects_unknown_phase():
    seg, head, gnn, _ = _parts()
    with pytest.raises(UsageError, match="valid phases"):
        set_phase("warmup", seg, head, gnn)


class _Task(torch.nn.Module):
    """The GNN-phase and SEG-phase losses behind one forward, as a trainer would wrap them in DDP."""

    def __init__(self, seg, head, gnn):
        super().__init__()
        self.seg, self.head, self.gnn = seg, head, gnn

    def forward(self, x, y, dataset_idx, phase):
        emb = self.seg(x)
        if phase.startswith("gnn"):
            out = self.gnn()
            z = self.head.unified_logits(emb, out.prototypes)
            loss = orthogonality_loss(out.prototypes)
            for d in range(2):
                idx = dataset_idx == d
                loss = loss + blended_ce(z[idx], out.soft[d], self.head.mapping(d), 0.5, y[idx])
            return loss
        return multi_dataset_ce(self.head(emb, dataset_idx), y)[0]


def test_ddp_per_phase_wrapping_after_set_phase_needs_no_unused_parameter_search():
    """Real DDP (gloo, one rank, find_unused_parameters=False): fine after set_phase, an error without."""
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        seg, head, gnn, _ = _parts()
        task = _Task(seg, head, gnn)
        x, y, dataset_idx = torch.randn(4, 3, 32, 32), torch.randint(0, 2, (4, 32, 32)), torch.tensor([0, 1, 0, 1])
        for phase in ("gnn", "gnn_frozen_adj", "seg", "stage3"):
            set_phase(phase, seg, head, gnn)
            ddp = DDP(task, find_unused_parameters=False)
            for _ in range(2):
                ddp(x, y, dataset_idx, phase).backward()
        for p in task.parameters():  # control: everything trainable in a GNN phase -> DDP refuses
            p.requires_grad_(True)
        ddp = DDP(task, find_unused_parameters=False)
        with pytest.raises(RuntimeError, match="finished reduction"):
            for _ in range(2):
                ddp(x, y, dataset_idx, "gnn").backward()
    finally:
        dist.destroy_process_group()


def test_pretrained_weights_load_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    """A Hugging Face cache laid out as the hub writes it; HF_HUB_OFFLINE stays set."""
    import timm
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    torch.manual_seed(1)
    weights = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    repo = tmp_path / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file(weights, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seg = build_segmenter(SegmenterConfig(backbone="resnet18", embed_dim=8, pretrained=True))
    torch.testing.assert_close(seg.backbone.body.conv1.weight, weights["conv1.weight"])
    torch.testing.assert_close(seg.backbone.body.layer4[1].bn2.running_var, weights["layer4.1.bn2.running_var"])
