"""The training engine on a tiny real network: schedule, groups, phase freezing, checkpoints, resume."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from uniseg_cli.errors import ArtifactError
from uniseg_cli.training import checkpoint as C
from uniseg_cli.training.engine import Hooks, OptimConfig, Phase, Trainer, lr_factor, param_groups


class TinyTask(nn.Module):
    """backbone (conv + BN) -> head (1x1 conv) ; gnn: a parameter that scales the logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)
        self.gnn = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, batch, info):
        x = self.backbone(batch["image"])
        logits = self.head(self.drop(x))  # (B, 4, H, W)
        logits = torch.einsum("bchw,dc->bdhw", logits, self.gnn.weight) + self.gnn.bias[None, :, None, None]
        ce = nn.functional.cross_entropy(logits, batch["label"], ignore_index=-1)
        return {"loss": ce, "ce": ce.detach()}


def make_batches(seed=0):
    def batches(start):
        it = start
        while True:
            g = torch.Generator().manual_seed(seed * 100003 + it)
            img = torch.randn(2, 3, 8, 8, generator=g)
            lab = torch.randint(-1, 4, (2, 8, 8), generator=g)
            yield {"image": img, "label": lab}
            it += 1
    return batches


PHASES = [
    Phase("gnn", 4, train=("gnn",), eval_modules=("backbone", "head")),
    Phase("seg", 4, train=("backbone", "head")),
    Phase("all-but-bias", 3, train=("",), freeze=("gnn.bias",)),
]
CFG = OptimConfig(lr=1e-2, warmup_iters=3, clip_grad_norm=1.0)


def _snapshot(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_lr_schedule_warms_up_then_decays():
    cfg = OptimConfig(lr=1.0, warmup_iters=10, warmup_factor=0.001)
    f = [lr_factor(i, 100, cfg) for i in range(100)]
    assert f[0] == pytest.approx(0.001)
    assert all(a < b for a, b in zip(f[:9], f[1:10]))  # rising during warmup
    assert f[10] == pytest.approx((1 - 10 / 100) ** 0.9)
    assert all(a > b for a, b in zip(f[10:], f[11:]))  # poly decay after


def test_param_groups_no_decay_for_norm_bias_and_backbone_multiplier():
    m = TinyTask()
    groups = param_groups(m, OptimConfig(lr=1.0, backbone_lr_mult=0.1, weight_decay=0.05))
    by_id = {id(p): g for g in groups for p in g["params"]}
    names = dict(m.named_parameters())
    assert by_id[id(names["backbone.0.weight"])]["lr_mult"] == 0.1
    assert by_id[id(names["backbone.0.weight"])]["weight_decay"] == 0.05
    assert by_id[id(names["backbone.1.weight"])]["weight_decay"] == 0.0  # BN
    assert by_id[id(names["head.bias"])]["weight_decay"] == 0.0
    assert by_id[id(names["head.weight"])]["lr_mult"] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(names)
    groups = param_groups(m, OptimConfig(lr=1.0, lr_mults=(("gnn", 5.0), ("gnn.weight", 2.0))))
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(names["gnn.weight"])]["lr_mult"] == 10.0 and by_id[id(names["gnn.bias"])]["lr_mult"] == 5.0
    assert by_id[id(names["head.weight"])]["lr_mult"] == 1.0


class Recorder(Hooks):
    def __init__(self):
        self.snaps, self.trainable, self.starts = {}, {}, []

    def on_phase_start(self, trainer, info):
        self.starts.append((info.iteration, info.phase.name))
        self.snaps[info.phase.name] = _snapshot(trainer.task)
        self.trainable[info.phase.name] = set(trainer.trainable_names())

    def on_end(self, trainer):
        self.snaps["end"] = _snapshot(trainer.task)


def test_each_phase_freezes_exactly_its_parameters(tmp_path):
    task, rec = TinyTask(), Recorder()
    Trainer(task, PHASES, CFG, batches=make_batches(), hooks=rec, progress=False).run()
    assert rec.starts == [(0, "gnn"), (4, "seg"), (8, "all-but-bias")]
    assert rec.trainable["gnn"] == {"gnn.weight", "gnn.bias"}
    assert rec.trainable["all-but-bias"] == {n for n, _ in task.named_parameters()} - {"gnn.bias"}
    order = ["gnn", "seg", "all-but-bias", "end"]
    for a, b in zip(order, order[1:]):
        before, after = rec.snaps[a], rec.snaps[b]
        phase = next(p for p in PHASES if p.name == a)
        for k in before:
            moved = not torch.equal(before[k], after[k])
            if k.endswith("running_mean") or k.endswith("running_var") or k.endswith("num_batches_tracked"):
                # BN statistics move only when the backbone is in train mode
                assert moved == (a != "gnn"), (a, k)
            else:
                assert moved == phase.trains(k), (a, k)  # frozen: bit-identical; trained: changed


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    ref = TinyTask()
    Trainer(ref, PHASES, CFG, batches=make_batches(), progress=False, work_dir=tmp_path / "a").run()
    # interrupted: stop after 6 iterations (mid "seg"), then a fresh process-like trainer resumes
    t1 = TinyTask()
    Trainer(t1, PHASES, CFG, batches=make_batches(), progress=False, work_dir=tmp_path / "b", checkpoint_every=2,
            log_every=1).run(until=6)
    assert C.latest_checkpoint(tmp_path / "b") == "ckpt-000000006"
    t2 = TinyTask()
    summary = Trainer(t2, PHASES, CFG, batches=make_batches(), progress=False, work_dir=tmp_path / "b", checkpoint_every=2,
                      log_every=1).run()
    assert summary["resumed_from"] == 6
    for k, v in ref.state_dict().items():
        assert torch.equal(v, t2.state_dict()[k]), k
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, 12))
    assert {"stage", "phase", "lr", "loss", "ce", "images_per_s", "eta_s"} <= set(lines[-1])


def test_torn_checkpoint_falls_back_and_foreign_schedule_is_refused(tmp_path):
    t = TinyTask()
    Trainer(t, PHASES, CFG, batches=make_batches(), progress=False, work_dir=tmp_path, checkpoint_every=2).run(until=4)
    # tear the newest pair: tensors rewritten without the JSON following
    newest = tmp_path / "ckpt-000000004.safetensors"
    raw = newest.read_bytes()
    newest.write_bytes(raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:]))
    assert C.latest_checkpoint(tmp_path) == "ckpt-000000002"
    with pytest.raises(ArtifactError, match="sha256"):
        C.read_checkpoint(tmp_path, "ckpt-000000004")
    other = [Phase("gnn", 5, train=("gnn",))]
    with pytest.raises(ArtifactError, match="another schedule"):
        Trainer(TinyTask(), other, CFG, batches=make_batches(), progress=False, work_dir=tmp_path).run()


def test_checkpoint_holds_no_pickle_and_round_trips_optimizer(tmp_path):
    t = TinyTask()
    tr = Trainer(t, PHASES, CFG, batches=make_batches(), progress=False, work_dir=tmp_path)
    tr.run(until=5)
    tensors, meta = C.read_checkpoint(tmp_path, "ckpt-000000005")
    assert meta["iteration"] == 5 and meta["phase"] == "seg"
    assert "optim.gnn.weight.exp_avg" in tensors and "rng.torch" in tensors
    assert meta["optimizer"]["groups"][0]["params"]
    raw = (tmp_path / "ckpt-000000005.safetensors").read_bytes()
    assert b"\x80\x04" not in raw[:64]  # not a pickle stream
