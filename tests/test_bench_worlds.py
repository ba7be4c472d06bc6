"""bench/worlds.py's seed ranges and its per-world summary (the runs themselves are the stages, tested elsewhere)."""
import importlib.util
import sys
from pathlib import Path

import pytest

_bench = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(_bench))
_spec = importlib.util.spec_from_file_location("bench_worlds", _bench / "worlds.py")
bw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bw)


def test_seed_ranges():
    assert bw.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert bw.parse_seeds("5, 2,2") == [2, 5]
    for bad in ("", "a", "3-1", "-2"):
        with pytest.raises(ValueError, match="--seeds"):
            bw.parse_seeds(bad)


def test_summary_counts_worlds_on_target_per_kind():
    rows = [
        {"seed": 0, "world": "default", "init": {"f1": 1.0}, "final": {"f1": 1.0, "hard_recall": 1.0}},
        {"seed": 1, "world": "default", "init": {"f1": 0.9}, "final": {"f1": 0.96, "hard_recall": 0.6}},
        {"seed": 0, "world": "anonymized", "init": {"f1": 0.92}, "final": {"f1": 0.88, "hard_recall": None}},
    ]
    s = bw.summarize(rows)
    assert s["default"]["final"] == {"worlds": 2, "f1": {"mean": 0.98, "min": 0.96},
                                     "hard_recall": {"mean": 0.8, "min": 0.6}, "on_target": 1}
    assert s["default"]["init"]["on_target"] == 1  # the initial mapping is held to F1 only
    assert s["anonymized"]["init"]["on_target"] == 1 and s["anonymized"]["final"]["on_target"] == 0
    assert "language" not in s["default"]
