"""Output for people (stderr, rich) and for scripts (stdout, one JSON object)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"json": False, "quiet": False}


def set_json_mode(on: bool) -> None:
    _state["json"] = bool(on)


def json_mode() -> bool:
    return _state["json"]


def emit(obj: Any) -> None:
    """Print one JSON object to stdout."""
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def out(text: str = "") -> None:
    """Print a result line to stdout (human mode)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    """A message for people, on stderr (silent in --json mode)."""
    if not _state["json"]:
        console.print(msg)


def quiet_dependency_warnings() -> None:
    """Hide a dependency's deprecation notice at import (noise to users; shown with --debug / UNISEG_DEBUG=1)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)


def progress_enabled() -> bool:
    if _state["json"] or os.environ.get("UNISEG_NO_PROGRESS") == "1":
        return False
    return console.is_terminal


@contextlib.contextmanager
def progress(*extra_columns, transient: bool = False) -> Iterator[Progress]:
    """A rich progress display on stderr; a no-op display when stderr is no TTY or --json is set."""
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    p = Progress(*cols, console=console, disable=not progress_enabled(), transient=transient)
    with p:
        yield p


def print_manifest(art, lineage: list[dict], problems: list[str]) -> None:
    m = art.manifest
    t = Table(title=f"{m['kind']} {m['run_id']}", show_header=False, title_justify="left")
    t.add_row("path", str(art.path))
    t.add_row("created", str(m.get("created_utc")))
    t.add_row("argv", " ".join(map(str, m.get("argv", []))))
    git = m.get("git") or {}
    t.add_row("git", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}")
    t.add_row("params", json.dumps(m.get("params", {}), sort_keys=True)[:2000])
    for o in m["outputs"]:
        t.add_row("output", f"{o['path']}  {o['bytes']} B  sha256:{o['sha256'][:12]}")
    Console(highlight=False).print(t)
    _print_lineage(lineage, 0)
    if problems:
        console.print("[red]verification FAILED[/red]")
    else:
        console.print("[green]verified[/green]: every output matches its sha256")


def _print_lineage(lin: list[dict], depth: int) -> None:
    c = Console(highlight=False)
    if depth == 0 and lin:
        c.print("lineage:")
    for e in lin:
        status = "" if e.get("found") else "  (not found under this root)"
        c.print("  " * (depth + 1) + f"<- {e['kind']} {e['run_id']}{status}", markup=False)
        _print_lineage(e.get("inputs", []), depth + 1)
