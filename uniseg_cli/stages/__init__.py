"""Stages: the pipeline's steps, each a module with a params dataclass and ``run(ctx) -> Artifact``.

A stage module registers a :class:`StageSpec` at import time (see the bottom of each module). The
pipeline runner and the CLI both go through :func:`execute`, which computes the run id, skips or
refuses an existing run, and calls the stage's ``run``.

Stage authors write::

    @dataclasses.dataclass(frozen=True)
    class Params:
        model: str = "..."   # trailing comment = help text

    def run(ctx: StageContext) -> Artifact:
        p: Params = ctx.params
        feats = ctx.inputs["describe-labels"]          # upstream artifacts, by stage name
        with ctx.publish() as st:                      # staging dir; manifest written last
            write(st.dir / "features.h5", run_id=st.run_id)
        return st.artifact

    SPEC = register(StageSpec("embed-labels", "label-features", Params, run, needs=("describe-labels",),
                              datasets="labels"))
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Literal

from uniseg_cli import artifacts as A
from uniseg_cli.data.base import DatasetSpec
from uniseg_cli.errors import ArtifactError, UsageError

#: Pipeline order. Modules are imported lazily so that `uniseg --help` stays fast.
STAGE_ORDER = [
    "describe-labels",
    "embed-labels",
    "estimate-nodes",
    "train",
    "export-taxonomy",
    "evaluate",
]
STAGE_MODULES = {
    "describe-labels": "uniseg_cli.stages.describe_labels",
    "embed-labels": "uniseg_cli.stages.embed_labels",
    "estimate-nodes": "uniseg_cli.stages.estimate_nodes",
    "train": "uniseg_cli.stages.train",
    "export-taxonomy": "uniseg_cli.stages.export_taxonomy",
    "evaluate": "uniseg_cli.stages.evaluate",
}

_REGISTRY: dict[str, "StageSpec"] = {}


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str  # command name, e.g. "embed-labels"
    kind: str  # artifact kind it publishes, e.g. "label-features"
    params_cls: type  # frozen dataclass; fields = pipeline keys = flags
    run: Callable[["StageContext"], A.Artifact]
    needs: tuple[str, ...] = ()  # upstream stages whose artifacts it reads
    datasets: Literal["none", "labels", "full"] = "none"  # how the datasets enter the run id
    summary: Callable[[A.Artifact], dict] | None = None  # short result for run's report
    # Inputs named by params (a descriptions file, a local model folder): params -> their InputRefs,
    # so that a changed file changes the run id. Must be cheap and must not raise.
    extra_inputs: Callable[[Any], list[A.InputRef]] | None = None


def register(spec: StageSpec) -> StageSpec:
    _REGISTRY[spec.name] = spec
    return spec


def available_stages() -> list[str]:
    """The stages whose module exists (later issues add theirs)."""
    out = []
    for name in STAGE_ORDER:
        try:
            get_stage(name)
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def get_stage(name: str) -> StageSpec:
    if name not in STAGE_MODULES:
        raise UsageError(f"unknown stage {name!r}", hint=f"stages: {', '.join(STAGE_ORDER)}")
    if name not in _REGISTRY:
        mod = STAGE_MODULES[name]
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                raise
            raise
    return _REGISTRY[name]


# --------------------------------------------------------------------------------------------- datasets


def dataset_fingerprint(spec: DatasetSpec, depth: Literal["labels", "full"]) -> str:
    """A content fingerprint of a dataset, cheap enough to compute on every run.

    ``labels``: the label space (class names, ignore index, descriptions) only.
    ``full``: plus every file's relative path and size under the split folders (like a DVC
    directory hash by size, without reading 100k images on every run).
    """
    from uniseg_cli.data import open_dataset

    ad = open_dataset(spec)
    ls = ad.label_space
    h = hashlib.sha256()
    h.update(A.canonical_json({"name": spec.name, "format": spec.format, "classes": list(ls.classes),
                               "ignore": ls.ignore_index, "descriptions": list(ls.descriptions or [])}).encode())
    if depth == "full":
        for split in sorted(ad.splits()):
            for s in ad.samples(split):
                for p in (s.image_path, s.label_path):
                    if p is not None:
                        st = Path(p).stat()
                        h.update(f"{split}|{Path(p).name}|{st.st_size}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- context


@dataclasses.dataclass
class StageContext:
    spec: StageSpec
    params: Any
    inputs: dict[str, A.Artifact]
    datasets: list[DatasetSpec]
    root: Path
    force: bool = False
    argv: list[str] = dataclasses.field(default_factory=lambda: list(sys.argv))
    extra_inputs: list[A.InputRef] = dataclasses.field(default_factory=list)  # e.g. --multihead CKPT
    _refs: list[A.InputRef] | None = None

    @property
    def train_datasets(self) -> list[DatasetSpec]:
        return [d for d in self.datasets if d.role == "train"]

    @property
    def unseen_datasets(self) -> list[DatasetSpec]:
        return [d for d in self.datasets if d.role == "unseen"]

    def input_refs(self) -> list[A.InputRef]:
        if self._refs is None:
            refs = [a.ref() for a in self.inputs.values()] + list(self.extra_inputs)
            if self.spec.extra_inputs is not None:
                refs += self.spec.extra_inputs(self.params)
            if self.spec.datasets != "none":
                for d in self.datasets:
                    refs.append(A.InputRef(f"dataset:{d.name}", str(d.root), dataset_fingerprint(d, self.spec.datasets)))
            self._refs = refs
        return self._refs

    def run_id(self) -> str:
        return A.run_id_for(self.spec.kind, self.params_dict(identity=True), self.input_refs())

    def params_dict(self, identity: bool = False) -> dict:
        """The params as recorded in the manifest; with ``identity``, only those the stage's output depends
        on (``Params.identity()`` where a stage defines it), which is what the run id is made from."""
        from uniseg_cli.config import to_dict

        d = to_dict(self.params)
        if identity and hasattr(self.params, "identity"):
            d = {k: v for k, v in d.items() if k in self.params.identity()}
        d["_datasets"] = [dataclasses.asdict(x) | {"root": None} for x in self.datasets] if self.spec.datasets != "none" else []
        return d

    def out_dir(self) -> Path:
        return A.artifact_dir(self.root, self.spec.kind, self.run_id())

    def publish(self):
        """Context manager yielding a :class:`uniseg_cli.artifacts.Staging`; see its docs."""
        return A.publish(
            self.root, self.spec.kind, self.params_dict(), self.input_refs(), force=self.force, argv=self.argv,
            run_id=self.run_id(),
        )


def execute(ctx: StageContext, *, skip_existing: bool = False) -> tuple[A.Artifact, bool]:
    """Run a stage. Returns (artifact, ran). An existing run: reused if ``skip_existing``, else exit 4."""
    run_id = ctx.run_id()
    existing = A.find_artifact(ctx.root, ctx.spec.kind, run_id, check=False)
    if existing is not None and not ctx.force:
        problems = A.verify(existing.path, existing.manifest)
        if skip_existing and not problems:
            return existing, False
        if problems:
            raise ArtifactError(
                f"{ctx.spec.kind} {run_id} exists at {existing.path} but failed verification: " + "; ".join(problems),
                hint="re-run with --force to rebuild it.",
            )
        A.check_absent(ctx.root, ctx.spec.kind, run_id, force=False)  # raises exit 4
    art = ctx.spec.run(ctx)
    return art, True


def resolve_upstream(spec: StageSpec, given: dict[str, str | Path | None], root: Path) -> dict[str, A.Artifact]:
    """The upstream artifacts of a stage run alone: a path, a run id, or the newest of that kind."""
    out = {}
    for up in spec.needs:
        up_spec = get_stage(up)
        out[up] = A.resolve_input(given.get(up), root, up_spec.kind)
    return out
