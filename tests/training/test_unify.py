"""Stages 2 and 3 on the tiny synthetic world: what each phase trains, the mappings, pruning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kit import identity_mappings, tiny_params, world
from uniseg_cli.data import open_dataset
from uniseg_cli.training.distributed import DistContext
from uniseg_cli.training.engine import Trainer
from uniseg_cli.training.setup import TrainInputs, batch_source, held_out_pairs, open_training_data
from uniseg_cli.training.train_run import build_stage2, to_stage3
from uniseg_cli.training.unify import (GNN, GNN_FIXED, SEG, Stage2Hooks, Stage3Hooks, prune_mappings, stage2_phases,
                                       stage3_phases)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from uniseg_cli.models import SegmenterConfig, build_segmenter

    _, specs = world(tmp_path_factory.mktemp("world"))
    specs = [s for s in specs if s.role == "train"]
    classes = {s.name: list(open_dataset(s).label_space.classes) for s in specs}
    maps = identity_mappings(classes)
    n = maps[0].shape[1]
    torch.manual_seed(0)
    cfg = SegmenterConfig(backbone="tiny", embed_dim=16)
    inputs = TrainInputs(classes, np.random.default_rng(0).normal(size=(n, 12)).astype(np.float32), maps, n, cfg,
                         build_segmenter(cfg).state_dict(), {})
    return specs, inputs


def snapshot(task):
    return {k: v.detach().clone() for k, v in task.state_dict().items()}


def changed(a, b):
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_paper_schedule_phases():
    ph = stage2_phases(20000, 20000, 15000, 5, "gnn")
    assert [(p.name, p.iters) for p in ph] == [("gnn1", 15000), ("gnn1-fixed-adj", 5000), ("seg1", 20000),
                                               ("gnn2", 15000), ("gnn2-fixed-adj", 5000), ("seg2", 20000),
                                               ("gnn3", 15000), ("gnn3-fixed-adj", 5000)]
    assert sum(p.iters for p in ph) == 100000 and ph[-1].get("kind") == GNN_FIXED  # ends inside a GNN phase
    assert [p.get("kind") for p in stage2_phases(5, 5, 5, 3, "seg")] == [SEG, GNN, SEG]
    assert [(p.name, p.iters) for p in stage3_phases(100000, 50000)] == [("final", 50000), ("final-pruned", 50000)]


class Recorder(Stage2Hooks):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.after_start, self.ends, self.seg_maps = [], [], []

    def on_phase_start(self, trainer, info):
        if self.after_start:
            self.ends.append(snapshot(self.task))  # end of the previous phase, before this switch's hook
        super().on_phase_start(trainer, info)
        self.after_start.append((info.phase, snapshot(self.task), set(trainer.trainable_names())))
        if info.phase.get("kind") == SEG:
            self.seg_maps.append([m.cpu().numpy() for m in self.task.head.mappings])

    def on_end(self, trainer):
        self.ends.append(snapshot(self.task))


def test_stage2_each_phase_trains_exactly_its_parameters_and_seg_uses_valid_mappings(setup, tmp_path):
    specs, inputs = setup
    p = tiny_params(num_phases=4, first_gnn_iters=3, gnn_iters=5, seg_iters=4)
    data = open_training_data(specs, p)
    task, solver = build_stage2(p, inputs)
    hooks = Recorder(task, solver, p.solve_every)
    Trainer(task, stage2_phases(5, 4, 3, 4, "gnn"), p.optim(), batches=batch_source(data, p, DistContext()),
            hooks=hooks, progress=False, seed=0).run()
    kinds = [ph.get("kind") for ph, _, _ in hooks.after_start]
    assert kinds == [GNN, GNN_FIXED, SEG, GNN, GNN_FIXED, SEG]
    bn_stats = ("running_mean", "running_var", "num_batches_tracked")
    assert len(hooks.ends) == len(hooks.after_start)
    for (ph, before, trainable), after in zip(hooks.after_start, hooks.ends):
        moved = changed(before, after)
        kind = ph.get("kind")
        params = {n for n, _ in task.named_parameters()}
        if kind in (GNN, GNN_FIXED):
            expect = {n for n in params if n.startswith("gnn.")} - ({"gnn.adjacency"} if kind == GNN_FIXED else set())
            assert trainable == expect
            assert not any(k.startswith(("segmenter.", "head.")) for k in moved), ph.name  # frozen, BN stats too
        else:
            assert trainable == {n for n in params if n.startswith("segmenter.")}
            assert not any(k.startswith(("gnn.", "head.")) for k in moved), ph.name  # prototypes + mappings fixed
            assert any(k.endswith(bn_stats) for k in moved)  # BN in train mode
        assert {k for k in moved if k in params} == trainable, ph.name  # everything trained did move
    # the segmentation phases use solver-valid boolean mappings: <= 1 label per node, >= 1 node per label
    assert len(hooks.seg_maps) == 2
    for maps in hooks.seg_maps:
        for m in maps:
            assert set(np.unique(m)) <= {0.0, 1.0}
            assert (m.sum(axis=0) <= 1).all() and (m.sum(axis=1) >= 1).all()


def test_stage3_prototypes_train_and_pruning_keeps_every_label(setup):
    specs, inputs = setup
    p = tiny_params()
    data = open_training_data(specs, p)
    task2, solver = build_stage2(p, inputs)
    hooks2 = Stage2Hooks(task2, solver, p.solve_every)
    task3, init_maps = to_stage3(task2, hooks2, p, list(inputs.classes))
    assert task3.gnn is None
    assert torch.allclose(task3.head.prototypes, task2.gnn_prototypes_eval())
    protos0 = task3.head.prototypes.detach().clone()
    hooks3 = Stage3Hooks(task3, held_out_pairs(data, 0, 1), 0.3, torch.device("cpu"))
    Trainer(task3, stage3_phases(4, 2), p.optim(), batches=batch_source(data, p, DistContext()), hooks=hooks3,
            progress=False).run()
    assert not torch.equal(protos0, task3.head.prototypes)  # trainable in stage 3
    assert hooks3.prune_hist is not None
    for m, h in zip(task3.head.mappings, hooks3.prune_hist):
        m = m.numpy() > 0.5
        assert (m.sum(axis=1) >= 1).all() and (m.sum(axis=0) <= 1).all()
        assert h.sum() > 0


def test_prune_mappings_by_hand():
    m = np.array([[1, 1, 1, 0], [0, 0, 0, 1]], bool)
    h = np.array([[90, 9, 1, 500], [0, 0, 0, 0]])  # label 0: shares .9/.09/.01 over its nodes; label 1: no pixels
    out = prune_mappings([m], [h], 0.05)[0]
    assert out.tolist() == [[True, True, False, False], [False, False, False, True]]
    out = prune_mappings([m], [np.array([[1, 1, 1, 0], [0, 0, 0, 0]])], 0.5)[0]  # all below: keep the best
    assert out[0].sum() == 1 and out[1, 3]
