"""bench/cross_domain.py's threshold accuracy (its transfer is evidence.transfer_shares, tested in tests/taxonomy)."""
import importlib.util
from pathlib import Path


_spec = importlib.util.spec_from_file_location("cross_domain", Path(__file__).resolve().parents[1] / "bench" / "cross_domain.py")
cd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cd)


def test_best_split_is_one_for_a_separating_signal_and_the_base_rate_for_noise():
    assert cd.best_split([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert cd.best_split([0.3, 0.9, 0.8, 0.2], [True, True, False, False]) == 0.75
    assert abs(cd.best_split([0.5, 0.5, 0.5], [True, False, False]) - 2 / 3) < 1e-12
