"""Transforms keep image and label aligned: a label drawn from the image stays consistent."""
import numpy as np
import pytest
import torch

from tests.data.tiny import block_label, image_of, label_of
from uniseg_cli.data.transforms import (
    MEAN,
    EvalTransform,
    TrainTransform,
    TrainTransformConfig,
    channel_shift,
    color_jitter,
    label_to_tensor,
    public_code_short_sides,
    random_crop,
    to_tensor,
)


def _pair(h=48, w=64, seed=0, block=8):
    lab = block_label(h, w, 3, seed, block=block)
    return image_of(lab), lab


def _uniform_interior(lab):
    """Pixels whose 3x3 neighbourhood has one label (bilinear resize cannot blend colours there)."""
    p = np.pad(lab, 1, mode="edge")
    same = np.ones_like(lab, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= p[dy:dy + lab.shape[0], dx:dx + lab.shape[1]] == lab
    same[[0, -1], :] = False  # the crop edge may sit next to a boundary just outside it
    same[:, [0, -1]] = False
    return same


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_keep_alignment_exactly(seed):
    img, lab = _pair(seed=seed)
    tf = TrainTransform(TrainTransformConfig(crop_size=(24, 40), scale_mode="none", color_jitter=False, flip_prob=0.5))
    rng = np.random.default_rng(seed)
    for _ in range(4):
        i2, l2 = tf(img, lab, 255, rng)
        assert i2.shape == (24, 40, 3) and l2.shape == (24, 40)
        assert np.array_equal(label_of(i2), l2)


@pytest.mark.parametrize("mode", ["ratio", "choice"])
def test_resize_keeps_alignment(mode):
    img, lab = _pair(seed=3)
    cfg = TrainTransformConfig(crop_size=(32, 32), scale_mode=mode, ratio_range=(0.7, 2.0), short_sides=(40, 64, 96),
                               color_jitter=False, flip_prob=0.5)
    rng = np.random.default_rng(1)
    for _ in range(8):
        i2, l2 = TrainTransform(cfg)(img, lab, 255, rng)
        inner = _uniform_interior(l2) & (l2 != 255)
        assert inner.sum() > 100
        assert np.array_equal(label_of(i2)[inner], l2[inner])


def test_crop_pads_with_ignore_and_mean_colour():
    img, lab = _pair(16, 20)
    rng = np.random.default_rng(0)
    i2, l2 = random_crop(img, lab, (24, 30), 255, rng)
    assert i2.shape == (24, 30, 3)
    assert (l2[16:] == 255).all() and (l2[:, 20:] == 255).all()
    assert (i2[16:] == np.rint(MEAN).astype(np.uint8)).all()
    assert torch.allclose(to_tensor(i2[16:])[..., :], torch.zeros(3, 8, 30), atol=0.01)


def test_category_area_constraint_rejects_single_class_crops():
    lab = np.zeros((64, 64), np.int64)
    lab[40:, 40:] = 1
    img = image_of(lab)

    def share_ok(constraint, seeds=60):
        ok = 0
        for s in range(seeds):
            _, l2 = random_crop(img, lab, (24, 24), 255, np.random.default_rng(s), constraint, tries=10)
            _, cnt = np.unique(l2, return_counts=True)
            ok += len(cnt) > 1 and cnt.max() < 0.8 * cnt.sum()
        return ok / seeds

    without, with_ = share_ok(None), share_ok(0.8)
    assert with_ > 0.8 and without < 0.4


def test_short_side_choices_are_the_public_codes():
    s = public_code_short_sides()
    assert len(s) == 36 and s[0] == 256 and s[-1] == 2048 and s[5] == 512


def test_colour_jitter_changes_pixels_not_shape():
    img, _ = _pair()
    outs = [color_jitter(img, np.random.default_rng(s)) for s in range(8)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, img) for o in outs)


def test_eval_transform_and_tensors():
    img, lab = _pair(48, 64)
    same_i, same_l = EvalTransform()(img, lab)
    assert same_i is img and same_l is lab
    i2, l2 = EvalTransform(short_side=24, resize_label=True)(img, lab)
    assert i2.shape == (24, 32, 3) and l2.shape == (24, 32)
    i3, l3 = EvalTransform(short_side=24, resize_label=False)(img, lab)
    assert i3.shape == (24, 32, 3) and l3.shape == (48, 64)
    t = label_to_tensor(lab, 255)
    assert t.dtype == torch.int64 and (t[torch.from_numpy(lab == 255)] == -1).all()
    x = to_tensor(img)
    assert x.shape == (3, 48, 64) and x.dtype == torch.float32
    assert abs(float(x[0, 0, 0]) - (float(img[0, 0, 0]) - MEAN[0]) / 58.395) < 1e-5


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        TrainTransformConfig(scale_mode="choice")
    with pytest.raises(ValueError):
        TrainTransformConfig(ratio_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="channel_gain"):
        TrainTransformConfig(channel_gain=1.0)
    with pytest.raises(ValueError, match="channel_offset"):
        TrainTransformConfig(channel_offset=-1)


def test_channel_shift_moves_each_channel_within_its_bounds():
    img = np.full((8, 8, 3), 100, np.uint8)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(50):
        out = channel_shift(img, rng, gain=0.1, offset=12)
        assert out.shape == img.shape and out.dtype == np.uint8
        v = out[0, 0].astype(float)
        assert np.all(v >= 100 * 0.9 - 12 - 1) and np.all(v <= 100 * 1.1 + 12 + 1)
        assert np.all(out == out[0, 0])  # one gain and offset per channel, the same for every pixel
        seen.append(v)
    seen = np.array(seen)
    assert seen.std(axis=0).min() > 3  # every channel moves ...
    assert np.abs(np.corrcoef(seen.T)[0, 1]) < 0.6  # ... on its own (a cast, not a brightness change)


def test_channel_shift_keeps_the_label_and_is_off_by_default():
    img, lab = _pair(seed=2)
    base = TrainTransformConfig(crop_size=(24, 40), scale_mode="none", color_jitter=False, flip_prob=0.5)
    shifted = TrainTransformConfig(crop_size=(24, 40), scale_mode="none", color_jitter=False, flip_prob=0.5,
                                   channel_gain=0.2, channel_offset=20)
    i0, l0 = TrainTransform(base)(img, lab, 255, np.random.default_rng(5))
    i1, l1 = TrainTransform(shifted)(img, lab, 255, np.random.default_rng(5))
    assert np.array_equal(l0, l1)  # crop and flip draw the same numbers; the shift comes after them
    assert not np.array_equal(i0, i1)
    assert np.abs(i0.astype(int) - i1.astype(int)).max() <= 0.2 * 255 + 20 + 1
