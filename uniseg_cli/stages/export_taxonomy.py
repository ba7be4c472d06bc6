"""Stage ``export-taxonomy``: a training run's label mappings as the shareable ``taxonomy.parquet``.

Reads ``training/<run>/taxonomy_state.h5`` (boolean mappings, soft adjacency, pixel shares; see
:func:`read_taxonomy_state`) and publishes ``taxonomy/<run>/``:

- ``taxonomy.parquet`` in the ``uniseg.taxonomy/1`` schema (DESIGN §3): one row per edge, ``weight`` =
  the soft adjacency S[c, u] at export, ``pixel_share`` = the share of label c's held-out pixels that
  the model assigns to node u. ``unified_id`` stays the model's output channel; inactive nodes (no
  edge) are left out, so ids can have gaps. It opens as-is in pyarrow, pandas and DuckDB.
- ``taxonomy.svg`` and ``taxonomy.png``: the bipartite picture (:mod:`uniseg_cli.taxonomy.render`).

Node names (``name_provider``): ``members`` joins up to three distinct member labels, preferring the
labels that map to this node alone (fine-grained ones name a node better than a coarse label that is
split over several nodes), then the most frequent, then the shortest; ``openai`` asks the
describe-labels LLM client (any OpenAI-compatible server, answers cached) for a short name and falls
back to the member name when the answer is unusable. A duplicate name gets a suffix: the dataset of a
node that only one dataset labels (``Curb (vistadrive)``), else a number (`` (2)``).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from uniseg_cli import artifacts as A
from uniseg_cli.errors import ArtifactError
from uniseg_cli.stages import StageContext, StageSpec, register

KIND = "taxonomy"
STATE_FILE = "taxonomy_state.h5"
FILENAME = "taxonomy.parquet"
NAME_PROMPT = (
    "Several semantic segmentation datasets label the same visual concept with these classes:\n{members}\n"
    "Give one short, precise English name (one to four words, lower case) for the concept they share. "
    "Reply with the name only."
)


@dataclasses.dataclass(frozen=True)
class Params:
    name_provider: str = "members"  # members (join member labels) or openai (an LLM proposes names)
    model: str = "gpt-4o-mini"  # the LLM's name on the server (openai provider)
    base_url: str | None = None  # server address; default $OPENAI_BASE_URL, else api.openai.com
    picture: bool = True  # also write taxonomy.svg and taxonomy.png
    png_scale: float = 2.0  # PNG pixels per SVG unit

    def validate(self) -> None:
        if self.name_provider not in ("members", "openai"):
            raise ValueError(f"name_provider: must be members or openai, got {self.name_provider!r}")
        if not 0.25 <= self.png_scale <= 8:
            raise ValueError(f"png_scale: must be within [0.25, 8], got {self.png_scale}")


# --------------------------------------------------------------------------------------------- state file


def read_taxonomy_state(path: str | Path) -> dict:
    """Read the train stage's ``taxonomy_state.h5``.

    Layout: root attribute ``datasets`` (JSON: name -> ordered class names, pipeline order); per dataset
    ``mapping/<name>`` bool (n_d, N), ``adjacency/<name>`` float (n_d, N) soft S[c, u], and optionally
    ``pixel_share/<name>`` float (n_d, N).

    Returns:
        ``{"datasets": {name: [classes]}, "mappings": {name: bool}, "soft": {name: float32},
        "pixel_share": {name: float32} | None, "run_id": str | None}``
    """
    import json

    import h5py

    path = Path(path)
    hint = "rebuild the training run with `uniseg train --force`."
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({e})", hint=hint) from None
    with f:
        raw = f.attrs.get("datasets")
        if raw is None:
            raise ArtifactError(f"{path}: root attribute 'datasets' (name -> classes) is missing", hint=hint)
        try:
            datasets = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
        except (ValueError, TypeError):
            raise ArtifactError(f"{path}: root attribute 'datasets' is not JSON", hint=hint) from None
        out = {"datasets": {d: list(c) for d, c in datasets.items()}, "mappings": {}, "soft": {},
               "pixel_share": {} if "pixel_share" in f else None, "run_id": f.attrs.get("run_id")}
        n = None
        for d, classes in datasets.items():
            for grp, key, dtype in (("mapping", "mappings", bool), ("adjacency", "soft", np.float32),
                                    ("pixel_share", "pixel_share", np.float32)):
                if out[key] is None:
                    continue
                if d not in f.get(grp, {}):
                    raise ArtifactError(f"{path}: dataset '{grp}/{d}' is missing", hint=hint)
                a = np.asarray(f[grp][d][()], dtype=dtype)
                n = a.shape[1] if n is None and a.ndim == 2 else n
                if a.shape != (len(classes), n):
                    raise ArtifactError(f"{path}: '{grp}/{d}' has shape {a.shape}, expected ({len(classes)}, {n})",
                                        hint=hint)
                out[key][d] = a
    if isinstance(out["run_id"], bytes):
        out["run_id"] = out["run_id"].decode()
    return out


def write_taxonomy_state(path: str | Path, datasets: dict, mappings: dict, soft: dict, pixel_share: dict | None = None,
                         run_id: str | None = None) -> Path:
    """Write the layout :func:`read_taxonomy_state` reads (for the train stage, tests and imports)."""
    import json

    import h5py

    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = "uniseg.taxonomy-state/1"
        f.attrs["datasets"] = json.dumps({d: list(c) for d, c in datasets.items()})
        if run_id is not None:
            f.attrs["run_id"] = run_id
        for d in datasets:
            f.create_dataset(f"mapping/{d}", data=np.asarray(mappings[d], dtype=bool))
            f.create_dataset(f"adjacency/{d}", data=np.asarray(soft[d], dtype=np.float32))
            if pixel_share is not None:
                f.create_dataset(f"pixel_share/{d}", data=np.asarray(pixel_share[d], dtype=np.float32))
    return path


# --------------------------------------------------------------------------------------------- names


def member_names(tax) -> dict[int, str]:
    """A readable, unique name per active node from its member labels (see the module docstring)."""
    names = {}
    for u in tax.active_nodes():
        stats: dict[str, list] = {}  # normalised name -> [split?, count, len, first position, spelling]
        for pos, (d, c, label) in enumerate(tax.members(u)):
            key = " ".join(label.strip().lower().replace("_", " ").split())
            split = bool(tax.mappings[d][c].sum() > 1)
            if key not in stats:
                stats[key] = [split, 0, len(key), pos, label.strip()]
            stats[key][0] = stats[key][0] and split
            stats[key][1] += 1
        ranked = sorted(stats.values(), key=lambda s: (s[0], -s[1], s[2], s[3]))
        names[u] = " / ".join(s[4] for s in ranked[:3])
    # a name shared by several nodes: a node of one dataset says which (e.g. "Curb (vistadrive)")
    tags = {u: d.pop() for u in names if len(d := {m[0] for m in tax.members(u)}) == 1}
    return _unique(names, tags)


def _unique(names: dict[int, str], tags: dict[int, str] | None = None) -> dict[int, str]:
    """Make names unique (case-insensitively): the first keeps its name, later ones get a tag or a number."""
    seen: dict[str, int] = {}
    taken = {n.lower() for n in names.values()}
    out = {}
    for u in sorted(names):
        base = names[u]
        k = seen.get(base.lower(), 0) + 1
        seen[base.lower()] = k
        if k == 1:
            out[u] = base
            continue
        cand = f"{base} ({tags[u]})" if tags and u in tags else f"{base} ({k})"
        while cand.lower() in taken:
            k += 1
            cand = f"{base} ({k})"
        taken.add(cand.lower())
        out[u] = cand
    return out


def llm_names(tax, p: Params, root: Path) -> tuple[dict[int, str], dict]:
    """Names proposed by an LLM (cached); the member name where the answer is unusable."""
    from uniseg_cli.text import llm
    from uniseg_cli.text.llm_cache import ResponseCache, default_cache_dir

    fallback = member_names(tax)
    nodes = tax.active_nodes()
    prompts = [NAME_PROMPT.format(members="\n".join(f"- {label!r} ({d})" for d, _, label in tax.members(u)))
               for u in nodes]
    with ResponseCache(default_cache_dir(root)) as cache:
        client = llm.OpenAIDescriber(p.model, base_url=p.base_url, max_tokens=16, cache=cache,
                                     system_prompt="You name classes of a unified semantic segmentation taxonomy.")
        answers = client.describe(prompts)
        stats = client.stats.to_json()
    names = {}
    for u, text in zip(nodes, answers):
        t = re.sub(r"\s+", " ", text.strip().splitlines()[0] if text.strip() else "").strip(" .\"'`*")
        names[u] = t if 0 < len(t) <= 60 else fallback[u]
    return _unique(names), stats


# --------------------------------------------------------------------------------------------- stage


def build_taxonomy(state: dict, sources: dict):
    """A :class:`~uniseg_cli.taxonomy.schema.Taxonomy` from :func:`read_taxonomy_state`'s dict (member names)."""
    from uniseg_cli.taxonomy.schema import Taxonomy, validate

    tax = Taxonomy.from_mappings(state["mappings"], datasets=state["datasets"], weights=state["soft"],
                                 pixel_share=state["pixel_share"], sources=sources)
    validate(tax, "the training run's boolean mapping")
    tax.names = member_names(tax)
    return tax


def run(ctx: StageContext) -> A.Artifact:
    """Export the training run's taxonomy (Parquet + picture).

    Args:
        ctx: ``ctx.inputs["train"]`` is the ``training`` artifact; ``ctx.params`` is :class:`Params`.

    Returns:
        The published ``taxonomy`` artifact; ``extra.summary`` holds node/label/merge/split counts.
    """
    from uniseg_cli.taxonomy.render import render_taxonomy
    from uniseg_cli.taxonomy.schema import write_taxonomy

    p: Params = ctx.params
    train = ctx.inputs["train"]
    state = read_taxonomy_state(train.file(STATE_FILE))
    sources = {"training": train.run_id}
    for inp in train.manifest.get("inputs", []):
        if not inp["kind"].startswith("dataset:"):
            sources[inp["kind"]] = inp["run_id"]
    tax = build_taxonomy(state, sources)
    extra = {}
    if p.name_provider == "openai":
        tax.names, extra["llm"] = llm_names(tax, p, ctx.root)
    summary = taxonomy_summary(tax)
    with ctx.publish() as st:
        write_taxonomy(tax, st.dir / FILENAME, kind=KIND, run_id=st.run_id)
        if p.picture:
            render_taxonomy(tax, st.dir / "taxonomy.svg", st.dir / "taxonomy.png", png_scale=p.png_scale,
                            title=f"uniseg taxonomy {st.run_id}")
        st.extra["summary"] = summary
        st.extra.update(extra)
    return st.artifact


def taxonomy_summary(tax) -> dict:
    n_labels = sum(len(c) for c in tax.datasets.values())
    merged = sum(1 for u in tax.active_nodes() if len({d for d, _, _ in tax.members(u)}) > 1)
    split = sum(int((m.sum(axis=1) > 1).sum()) for m in tax.mappings.values())
    return {"nodes": tax.num_nodes, "channels": tax.num_channels, "labels": n_labels, "datasets": len(tax.datasets),
            "merged_nodes": merged, "split_labels": split}


def _summary(art: A.Artifact) -> dict:
    s = dict(art.manifest.get("extra", {}).get("summary", {}))
    s["taxonomy"] = str(art.path / FILENAME)
    if (art.path / "taxonomy.svg").exists():
        s["picture"] = str(art.path / "taxonomy.svg")
    return s


SPEC = register(StageSpec("export-taxonomy", KIND, Params, run, needs=("train",), summary=_summary))
