"""Test setup: nothing downloads, artifacts go to a temporary root, one thread per process."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("UNISEG_NO_PROGRESS", "1")
os.environ.pop("OPENAI_API_KEY", None)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _artifacts_root(tmp_path, monkeypatch):
    """Every test gets its own artifact root and never sees the user's."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("UNISEG_ARTIFACTS", str(root))
    monkeypatch.delenv("UNISEG_DEBUG", raising=False)
    yield root


@pytest.fixture
def cli(capsys):
    """Run `uniseg ARGS` through main(); return (exit_code, stdout, stderr)."""
    from uniseg_cli.cli import main

    def _run(*args: str):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run
