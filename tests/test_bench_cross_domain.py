"""bench/cross_domain.py's signal computations on planted pixel features."""
import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("cross_domain", Path(__file__).resolve().parents[1] / "bench" / "cross_domain.py")
cd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cd)


def _blob(rng, centre, n):
    return np.asarray(centre, float)[None] + 0.05 * rng.standard_normal((n, len(centre)))


def test_knn_shares_transfer_labels_and_leave_unknown_concepts_out():
    rng = np.random.default_rng(0)
    # dataset a: x0 at (0,0), x1 at (1,0), x2 at (1,0.4); dataset b: y0 at (0,0) (= x0), y1 at (0,1).
    # Nothing in b is like x1 or x2: they lie farther from b's pixels than from each other.
    a = {"knn": np.concatenate([_blob(rng, (0, 0), 60), _blob(rng, (1, 0), 60), _blob(rng, (1, 0.4), 60)]),
         "label": np.repeat([0, 1, 2], 60)}
    b = {"knn": np.concatenate([_blob(rng, (0, 0), 60), _blob(rng, (0, 1), 60)]), "label": np.repeat([0, 1], 60)}
    share = cd.knn_shares({"a": a, "b": b}, {"a": ["x0", "x1", "x2"], "b": ["y0", "y1"]}, "knn", k=5)
    assert share[("a", "b")][0, 0] > 0.95  # x0's pixels are y0's
    assert share[("a", "b")][1:].sum() < 0.05  # x1, x2 are out of b's distribution: no label gets them
    assert share[("b", "a")][0, 0] > 0.95  # and y0's are x0's


def test_best_split_is_one_for_a_separating_signal_and_the_base_rate_for_noise():
    assert cd.best_split([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert cd.best_split([0.3, 0.9, 0.8, 0.2], [True, True, False, False]) == 0.75
    assert abs(cd.best_split([0.5, 0.5, 0.5], [True, False, False]) - 2 / 3) < 1e-12
