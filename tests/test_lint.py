"""The package, the benches and the tests pass pyflakes' checks (ruff's F rules, pyproject.toml).

An undefined name in a command body is only found when that path runs: `predict --dataset` once
crashed with a NameError that no test reached. The static check finds such names everywhere.
"""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    assert found, "ruff is not installed: `make setup` installs it with the test extras (pip install -e '.[test]')"
    return [found]


def test_no_undefined_names_or_unused_imports():
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", "uniseg_cli", "bench", "tests"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_check_finds_an_undefined_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return parse_dataset_arg('x')\n")
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--select", "F", "--output-format", "concise", str(bad)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "F821" in r.stdout and "parse_dataset_arg" in r.stdout
