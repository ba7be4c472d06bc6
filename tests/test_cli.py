"""The CLI surface: every command has help and is in the README; errors print Error/Hint and exit by class."""
import json
import subprocess
import sys
from pathlib import Path

import typer

from uniseg_cli import errors as E
from uniseg_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _commands():
    group = typer.main.get_command(app)
    out = []

    def walk(g, prefix):
        for name, cmd in g.commands.items():
            full = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                walk(cmd, full)
            else:
                out.append((full, cmd))

    walk(group, "")
    return out


def test_every_command_has_help_and_is_in_the_readme(cli):
    readme = (ROOT / "README.md").read_text()
    cmds = _commands()
    assert {"run", "inspect"} <= {c for c, _ in cmds}
    for name, cmd in cmds:
        assert (cmd.help or "").strip(), f"`uniseg {name}` has no help text"
        code, out, err = cli(*name.split(), "--help")
        assert code == 0 and "Usage:" in out, name
        assert f"uniseg {name}" in readme, f"`uniseg {name}` is not described in README.md"


def test_every_command_has_a_json_flag_where_it_prints_results():
    for name, cmd in _commands():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert "--json" in opts, f"`uniseg {name}` has no --json"


def test_exit_code_table():
    assert E.EXIT_CODES == {"ok": 0, "failed": 1, "usage": 2, "artifact": 3, "exists": 4, "data": 5,
                            "service": 6, "interrupted": 130}
    assert issubclass(E.ArtifactError, E.UnisegError)


def test_known_error_prints_error_and_hint_without_traceback(cli, tmp_path):
    code, out, err = cli("inspect", str(tmp_path / "nope"))
    assert code == 3
    assert err.startswith("Error: ") and "Hint:" in err and "Traceback" not in err
    assert out == ""


def test_debug_shows_the_traceback(cli, tmp_path):
    code, out, err = cli("--debug", "inspect", str(tmp_path / "nope"))
    assert code == 3 and "Traceback" in err


def test_debug_after_the_command_shows_the_traceback_and_reaches_child_processes(cli, tmp_path):
    import os

    code, out, err = cli("inspect", str(tmp_path / "nope"), "--debug")
    assert code == 3 and "Traceback" in err and "No such option" not in err
    assert os.environ.get("UNISEG_DEBUG") == "1"  # what a spawned process inherits


def test_debug_after_a_double_dash_is_an_argument(cli, tmp_path):
    code, out, err = cli("inspect", "--", "--debug")
    assert code == 3 and "Traceback" not in err and "--debug" in err


def test_usage_error_is_exit_2(cli):
    code, out, err = cli("run", "--no-such-flag")
    assert code == 2


def test_a_bad_flag_value_is_named_before_inputs_are_looked_up(cli, tmp_path):
    # no datasets, no upstream artifacts: the bad value is still what the user hears about first
    code, _, err = cli("train", "--label-logits", "max", "--dataset", str(tmp_path / "missing"))
    assert code == 2 and "label_logits must be sum or logsumexp, got 'max'" in err
    code, _, err = cli("estimate-nodes", "--tau", "5")
    assert code == 2 and "tau must lie in [0, 1]" in err
    code, _, err = cli("estimate-nodes", "--tau", "0.5")
    assert code == 2 and "needs datasets" in err  # a good value goes on to the next check


def test_inspect_prints_lineage_and_verifies(cli, tmp_path):
    from uniseg_cli import artifacts as A

    with A.publish(tmp_path, "label-descriptions", {"p": 1}) as st:
        (st.dir / "descriptions.parquet").write_bytes(b"d")
    up = st.artifact
    with A.publish(tmp_path, "label-features", {"p": 2}, [up.ref()]) as st:
        (st.dir / "features.h5").write_bytes(b"f")
    down = st.artifact
    code, out, err = cli("inspect", str(down.path), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["verified"] and rep["kind"] == "label-features"
    assert rep["lineage"][0]["kind"] == "label-descriptions" and rep["lineage"][0]["found"]
    code, out, err = cli("inspect", str(down.path))
    assert code == 0 and "label-descriptions" in out and "verified" in err
    (down.path / "features.h5").write_bytes(b"F")
    code, out, err = cli("inspect", str(down.path), "--json")
    assert code == 3 and json.loads(out)["verified"] is False and "features.h5" in err


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "uniseg_cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "inspect" in r.stdout


def test_ctrl_c_exits_130_with_a_message_and_publishes_nothing(tmp_path):
    import os
    import signal
    import time

    from uniseg_cli.data.synthetic import make_world

    make_world(tmp_path / "w", seed=0, preset="tiny")
    args = [sys.executable, "-m", "uniseg_cli", "estimate-nodes", "--iters", "100000", "--crop-size", "32",
            "--artifacts", str(tmp_path / "a")]
    for n in ("citydrive", "vistadrive"):
        args += ["--dataset", str(tmp_path / "w" / n)]
    # a shell that starts the suite in the background (`make test &`) leaves SIGINT ignored, and a child
    # inherits that: give the child the default disposition, as an interactive terminal would
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "UNISEG_NO_PROGRESS": "1"},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    work = tmp_path / "a" / "node-estimate"
    deadline = time.time() + 120
    while time.time() < deadline and not (work.is_dir() and any(work.glob(".work-*"))):
        time.sleep(0.2)  # training has started once its work folder exists
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    assert [d.name for d in work.iterdir() if not d.name.startswith(".")] == []  # nothing published
