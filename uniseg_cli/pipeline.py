"""pipeline.yaml: parse, validate (every problem at once, with its line), order, skip-if-current, lock.

The file::

    artifacts: artifacts            # optional artifact root (flags and $UNISEG_ARTIFACTS win)
    synth:                          # optional: write the synthetic world when a dataset root is missing
      out: data/synth
      seed: 0
      preset: default
    datasets:
      - {name: drive_a, root: data/synth/drive_a, format: generic, role: train}
    stages:
      describe-labels: {provider: template}
      embed-labels: {model: minilm}
      ...

Relative paths are relative to the pipeline file's folder. Stages run in pipeline order; a stage
whose run id (kind, params, input hashes) already exists and verifies is skipped. Each run writes
``pipeline.lock`` beside the file: per stage, the resolved params and the input and output hashes.
"""
from __future__ import annotations

import dataclasses
import difflib
import time
from pathlib import Path
from typing import Any

import yaml

from uniseg_cli import artifacts as A
from uniseg_cli import stages as S
from uniseg_cli.config import build_params, coerce
from uniseg_cli.data.base import DatasetSpec
from uniseg_cli.errors import UnisegError, UsageError
from uniseg_cli.ui import console, info

TOP_KEYS = {"artifacts", "synth", "datasets", "stages", "truth"}
DATASET_KEYS = {f.name for f in dataclasses.fields(DatasetSpec)}
SYNTH_KEYS = {"out", "seed", "preset", "anonymize"}
LOCK_SCHEMA = "uniseg.lock/1"


@dataclasses.dataclass
class Pipeline:
    path: Path
    base: Path  # folder that relative paths are relative to
    artifacts: Path | None
    synth: dict | None
    datasets: list[DatasetSpec]
    sections: dict[str, dict]  # stage name -> raw section (validated)
    truth: Path | None

    @property
    def stage_names(self) -> list[str]:
        return [s for s in S.STAGE_ORDER if s in self.sections]


# --------------------------------------------------------------------------------------------- parse


def _compose_lines(text: str) -> dict[tuple, int]:
    """Map each key path (tuple of keys / indices) of a YAML document to its 1-based line."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def load_pipeline(path: str | Path, *, check_roots: bool = True) -> Pipeline:
    """Read and validate a pipeline file; UsageError listing every problem (with lines) at once."""
    path = Path(path)
    if not path.exists():
        raise UsageError(
            f"pipeline file {path} does not exist",
            hint="pass the path of a pipeline file (the demo is pipeline.yaml at the repository root).",
        )
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
        lines = _compose_lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}", hint="fix the YAML syntax.")
    problems: list[str] = []

    def err(keypath: tuple, msg: str) -> None:
        ln = lines.get(keypath)
        while ln is None and keypath:
            keypath = keypath[:-1]
            ln = lines.get(keypath)
        problems.append(f"{path}:{ln or 1}: {msg}")

    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping with datasets: and stages:")
    for k in data:
        if k not in TOP_KEYS:
            err((k,), f"unknown key {k!r} (known: {', '.join(sorted(TOP_KEYS))})")
    base = path.resolve().parent

    synth = data.get("synth")
    if synth is not None:
        if not isinstance(synth, dict):
            err(("synth",), "synth must be a mapping (out, seed, preset, anonymize)")
            synth = None
        else:
            for k in synth:
                if k not in SYNTH_KEYS:
                    err(("synth", k), f"unknown key synth.{k} (known: {', '.join(sorted(SYNTH_KEYS))})")
            if "out" not in synth:
                err(("synth",), "synth needs out: (the folder the world is written to)")

    datasets: list[DatasetSpec] = []
    raw_ds = data.get("datasets")
    if raw_ds is None:
        err((), "missing datasets: (a list of {name, root, format, role})")
        raw_ds = []
    elif not isinstance(raw_ds, list):
        err(("datasets",), "datasets must be a list of {name, root, format, role}")
        raw_ds = []
    from uniseg_cli.data import known_formats

    formats = known_formats()
    seen = set()
    synth_out = (base / str(synth["out"])).resolve() if synth and "out" in synth else None
    for i, d in enumerate(raw_ds):
        if not isinstance(d, dict):
            err(("datasets", i), "each dataset must be a mapping with name and root")
            continue
        bad = False
        for k in d:
            if k not in DATASET_KEYS:
                err(("datasets", i, k), f"unknown key {k!r} in a dataset (known: {', '.join(sorted(DATASET_KEYS))})")
        d = {k: v for k, v in d.items() if k in DATASET_KEYS}
        for k in ("name", "root"):
            if k not in d:
                err(("datasets", i), f"dataset #{i + 1} has no {k}")
                bad = True
            elif not isinstance(d[k], str):
                err(("datasets", i, k), f"{k} must be a string, got {d[k]!r}")
                bad = True
        if bad:
            continue
        if d["name"] in seen:
            err(("datasets", i, "name"), f"dataset name {d['name']!r} appears twice")
        seen.add(d["name"])
        fmt = d.get("format", "generic")
        if fmt not in formats:
            err(("datasets", i, "format"), f"unknown format {fmt!r} (known: {', '.join(formats)})")
        role = d.get("role", "train")
        if role not in ("train", "unseen"):
            err(("datasets", i, "role"), f"role must be train or unseen, got {role!r}")
        root = (base / d["root"]).resolve()
        made_by_synth = synth_out is not None and (root == synth_out or synth_out in root.parents)
        if check_roots and not root.exists() and not made_by_synth:
            err(("datasets", i, "root"), f"dataset root {root} does not exist")
        datasets.append(DatasetSpec(**{**d, "root": str(root)}))
    if raw_ds and not any(d.role == "train" for d in datasets):
        err(("datasets",), "no dataset has role: train")

    sections: dict[str, dict] = {}
    raw_st = data.get("stages") or {}
    if not isinstance(raw_st, dict):
        err(("stages",), "stages must be a mapping of stage name -> params")
        raw_st = {}
    avail = S.available_stages()
    for name, sec in raw_st.items():
        if name not in avail:
            close = difflib.get_close_matches(str(name), avail, n=1)
            err(("stages", name), f"unknown stage {name!r}" + (f" (did you mean {close[0]}?)" if close else "")
                + f" (stages: {', '.join(avail)})")
            continue
        sec = sec or {}
        if not isinstance(sec, dict):
            err(("stages", name), f"stages.{name} must be a mapping of params")
            continue
        spec = S.get_stage(name)
        _, full = coerce(spec.params_cls, sec, where=f"stages.{name}")
        left = list(full)
        for k, v in sec.items():  # point at the key's line when the key alone shows the problem
            _, errs = coerce(spec.params_cls, {k: v}, where=f"stages.{name}")
            for e in errs:
                if e in left:
                    err(("stages", name, k), e)
                    left.remove(e)
        for e in left:  # problems of several keys together (one needs another)
            err(("stages", name), e)
        sections[name] = sec
    for name in sections:
        for up in S.get_stage(name).needs:
            if up not in sections:
                err(("stages", name), f"stage {name} needs {up}, which the pipeline does not list")

    if problems:
        raise UsageError(
            f"{path} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n  " + "\n  ".join(problems),
            hint="fix them and re-run; `uniseg <stage> --help` lists each stage's params.",
        )
    art = data.get("artifacts")
    truth = data.get("truth")
    if truth is None and synth_out is not None:
        truth = synth_out / "truth.parquet"
    return Pipeline(
        path=path,
        base=base,
        artifacts=(base / art) if art else None,
        synth=synth,
        datasets=datasets,
        sections=sections,
        truth=(base / truth) if truth else None,
    )


def ensure_synth(p: Pipeline) -> dict | None:
    """Write the synthetic world if the pipeline has a synth: section and a dataset root is missing."""
    if not p.synth:
        return None
    missing = [d for d in p.datasets if not Path(d.root).exists()]
    if not missing:
        return None
    from uniseg_cli.data.synthetic import make_world
    from uniseg_cli.errors import OutputExistsError

    out = p.base / str(p.synth["out"])
    seed, preset = int(p.synth.get("seed", 0)), str(p.synth.get("preset", "default"))
    anonymize = bool(p.synth.get("anonymize", False))
    info(f"synth: writing the synthetic world to {out} (missing: {', '.join(d.name for d in missing)})")
    t0 = time.time()
    try:
        world = make_world(out, seed=seed, preset=preset, anonymize=anonymize)
    except OutputExistsError:  # an older world (another preset or version) that lacks a dataset of this pipeline
        again = f"uniseg synth --out {out} --preset {preset} --seed {seed}{' --anonymize' if anonymize else ''} --force"
        raise OutputExistsError(
            f"{p.path}: dataset(s) {', '.join(d.name for d in missing)} are missing, but {out} already holds a "
            "synthetic world, written by another preset or version",
            hint=f"write it afresh with `{again}` (or remove {out}); every stage whose data changed re-runs.",
        ) from None
    still = [d.name for d in p.datasets if not Path(d.root).exists()]
    if still:
        raise UsageError(
            f"{p.path}: the synthetic world at {out} has no dataset(s) {', '.join(still)}",
            hint="check the dataset roots against `uniseg synth --preset ... --json`.",
        )
    return {"out": str(out), "seconds": round(time.time() - t0, 2), **({"world": world} if isinstance(world, dict) else {})}


# --------------------------------------------------------------------------------------------- run


def stage_context(
    p: Pipeline | None,
    name: str,
    *,
    flags: dict | None = None,
    inputs: dict[str, A.Artifact],
    datasets: list[DatasetSpec],
    root: Path,
    force: bool,
    argv: list[str] | None = None,
    extra_inputs: list[A.InputRef] | None = None,
    params: Any = None,
) -> S.StageContext:
    """The stage's context; ``params`` (already built from the section and ``flags``) skips building them."""
    spec = S.get_stage(name)
    if params is None:
        section = p.sections.get(name, {}) if p is not None else {}
        params = build_params(spec.params_cls, section, flags or {}, where=name)
    ctx = S.StageContext(
        spec=spec, params=params, inputs=inputs, datasets=datasets, root=root, force=force,
        extra_inputs=list(extra_inputs or []),
    )
    if argv is not None:
        ctx.argv = argv
    return ctx


def run_pipeline(
    path: str | Path,
    *,
    force: list[str] | None = None,
    from_stage: str | None = None,
    until: str | None = None,
    dry_run: bool = False,
    artifacts: str | Path | None = None,
) -> dict:
    """Run (or plan, with ``dry_run``) a pipeline; return a report dict."""
    p = load_pipeline(path, check_roots=True)
    names = p.stage_names
    force = list(force or [])
    for f in force:
        if f != "all" and f not in names:
            raise UsageError(f"--force {f}: not a stage of {p.path}", hint=f"stages: {', '.join(names)}, or all")
    for opt, val in (("--from", from_stage), ("--until", until)):
        if val is not None and val not in names:
            raise UsageError(f"{opt} {val}: not a stage of {p.path}", hint=f"stages: {', '.join(names)}")
    if from_stage and until and names.index(from_stage) > names.index(until):
        raise UsageError(f"--from {from_stage} comes after --until {until}")
    root = A.artifacts_root(artifacts or p.artifacts)
    report: dict[str, Any] = {"pipeline": str(p.path), "artifacts": str(root), "dry_run": dry_run, "stages": []}
    if not dry_run:
        synth = ensure_synth(p)
        if synth:
            report["synth"] = synth
    elif p.synth and any(not Path(d.root).exists() for d in p.datasets):
        report["synth"] = {"out": str(p.base / str(p.synth["out"])), "status": "would run"}
        console.print(f"synth            would run: dataset roots missing under {p.synth['out']}")

    lock = _read_lock(p.path)
    results: dict[str, A.Artifact] = {}
    unknown: set[str] = set()  # stages whose output is not known in a dry run
    started = names.index(from_stage) if from_stage else 0
    stop = names.index(until) if until else len(names) - 1
    for i, name in enumerate(names):
        if i > stop:
            break
        spec = S.get_stage(name)
        entry: dict[str, Any] = {"stage": name, "kind": spec.kind}
        synth_pending = dry_run and "synth" in report and spec.datasets != "none"
        if synth_pending or any(up in unknown for up in spec.needs):
            why = "synth writes its datasets first" if synth_pending else "an upstream stage runs first"
            entry.update(run_id=None, action="run", reason=why)
            unknown.add(name)
            report["stages"].append(entry)
            console.print(f"{name:<16} {'?':<12} would run: {why}")
            continue
        ctx = stage_context(
            p, name, inputs={up: results[up] for up in spec.needs}, datasets=p.datasets, root=root,
            force=("all" in force or name in force),
        )
        run_id = ctx.run_id()
        entry["run_id"] = run_id
        existing = A.find_artifact(root, spec.kind, run_id, check=False)
        current = existing is not None and not A.verify(existing.path, existing.manifest)
        if i < started:
            if not current:
                raise UsageError(
                    f"--from {from_stage}: earlier stage {name} is not current (no verified {spec.kind} {run_id})",
                    hint=f"run without --from, or with --from {name}.",
                )
            results[name] = existing
            entry.update(action="skip", reason="before --from", path=str(existing.path))
            report["stages"].append(entry)
            continue
        if ctx.force:
            action, reason = "run", "forced"
        elif current:
            action, reason = "skip", "current: same params and inputs, outputs verify"
        elif existing is not None:
            action, reason = "run", "existing output failed verification"
        else:
            prev = (lock.get("stages") or {}).get(name)
            reason = "new run id" if not prev else _why_changed(prev, ctx)
            action = "run"
        entry.update(action=action, reason=reason)
        if dry_run:
            console.print(f"{name:<16} {run_id:<12} {'would run' if action == 'run' else 'skip'}: {reason}")
            if action == "run":
                unknown.add(name)
            else:
                results[name] = existing
                entry["path"] = str(existing.path)
            report["stages"].append(entry)
            continue
        t0 = time.time()
        if action == "skip":
            console.print(f"[dim]{name:<16} {run_id}  skip ({reason})[/dim]")
            art = existing
        else:
            console.rule(f"[bold]{name}[/bold] {run_id}")
            if existing is not None and not ctx.force:
                ctx.force = True  # replace the corrupt one, publishing the new one first
            art, _ = S.execute(ctx, skip_existing=False)
        results[name] = art
        entry.update(path=str(art.path), seconds=round(time.time() - t0, 2))
        if spec.summary is not None:
            try:
                entry["summary"] = spec.summary(art)
            except UnisegError:
                raise
            except Exception as e:  # a summary must never fail the run
                entry["summary"] = {"error": str(e)}
        report["stages"].append(entry)
        _update_lock(p.path, name, ctx, art)
    if not dry_run:
        report["summary"] = _final_summary(p, results)
        _print_summary(report)
    return report


def _why_changed(prev: dict, ctx: S.StageContext) -> str:
    params = ctx.params_dict()
    changed = sorted(k for k in set(params) | set(prev.get("params", {})) if params.get(k) != prev.get("params", {}).get(k))
    if changed:
        return "params changed: " + ", ".join(changed[:6])
    old_in = {(i["kind"], i["sha256"]) for i in prev.get("inputs", [])}
    new_in = {(r.kind, r.sha256) for r in ctx.input_refs()}
    if old_in != new_in:
        kinds = sorted({k for k, _ in old_in ^ new_in})
        return "inputs changed: " + ", ".join(kinds)
    return "output missing"


# --------------------------------------------------------------------------------------------- lock


def lock_path(pipeline_path: Path) -> Path:
    return Path(pipeline_path).with_name("pipeline.lock")


def _read_lock(pipeline_path: Path) -> dict:
    lp = lock_path(pipeline_path)
    if not lp.exists():
        return {}
    try:
        return yaml.safe_load(lp.read_text()) or {}
    except yaml.YAMLError:
        return {}


def _update_lock(pipeline_path: Path, name: str, ctx: S.StageContext, art: A.Artifact) -> None:
    lock = _read_lock(pipeline_path)
    lock["schema"] = LOCK_SCHEMA
    stages = lock.get("stages") or {}
    stages[name] = {
        "kind": ctx.spec.kind,
        "run_id": art.run_id,
        "params": ctx.params_dict(),
        "inputs": sorted((r.to_json() for r in ctx.input_refs()), key=lambda d: (d["kind"], d["run_id"])),
        "outputs": sorted(
            ({"path": o["path"], "sha256": o["sha256"], "bytes": o["bytes"]} for o in art.manifest["outputs"]),
            key=lambda d: d["path"],
        ),
    }
    lock["stages"] = stages
    text = yaml.safe_dump(lock, sort_keys=True, default_flow_style=False, allow_unicode=True)
    A.atomic_write_text(lock_path(pipeline_path), text)


# --------------------------------------------------------------------------------------------- summary


def _final_summary(p: Pipeline, results: dict[str, A.Artifact]) -> dict:
    out: dict[str, Any] = {"files": {name: str(a.path) for name, a in results.items()}}
    tax_art = results.get("export-taxonomy")
    if tax_art is not None:
        tax_file = next((tax_art.path / o["path"] for o in tax_art.manifest["outputs"] if o["path"].endswith(".parquet")), None)
        out["taxonomy"] = str(tax_file) if tax_file else None
        svg = tax_art.path / "taxonomy.svg"
        if svg.exists():
            out["picture"] = str(svg)
        if tax_file is not None and p.truth is not None and Path(p.truth).exists():
            try:
                from uniseg_cli.taxonomy.compare import compare
                from uniseg_cli.taxonomy.schema import read_taxonomy

                c = compare(read_taxonomy(tax_file), read_taxonomy(p.truth))
                out["vs_truth"] = {k: c[k] for k in c if not isinstance(c[k], (list, dict))}
            except UnisegError as e:
                out["vs_truth"] = {"error": e.message}
    ev = results.get("evaluate")
    if ev is not None:
        try:
            import json

            m = json.loads((ev.path / "metrics.json").read_text())
            out["evaluation"] = m.get("summary", m)
        except (OSError, ValueError):
            pass
    return out


def _print_summary(report: dict) -> None:
    from rich.table import Table

    t = Table(title="pipeline", title_justify="left")
    for c in ("stage", "run id", "action", "seconds", "path"):
        t.add_column(c)
    for e in report["stages"]:
        t.add_row(e["stage"], str(e.get("run_id")), e["action"], str(e.get("seconds", "")), e.get("path", ""))
    console.print(t)
    s = report.get("summary", {})
    vt = s.get("vs_truth")
    if vt and "f1" in vt:
        console.print(
            "taxonomy vs truth: "
            + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in vt.items())
        )
    ev = s.get("evaluation")
    if isinstance(ev, dict):
        parts = [f"{name} {d.get('miou')}" for name, d in (ev.get("datasets") or {}).items() if isinstance(d, dict)]
        parts += [f"{name} (unseen) {d.get('miou')}" for name, d in (ev.get("unseen") or {}).items() if isinstance(d, dict)]
        line = "mIoU %: " + ", ".join(parts) if parts else "evaluation:"
        if ev.get("mean_miou") is not None:
            line += f"; mean {ev['mean_miou']}"
        console.print(line)
    if s.get("taxonomy"):
        console.print(f"taxonomy: {s['taxonomy']}")
    if s.get("picture"):
        console.print(f"picture:  {s['picture']}")
