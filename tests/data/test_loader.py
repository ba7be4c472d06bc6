"""Balanced multi-dataset batches: balance, determinism, rank sharding, workers, eval iterator."""
import numpy as np
import pytest
import torch

from tests.data.tiny import label_of, write_generic
from uniseg_cli.data import DatasetSpec, open_dataset
from uniseg_cli.data.loader import IGNORE_INDEX, BalancedBatches, iter_eval, make_train_loader
from uniseg_cli.data.transforms import MEAN, STD, TrainTransform, TrainTransformConfig

CFG = TrainTransformConfig(crop_size=(12, 12), scale_mode="none", color_jitter=False, flip_prob=0.5)


@pytest.fixture
def adapters(tmp_path):
    a = write_generic(tmp_path / "a", name="a", splits={"train": 5, "val": 2}, seed=1)
    b = write_generic(tmp_path / "b", name="b", classes=("wall", "floor"), ignore=7, splits={"train": 3, "val": 1}, seed=2)
    return [open_dataset(DatasetSpec("a", str(a))), open_dataset(DatasetSpec("b", str(b)))]


def test_batches_are_balanced_and_typed(adapters):
    it = iter(make_train_loader(adapters, images_per_dataset=2, transform=CFG, seed=0))
    for _ in range(3):
        b = next(it)
        assert b["image"].shape == (4, 3, 12, 12) and b["image"].dtype == torch.float32
        assert b["label"].shape == (4, 12, 12) and b["label"].dtype == torch.int64
        assert b["dataset"].tolist() == [0, 0, 1, 1]
        assert b["label"].min() >= IGNORE_INDEX
        assert (b["label"][2:] <= 1).all()  # dataset b: classes 0..1, its ignore 7 became -1
        assert (b["label"][2:] == -1).any() and (b["label"][:2] == -1).any()
        # the image still shows the label (normalisation undone)
        img = (b["image"] * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]).round()
        for i in range(4):
            lab = b["label"][i].numpy()
            got = label_of(img[i].permute(1, 2, 0).clamp(0, 255).byte().numpy(), ignore=-1)
            assert np.array_equal(got, lab)


def test_same_seed_same_batches_and_workers_do_not_change_them(adapters):
    def first(n, **kw):
        it = iter(make_train_loader(adapters, images_per_dataset=2, transform=CFG, **kw))
        return [next(it) for _ in range(n)]

    a, b = first(4, seed=5), first(4, seed=5, num_workers=2)
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b))
    c = first(1, seed=6)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    d = first(2, seed=5, start_iter=2)  # resume
    assert torch.equal(d[0]["image"], a[2]["image"]) and torch.equal(d[1]["label"], a[3]["label"])


def test_every_epoch_visits_every_sample_once(adapters):
    ds = BalancedBatches(adapters, images_per_dataset=1, transform=TrainTransform(CFG), seed=3)
    seen_a = [ds.indices(it)[0][0] for it in range(10)]
    assert sorted(seen_a[:5]) == list(range(5)) and sorted(seen_a[5:]) == list(range(5))
    assert seen_a[:5] != seen_a[5:]  # reshuffled per epoch


def test_ranks_draw_disjoint_shards_that_cover_the_epoch(adapters):
    world = 2
    ranks = [BalancedBatches(adapters, images_per_dataset=1, transform=TrainTransform(CFG), seed=3, rank=r, world_size=world)
             for r in range(world)]
    single = BalancedBatches(adapters, images_per_dataset=1, transform=TrainTransform(CFG), seed=3, rank=0, world_size=1)
    # dataset a has 5 samples: iterations 0..1 of both ranks + iteration 2 of rank 0 = one epoch
    drawn = [ranks[r].indices(it)[0][0] for it in range(2) for r in range(world)] + [ranks[0].indices(2)[0][0]]
    assert sorted(drawn) == list(range(5))
    # together the ranks follow the single-process order
    assert drawn == [single.indices(it)[0][0] for it in range(5)]
    b0, b1 = ranks[0].batch(0), ranks[1].batch(0)
    assert not torch.equal(b0["image"], b1["image"])
    with pytest.raises(ValueError):
        BalancedBatches(adapters, rank=2, world_size=2)


def test_eval_iterator(adapters):
    items = list(iter_eval(adapters[1], "train", dataset_index=1))
    assert [x["stem"] for x in items] == ["s000", "s001", "s002"]
    x = items[0]
    assert x["image"].shape == (1, 3, 16, 20) and x["label"].shape == (1, 16, 20) and x["dataset"].tolist() == [1]
    assert (x["label"] >= -1).all() and (x["label"] <= 1).all()
    small = next(iter_eval(adapters[0], "val", short_side=8))
    assert small["image"].shape == (1, 3, 8, 10) and small["label"].shape == (1, 16, 20)
    shard = [x["stem"] for x in iter_eval(adapters[0], "train", rank=1, world_size=2)]
    assert shard == ["s001", "s003"]
