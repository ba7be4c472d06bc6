"""Stage ``describe-labels``: one text description per label of every dataset in the pipeline.

Writes ``label-descriptions/<run_id>/descriptions.parquet`` (DESIGN §3): one row per dataset label,
columns ``dataset`` str, ``label_id`` int32, ``label`` str, ``prompt`` str, ``description`` str,
``provider`` str, ``model`` str; key-value metadata ``schema`` (``uniseg.label-descriptions/1``),
``kind``, ``run_id``. Rows: datasets in pipeline order, labels by id.

Providers (``provider``): ``template`` (offline, deterministic), ``openai`` (any OpenAI-compatible
server; key from ``$OPENAI_API_KEY`` only), ``file`` (``descriptions_file``: JSON, CSV or Parquet).
See :mod:`uniseg_cli.text.llm`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from uniseg_cli import artifacts as A
from uniseg_cli.errors import ArtifactError, DataError, UsageError
from uniseg_cli.stages import StageContext, StageSpec, register
from uniseg_cli.text import llm

KIND = "label-descriptions"
SCHEMA = "uniseg.label-descriptions/1"
FILENAME = "descriptions.parquet"
COLUMNS = ("dataset", "label_id", "label", "prompt", "description", "provider", "model")


@dataclasses.dataclass(frozen=True)
class Params:
    provider: str = "template"  # template (offline), openai (any OpenAI-compatible server) or file
    model: str = "gpt-4o-mini"  # the LLM's name on the server (openai provider)
    base_url: str | None = None  # server address; default $OPENAI_BASE_URL, else api.openai.com
    prompt_template: str = llm.DEFAULT_PROMPT  # placeholders {label} {dataset} {label_id} {stem}
    temperature: float = 0.0  # sampling temperature (part of the cache key)
    max_tokens: int = 200  # longest answer, in tokens
    concurrency: int = 16  # requests in flight at once
    timeout: float = 60.0  # seconds per request before it is retried
    max_retries: int = 5  # retries per label on 429, 5xx, timeouts and empty answers
    descriptions_file: str | None = None  # file provider: JSON, CSV or Parquet with dataset, label, description

    def identity(self) -> dict:
        """The params that can change the descriptions: the run id is made from these only.

        Connection settings (concurrency, timeout, retries) never change an answer, and the
        template and file providers ignore the LLM's settings, so changing ``--model`` under
        ``--provider template`` finds the same artifact instead of making a new run.
        """
        keep = {"provider", "prompt_template"}
        if self.provider == "openai":
            keep |= {"model", "base_url", "temperature", "max_tokens"}
        elif self.provider == "file":
            keep |= {"descriptions_file"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k in keep}

    def validate(self) -> None:
        if self.provider not in llm.PROVIDERS:
            raise ValueError(f"provider: must be one of {', '.join(llm.PROVIDERS)}, got {self.provider!r}")
        if self.provider == "file" and not self.descriptions_file:
            raise ValueError("provider file needs descriptions_file (--descriptions-file PATH)")
        if self.concurrency < 1 or self.max_tokens < 1 or self.max_retries < 0 or self.timeout <= 0:
            raise ValueError("concurrency and max_tokens must be >= 1, max_retries >= 0, timeout > 0")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature: must be within [0, 2], got {self.temperature}")


class DescriptionRow(NamedTuple):
    dataset: str
    label_id: int
    label: str
    prompt: str
    description: str
    provider: str
    model: str


def label_items(ctx: StageContext) -> list[llm.LabelItem]:
    """Every label of every pipeline dataset, in pipeline order and label-id order."""
    from uniseg_cli.data import open_dataset

    if not ctx.datasets:
        raise UsageError("describe-labels: no datasets, so no labels to describe",
                         hint="pass --dataset PATH (repeatable) or --pipeline pipeline.yaml.")
    items: list[llm.LabelItem] = []
    for spec in ctx.datasets:
        ls = open_dataset(spec).label_space
        if not ls.classes:
            raise DataError(f"dataset {spec.name} ({spec.root}) has an empty label list",
                            hint="list the classes in its labels.yaml.")
        known = list(ls.descriptions or [])
        for i, name in enumerate(ls.classes):
            items.append(llm.LabelItem(spec.name, i, str(name), known[i] if i < len(known) else None))
    return items


def run(ctx: StageContext) -> A.Artifact:
    """Describe every label of ``ctx.datasets`` and publish ``descriptions.parquet``.

    Args:
        ctx: stage context; ``ctx.params`` is :class:`Params`, ``ctx.datasets`` the datasets.

    Returns:
        The published ``label-descriptions`` artifact. Its manifest's ``extra.llm`` holds the request
        counts (total, cache hits, requests, retries) of the openai provider.
    """
    p: Params = ctx.params
    items = label_items(ctx)
    prompts = [it.prompt(p.prompt_template) for it in items]
    stats: dict = {}
    if p.provider == "template":
        texts, model = llm.template_descriptions(items), "template"
    elif p.provider == "file":
        texts, model = llm.file_descriptions(items, p.descriptions_file), Path(p.descriptions_file).name
    else:
        from uniseg_cli.text.llm_cache import ResponseCache, default_cache_dir

        with ResponseCache(default_cache_dir(ctx.root)) as cache:
            d = llm.OpenAIDescriber(p.model, base_url=p.base_url, temperature=p.temperature, max_tokens=p.max_tokens,
                                    concurrency=p.concurrency, timeout=p.timeout, max_retries=p.max_retries, cache=cache)
            try:
                texts = llm.openai_descriptions(items, prompts, d)
            finally:
                stats = d.stats.to_json()
        model = p.model
    rows = [DescriptionRow(it.dataset, it.label_id, it.label, pr, t, p.provider, model)
            for it, pr, t in zip(items, prompts, texts)]
    with ctx.publish() as st:
        write_descriptions(st.dir / FILENAME, rows, run_id=st.run_id)
        if stats:
            st.extra["llm"] = stats
    return st.artifact


# --------------------------------------------------------------------------------------------- payload


def write_descriptions(path: Path, rows: list[DescriptionRow], *, run_id: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("dataset", pa.string()), ("label_id", pa.int32()), ("label", pa.string()), ("prompt", pa.string()),
         ("description", pa.string()), ("provider", pa.string()), ("model", pa.string())],
        metadata={"schema": SCHEMA, "kind": KIND, "run_id": run_id},
    )
    cols = {c: [getattr(r, c) for r in rows] for c in COLUMNS}
    pq.write_table(pa.Table.from_pydict(cols, schema=schema), path)


def _payload_path(src) -> Path:
    return A.payload_path(src, KIND, FILENAME)


def read_descriptions(src) -> list[DescriptionRow]:
    """The rows of a ``descriptions.parquet`` (an Artifact, its directory, or the file itself).

    Raises ArtifactError (exit 3) on an unreadable file, a foreign schema or missing columns.
    """
    import pyarrow.parquet as pq

    path = _payload_path(src)
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ArtifactError(f"{path} is not a readable Parquet file: {e}",
                            hint="rebuild it with `uniseg describe-labels --force`.")
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    schema = meta.get("schema", "")
    if not schema.startswith("uniseg.label-descriptions/") or schema.split("/", 1)[1].split(".")[0] != "1":
        raise ArtifactError(f"{path} has schema {meta.get('schema')!r}, expected {SCHEMA}",
                            hint="pass a descriptions.parquet written by `uniseg describe-labels`.")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ArtifactError(f"{path} lacks the column(s) {', '.join(missing)}",
                            hint="rebuild it with `uniseg describe-labels --force`.")
    d = table.to_pydict()
    return [DescriptionRow(*(d[c][i] for c in COLUMNS)) for i in range(table.num_rows)]


def _summary(art: A.Artifact) -> dict:
    rows = read_descriptions(art)
    out = {"labels": len(rows), "datasets": len(dict.fromkeys(r.dataset for r in rows))}
    if "llm" in art.manifest.get("extra", {}):
        out["llm"] = art.manifest["extra"]["llm"]
    return out


def extra_inputs(p: Params) -> list[A.InputRef]:
    """What params name only indirectly: the server of the openai provider (``$OPENAI_BASE_URL`` when
    ``base_url`` is unset) and the content hash of the file provider's file, so that another server or
    an edited file changes the run id."""
    if p.provider == "openai":
        import hashlib
        import os

        server = (p.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        from urllib.parse import urlsplit, urlunsplit

        u = urlsplit(server)  # never record user:password@ of a URL
        shown = urlunsplit((u.scheme, u.hostname or "", u.path, "", "")) if u.port is None else urlunsplit(
            (u.scheme, f"{u.hostname}:{u.port}", u.path, "", ""))
        return [A.InputRef("llm-server", shown, hashlib.sha256(server.encode()).hexdigest())]
    if p.provider != "file" or not p.descriptions_file:
        return []
    path = Path(p.descriptions_file).expanduser()
    sha = A.sha256_file(path) if path.is_file() else f"missing:{path}"  # run() reports a missing file
    return [A.InputRef("file:descriptions", str(path), sha)]


SPEC = register(StageSpec("describe-labels", KIND, Params, run, datasets="labels", summary=_summary,
                          extra_inputs=extra_inputs))
