"""Checkpoints: safetensors for tensors, JSON for everything else; loading never executes code.

A checkpoint named ``NAME`` in a directory is two files::

    NAME.safetensors   every tensor: model state (``model.<key>``), optimiser moments
                       (``optim.<param name>.<slot>``), torch RNG states (``rng.torch``, ``rng.cuda.<i>``),
                       and any tensors a stage adds (``extra.<key>``)
    NAME.json          schema ``uniseg.checkpoint/1``; the resolved config, the training state
                       (iteration, phase, scheduler, optimiser hyper-parameters, python/numpy RNG, AMP
                       scaler, stage extras) and ``tensors_sha256``, the hash of NAME.safetensors

Both files are written through a temporary sibling and ``os.replace``; the JSON goes last and
names the hash of the tensors it belongs to, so a pair torn by a kill between the two renames
is recognised (:func:`latest_checkpoint` then falls back to the previous complete one). Reading
uses ``safetensors.torch.load_file`` and ``json`` only: no pickle, no code from the file runs.

Optimiser state is stored by parameter *name*, not by index, so it survives a rebuild of the
parameter groups (see :func:`optimizer_state_to_flat` / :func:`optimizer_state_from_flat`).
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from uniseg_cli.artifacts import atomic_write_text, sha256_file
from uniseg_cli.errors import ArtifactError

SCHEMA = "uniseg.checkpoint/1"
_CKPT_RE = re.compile(r"^ckpt-(\d{9})\.json$")


def checkpoint_name(iteration: int) -> str:
    """``ckpt-000001000`` for iteration 1000 (sorts by name = sorts by iteration)."""
    return f"ckpt-{iteration:09d}"


# --------------------------------------------------------------------------------------- write / read


def write_checkpoint(directory: str | Path, name: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``NAME.safetensors`` then ``NAME.json`` atomically; return the JSON path.

    Args:
        directory: where to write (created if missing).
        name: file stem, e.g. ``model`` or :func:`checkpoint_name` (it).
        tensors: name -> tensor (moved to CPU, made contiguous; shared storage is copied apart).
        meta: JSON-serialisable dict (config, training state); ``schema`` and ``tensors_sha256``
            are added.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    st_path = d / f"{name}.safetensors"
    tmp = d / f".{name}.safetensors.tmp-{os.getpid()}"
    save_file(flat, str(tmp), metadata={"schema": SCHEMA})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, st_path)
    doc = {"schema": SCHEMA, **dict(meta), "tensors_sha256": sha256_file(st_path)}
    js_path = d / f"{name}.json"
    atomic_write_text(js_path, json.dumps(doc, indent=1, sort_keys=True, default=_json_default) + "\n")
    return js_path


def read_checkpoint(directory: str | Path, name: str, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint pair (tensors on CPU, meta dict). Exit-3 :class:`ArtifactError` when bad."""
    d = Path(directory)
    js_path, st_path = d / f"{name}.json", d / f"{name}.safetensors"
    for p in (js_path, st_path):
        if not p.is_file():
            raise ArtifactError(f"checkpoint file {p} is missing", hint="point at a directory that holds NAME.json and NAME.safetensors.")
    try:
        meta = json.loads(js_path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"checkpoint {js_path} is not valid JSON: {e}", hint="the file is damaged; rebuild it.") from e
    if not isinstance(meta, dict) or str(meta.get("schema", "")).split("/")[0] != SCHEMA.split("/")[0]:
        raise ArtifactError(f"{js_path} is not a uniseg checkpoint (schema {meta.get('schema') if isinstance(meta, dict) else None!r})",
                            hint=f"expected schema {SCHEMA}.")
    if verify and meta.get("tensors_sha256") != sha256_file(st_path):
        raise ArtifactError(f"checkpoint {st_path} does not match {js_path.name} (sha256 differs)",
                            hint="the pair was torn or edited; use an earlier checkpoint or rebuild.")
    try:
        tensors = load_file(str(st_path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"cannot read tensors from {st_path}: {e}", hint="the file is damaged; rebuild it.") from e
    return tensors, meta


def list_checkpoints(directory: str | Path) -> list[tuple[int, str]]:
    """(iteration, name) of every ``ckpt-*`` JSON in ``directory``, newest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p.stem))
    return sorted(out, reverse=True)


def latest_checkpoint(directory: str | Path) -> str | None:
    """The name of the newest complete, hash-consistent ``ckpt-*`` pair, or None."""
    for _, name in list_checkpoints(directory):
        st = Path(directory) / f"{name}.safetensors"
        try:
            meta = json.loads((Path(directory) / f"{name}.json").read_text())
            if st.is_file() and meta.get("tensors_sha256") == sha256_file(st):
                return name
        except (OSError, ValueError):
            continue
    return None


def prune_checkpoints(directory: str | Path, keep: int = 2) -> None:
    """Delete all but the ``keep`` newest ``ckpt-*`` pairs (and stale temporaries)."""
    d = Path(directory)
    for _, name in list_checkpoints(d)[keep:]:
        for suffix in (".json", ".safetensors"):
            (d / f"{name}{suffix}").unlink(missing_ok=True)
    for p in d.glob(".*.tmp-*") if d.is_dir() else []:
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- optimiser


def optimizer_state_to_flat(optimizer: torch.optim.Optimizer, names: Mapping[int, str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors keyed by parameter name and a JSON part.

    Args:
        names: ``id(param) -> parameter name`` for every parameter in the optimiser.
    Returns:
        (``{"optim.<name>.<slot>": tensor}``, ``{"groups": [...hyper-params, param names], "scalars": {...}}``)
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    groups = []
    for g in optimizer.param_groups:
        hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
        groups.append({**hp, "params": [names[id(p)] for p in g["params"]]})
        for p in g["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            n = names[id(p)]
            for slot, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{n}.{slot}"] = v
                else:
                    scalars.setdefault(n, {})[slot] = v
    return tensors, {"groups": groups, "scalars": scalars}


def optimizer_state_from_flat(optimizer: torch.optim.Optimizer, params_by_name: Mapping[str, torch.nn.Parameter],
                              tensors: Mapping[str, torch.Tensor], doc: Mapping) -> None:
    """Restore what :func:`optimizer_state_to_flat` wrote into an optimiser with the same groups."""
    saved_groups = doc["groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise ArtifactError(f"checkpoint has {len(saved_groups)} optimiser groups, the model has {len(optimizer.param_groups)}",
                            hint="the checkpoint belongs to a different model or recipe; start a fresh run.")
    optimizer.state.clear()
    for g, sg in zip(optimizer.param_groups, saved_groups):
        for k, v in sg.items():
            if k != "params" and k in g:
                g[k] = tuple(v) if isinstance(g[k], tuple) else v
    by_param: dict[str, dict] = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            name, slot = key[len("optim."):].rsplit(".", 1)
            by_param.setdefault(name, {})[slot] = t
    for name, sc in doc.get("scalars", {}).items():
        by_param.setdefault(name, {}).update(sc)
    for name, st in by_param.items():
        p = params_by_name.get(name)
        if p is None:
            raise ArtifactError(f"checkpoint has optimiser state for unknown parameter {name!r}",
                                hint="the checkpoint belongs to a different model; start a fresh run.")
        optimizer.state[p] = {k: (v.to(p.device) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in st.items()}


# --------------------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Python, numpy and torch (CPU and CUDA) RNG states as (tensors, JSON)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    v, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    doc = {"python": [v, list(internal), gauss],
           "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, doc


def set_rng_state(tensors: Mapping[str, torch.Tensor], doc: Mapping) -> None:
    """Restore what :func:`rng_state` returned."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([c.to(torch.uint8) for c in cuda[: torch.cuda.device_count()]])
    if "python" in doc:
        v, internal, gauss = doc["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in doc:
        name, keys, pos, has_gauss, cached = doc["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _json_default(o: Any) -> Any:
    if torch.is_tensor(o) and o.numel() == 1:
        return o.item()
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
