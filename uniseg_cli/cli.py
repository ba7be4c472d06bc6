"""The `uniseg` command line: one thin function per command, in pipeline order.

Each function parses flags, calls a stage or library function, and prints. Errors are
:class:`uniseg_cli.errors.UnisegError`; only :func:`main` turns them into ``Error:``/``Hint:`` lines
on stderr and an exit code. Results go to stdout (``--json``: exactly one object); messages and
progress go to stderr.
"""
from __future__ import annotations

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


def parse_dataset_arg(text: str) -> "DatasetSpec":
    """``PATH`` | ``NAME=PATH`` | ``NAME=FORMAT:ROOT``, each optionally ending in ``@train``/``@unseen``."""
    from uniseg_cli.data.base import DatasetSpec

    role = "train"
    if text.endswith("@unseen") or text.endswith("@train"):
        text, role = text.rsplit("@", 1)
    if "=" in text:
        name, rest = text.split("=", 1)
        fmt, root = ("generic", rest)
        if ":" in rest and not Path(rest).exists():
            fmt, root = rest.split(":", 1)
    else:
        root, fmt = text, "generic"
        name = None
        ly = Path(root) / "labels.yaml"
        if ly.exists():
            import yaml

            try:
                name = (yaml.safe_load(ly.read_text()) or {}).get("name")
            except yaml.YAMLError:
                name = None
        name = name or Path(root).resolve().name
    if not name:
        raise UsageError(f"--dataset {text!r}: empty dataset name", hint="use PATH or NAME=FORMAT:ROOT.")
    return DatasetSpec(name=str(name), root=str(Path(root).resolve()), format=fmt, role=role)


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
    from uniseg_cli.pipeline import ensure_synth, load_pipeline, stage_context

    set_json_mode(json_out)
    p = load_pipeline(pipeline) if pipeline is not None else None
    root = A.artifacts_root(artifacts or (p.artifacts if p else None))
    if datasets:
        ds = [parse_dataset_arg(d) for d in datasets]
    elif p is not None:
        if not dry_run:
            ensure_synth(p)
        ds = p.datasets
    else:
        ds = []
    spec = S.get_stage(name)
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
        extra_inputs=extra_inputs,
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

# ------------------------------------------------------------------------------------ label text (issue 4)
# describe-labels, embed-labels are added here.

# ------------------------------------------------------------------------------------ estimate-nodes (issue 6)

# ------------------------------------------------------------------------------------ train / evaluate (issue 7)

# ------------------------------------------------------------------------------------ export / predict (issue 8)

# ------------------------------------------------------------------------------------ real datasets (issue 9)


# ------------------------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the app; turn known errors into ``Error:``/``Hint:`` and an exit code."""
    debug = os.environ.get("UNISEG_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
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
