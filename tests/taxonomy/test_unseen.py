"""The unseen-dataset protocol: histogram, exact min-cost many-to-one assignment, mIoU."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniseg_cli.errors import UsageError
from uniseg_cli.taxonomy.unseen import (
    assignment_cost,
    evaluate_unseen,
    fit_unseen_mapping,
    iou_matrix,
    mapping_cost,
    unseen_hist,
    unseen_miou,
)


def _brute_force(hist):
    """The optimum over all assignments that give every output one target and every target >= 1 output."""
    cost = assignment_cost(hist)
    n_out, n_tgt = cost.shape
    best = None
    for a in itertools.product(range(n_tgt), repeat=n_out):
        if n_out >= n_tgt and len(set(a)) < n_tgt:
            continue
        if n_out < n_tgt and len(set(a)) < n_out:
            continue
        c = cost[np.arange(n_out), list(a)].sum()
        best = c if best is None or c < best else best
    return best


def test_hist_counts_pixels_and_skips_ignore():
    gt = np.array([[0, 0, 1], [2, -1, 1]])
    pred = np.array([[1, 1, 0], [2, 2, 0]])
    h = unseen_hist(gt, pred, 3, 3)
    assert h.tolist() == [[0, 2, 0], [2, 0, 0], [0, 0, 1]]
    # accumulating into a running histogram
    unseen_hist(gt, pred, 3, 3, out=h)
    assert h.sum() == 10


def test_hist_rejects_prediction_outside_outputs():
    with pytest.raises(UsageError, match="outside"):
        unseen_hist(np.zeros(4), np.array([0, 1, 2, 5]), 2, 3)
    with pytest.raises(UsageError, match="pixels"):
        unseen_hist(np.zeros(4), np.zeros(3), 2, 3)


def test_iou_and_cost_of_target_without_pixels_is_one():
    h = np.array([[5, 0], [0, 0]])
    iou = iou_matrix(h)
    assert iou[0, 0] == 1.0 and iou[1].sum() == 0
    assert np.allclose(assignment_cost(h)[:, 1], 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_planted_mapping_is_recovered_and_every_target_gets_a_node(seed):
    rng = np.random.default_rng(seed)
    n_tgt, n_out = 6, 15
    planted = np.concatenate([np.arange(n_tgt), rng.integers(0, n_tgt, n_out - n_tgt)])
    rng.shuffle(planted)
    hist = rng.integers(0, 20, size=(n_tgt, n_out))  # noise
    hist[planted, np.arange(n_out)] += rng.integers(500, 2000, size=n_out)
    mapping = fit_unseen_mapping(hist)
    assert mapping.shape == (n_out,)
    assert np.array_equal(mapping, planted)
    assert set(mapping.tolist()) == set(range(n_tgt))


def test_every_target_gets_a_node_even_when_one_output_dominates():
    # output 0 is the best match for every target; the constraint still forces coverage.
    hist = np.array([[100, 1, 0, 0], [90, 0, 1, 0], [80, 0, 0, 1]])
    mapping = fit_unseen_mapping(hist)
    assert set(mapping.tolist()) == {0, 1, 2}
    assert np.isclose(mapping_cost(hist, mapping), _brute_force(hist))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda t: st.integers(1, 6).flatmap(
            lambda u: st.lists(st.integers(0, 30), min_size=t * u, max_size=t * u).map(
                lambda v: np.array(v).reshape(t, u)
            )
        )
    )
)
def test_assignment_is_optimal_against_brute_force(hist):
    mapping = fit_unseen_mapping(hist)
    n_tgt, n_out = hist.shape
    assert mapping.shape == (n_out,)
    assert ((mapping >= 0) & (mapping < n_tgt)).all()
    if n_out >= n_tgt:
        assert set(mapping.tolist()) == set(range(n_tgt))
    else:
        assert len(set(mapping.tolist())) == n_out  # fewer outputs than targets: distinct targets
    assert mapping_cost(hist, mapping) == pytest.approx(_brute_force(hist), abs=1e-9)


def test_fewer_outputs_than_targets_reports_uncovered():
    hist = np.array([[50, 0], [0, 40], [3, 2]])
    res = evaluate_unseen(hist, hist)
    assert res.mapping.tolist() == [0, 1]
    assert res.uncovered == (2,)
    assert res.per_class_iou[2] == 0.0
    assert res.miou < 1.0


def test_fit_on_one_split_score_on_another():
    fit = np.array([[90, 10, 0], [0, 80, 5], [0, 0, 70]])
    score = np.array([[40, 0, 0], [0, 0, 30], [0, 0, 20]])  # target 1 now looks like output 2
    res = evaluate_unseen(fit, score)
    assert res.mapping.tolist() == [0, 1, 2]
    miou, per = unseen_miou(score, res.mapping)
    assert res.miou == pytest.approx(miou)
    assert per[0] == 1.0 and per[1] == 0.0
    assert per[2] == pytest.approx(20 / 50)
    assert res.miou == pytest.approx((1.0 + 0.0 + 0.4) / 3)


def test_classes_without_pixels_in_the_scoring_split_are_left_out():
    hist = np.array([[10, 0], [0, 10], [0, 0]])
    miou, per = unseen_miou(hist, np.array([0, 1]))
    assert np.isnan(per[2]) and miou == 1.0


def test_bad_histogram_is_a_usage_error():
    with pytest.raises(UsageError, match="non-empty"):
        fit_unseen_mapping(np.zeros((0, 3)))
    with pytest.raises(UsageError, match="differ"):
        evaluate_unseen(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(UsageError, match="entries"):
        unseen_miou(np.ones((2, 3)), np.array([0, 1]))


def test_fitted_mapping_is_saved_in_the_taxonomy_schema(tmp_path):
    from uniseg_cli.taxonomy.schema import read_taxonomy, write_taxonomy
    from uniseg_cli.taxonomy.unseen import unseen_taxonomy

    hist = np.array([[90, 10, 0, 0], [0, 80, 5, 40], [0, 0, 70, 0]])
    res = evaluate_unseen(hist, hist)
    tax = unseen_taxonomy(res.mapping, hist, "camdrive", ["Road", "Car", "Sky"], node_names={0: "road", 1: "car"},
                          sources={"training": "abc123"})
    path = write_taxonomy(tax, tmp_path / "unseen.parquet", kind="unseen-mapping", run_id="r1")
    back = read_taxonomy(path)
    assert back.problems() == [] and back.sources == {"training": "abc123"}
    m = back.mapping("camdrive")
    assert m.shape == (3, 4) and (m.sum(axis=0) == 1).all()  # every output class has exactly one target
    assert [int(np.flatnonzero(m[:, u])[0]) for u in range(4)] == res.mapping.tolist()
    assert back.names[0] == "road"
    assert back.weights["camdrive"][0, 0] == pytest.approx(90 / 100)  # IoU(u=0, Road) on the fitting split
    assert back.pixel_share["camdrive"][1, 3] == pytest.approx(40 / 125)
    with pytest.raises(UsageError, match="get no node"):
        unseen_taxonomy(np.array([0]), np.array([[5], [3]]), "t", ["a", "b"])
