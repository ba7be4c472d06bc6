"""Stage ``estimate-nodes``: stage 1 (Multi-SegHead on every dataset), held-out confusion, node clustering.

Writes ``node-estimate/<run_id>/``:

- ``estimate.json`` (schema ``uniseg.node-estimate/1``): N, the label count, merges per dataset
  pair, every selected cluster (members, cost, name), where the confusion was measured, the
  clustering parameters, the integer program's status, and timings;
- ``init_mapping.parquet``: the initial mapping in the taxonomy schema (one node per selected
  cluster, then one per label left alone; weight 1) — train starts its GNN from it;
- ``confusion.h5``: ``hist[a][b]`` for every ordered dataset pair (:mod:`uniseg_cli.taxonomy.confusion`);
- ``multihead.safetensors`` + ``multihead.json``: the stage-1 model in the training engine's
  checkpoint format (``uniseg.checkpoint/1``; the JSON holds the model config, datasets and
  classes), which train warm-starts from and ``--multihead`` accepts;
- ``metrics.jsonl``: stage-1 training log (when it trained).

Decisions (METHOD §3, §10.2):

- The confusion is measured on images stage 1 did **not** train on: each dataset's validation
  split by default (``confusion_split``), or, with ``holdout_fraction`` > 0, a fixed fraction of
  each train split that is then left out of stage-1 training. (The public code used subsets of
  the training set.) It is summed across ranks under DDP, and never read from a stale cache (B9).
- Clustering uses the self-accuracy of every dataset (bug B2 fixed) and a real integer program;
  see :mod:`uniseg_cli.taxonomy.clustering` for what the criterion can and cannot merge.
- Interrupted stage-1 training resumes from the work directory
  ``<artifacts>/node-estimate/.work-<run_id>/`` (deleted once the artifact is published).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from uniseg_cli import artifacts as A
from uniseg_cli.errors import UsageError
from uniseg_cli.stages import StageContext, StageSpec, register
from uniseg_cli.taxonomy.clustering import DEFAULT_MAX_NEW_NODES, ClusterParams, ClusterResult
from uniseg_cli.ui import info

KIND = "node-estimate"
SCHEMA = "uniseg.node-estimate/1"
ESTIMATE = "estimate.json"
INIT_MAPPING = "init_mapping.parquet"
CONFUSION = "confusion.h5"
MULTIHEAD = "multihead"  # checkpoint stem: multihead.safetensors + multihead.json
GENERIC = "generic"  # the appearance encoder (with generic_iters > 0): generic.safetensors + generic.json


@dataclasses.dataclass(frozen=True)
class Params:
    # ---- stage-1 model
    backbone: str = "tiny"  # segmentation backbone (tiny, resnet18, hrnet_w48, ... see models)
    embed_dim: int = 64  # pixel-embedding size (paper: 512)
    pretrained: bool = False  # load ImageNet backbone weights (must be cached or online)
    multihead: str | None = None  # an existing stage-1 checkpoint (artifact dir or multihead.json): skip training
    # ---- stage-1 training (METHOD §7)
    iters: int = 500  # training iterations (paper: 100000)
    images_per_dataset: int = 2  # images of every dataset in each batch (paper: 3 per GPU)
    crop_size: int = 64  # square training crop in pixels (paper: 768)
    lr: float = 5e-3  # AdamW base learning rate (paper: 1e-4 with a pretrained backbone)
    backbone_lr_mult: float = 1.0  # LR multiplier of the backbone (paper: 0.1; 1.0 suits a backbone trained from scratch)
    weight_decay: float = 0.05  # AdamW decoupled weight decay
    warmup_iters: int = 20  # linear warmup iterations (paper config: 1000, but inert there)
    warmup_factor: float = 0.001  # LR factor at the first warmup iteration
    poly_power: float = 0.9  # poly decay power
    clip_grad_norm: float = 1.0  # full-model gradient L2-norm clip; 0 = off (paper: 0.01)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    ohem_thresh: float = 0.7  # OHEM: keep pixels whose true-class probability is below this
    ohem_min_kept: float = 0.0625  # OHEM: ... but at least this fraction of the valid pixels
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # per-dataset CE weight (default 1)
    checkpoint_every: int = 100  # iterations between resumable checkpoints (0: only at the end)
    workers: int = 0  # data-loader worker processes
    seed: int = 0  # random seed (batches, augmentation, init)
    channel_gain: float = 0.0  # stage-1 augmentation: scale each colour channel by 1 + U(-g, g) (0: off)
    channel_offset: float = 0.0  # ... and shift it by U(-o, o) grey levels (0: off)
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    # ---- held-out confusion
    confusion_split: str | None = None  # split to measure the confusion on (default: each dataset's val split)
    holdout_fraction: float = 0.0  # > 0: hold this share of each train split out of stage 1 and measure on it
    confusion_max_images: int = 0  # at most this many images per dataset (0: all)
    eval_max_side: int = 1200  # downscale confusion images whose longer side exceeds this (0: never)
    # ---- clustering (METHOD §3; the public code's values)
    tau: float = 0.4  # admissibility slack: R_a^b[i,j] > max(acc_a(i) - tau, 0) both ways
    pair_cost_threshold: float = 0.05  # a valid pair costs at most this
    extension_cost_threshold: float = 0.4  # a grown cluster costs at most this
    merge_reward: float = 0.5  # lambda in the selection objective
    max_new_nodes: tuple[int, ...] = DEFAULT_MAX_NEW_NODES  # candidates kept per cluster size 2, 3, ...
    mip_time_limit_s: float = 120.0  # time limit of the integer program
    min_centroid_cos: float = 0.0  # a merged pair's labels must embed alike: cosine of mean pixel embeddings (0: off)
    # ---- appearance evidence (taxonomy/evidence.py; off by default = the public code)
    generic_iters: int = 0  # dense contrastive iterations of the generic pixel encoder on the training images (0: off)
    generic_crop: int = 64  # its view size in pixels (a multiple of 4)
    generic_knn: int = 5  # neighbours of the label transfer
    generic_spread: float = 1.5  # a match lies within this many times the pixel's own label spread
    generic_pixels_per_class: int = 1500  # held-out pixels per label the transfer uses (a random subset) ...
    generic_max_pixels: int = 20000  # ... and at most this many per dataset (the transfer is quadratic in them)
    min_generic_share: float = 0.0  # a merge (or union part) needs this appearance support both ways' max (0: off)
    generic_background: bool = True  # on a CPU with a core left free, train the encoder in a second process beside stage 1
    unions: bool = False  # link a coarse label to the nodes of the finer labels it is the union of
    union_min_back: float = 0.8  # union part f: the coarse label's head calls >= this share of f's pixels c
    union_min_part: float = 0.005  # ... and f's head calls >= this share of the coarse label's pixels f
    union_cover: float = 0.8  # the parts together take >= this share of the coarse label's pixels
    grow_from_admissible: bool = False  # clusters of 3+ grow from (and over) every admissible pair, judged by their cost

    def identity(self) -> set[str]:
        """The params the artifact depends on: the run id is made from these only.

        ``generic_background`` only decides where the appearance encoder trains (the same weights
        either way), so switching it finds the same artifact.
        """
        return {f.name for f in dataclasses.fields(self)} - {"generic_background"}

    def validate(self) -> None:
        if self.iters < 1 and not self.multihead:
            raise ValueError("iters must be >= 1 (or pass --multihead CKPT to skip training)")
        if self.images_per_dataset < 1 or self.crop_size < 8 or self.embed_dim < 2:
            raise ValueError("images_per_dataset must be >= 1, crop_size >= 8 and embed_dim >= 2")
        if self.lr <= 0 or not 0 <= self.backbone_lr_mult or self.weight_decay < 0:
            raise ValueError("lr must be > 0, backbone_lr_mult and weight_decay >= 0")
        if self.warmup_iters < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError("warmup_iters must be >= 0 and warmup_factor in (0, 1]")
        if self.clip_grad_norm < 0:
            raise ValueError("clip_grad_norm must be >= 0 (0: off)")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must lie in [0, 1), got {self.holdout_fraction}")
        if self.holdout_fraction > 0 and self.confusion_split:
            raise ValueError("give either confusion_split or holdout_fraction, not both")
        if self.confusion_max_images < 0 or self.eval_max_side < 0 or self.checkpoint_every < 0 or self.workers < 0:
            raise ValueError("confusion_max_images, eval_max_side, checkpoint_every and workers must be >= 0")
        if any(w < 0 for w in self.loss_weights.values()):
            raise ValueError("loss_weights must be >= 0")
        if self.generic_iters < 0 or self.generic_knn < 1 or self.generic_pixels_per_class < 1 or self.generic_max_pixels < 1:
            raise ValueError("generic_iters must be >= 0; generic_knn, generic_pixels_per_class and generic_max_pixels >= 1")
        if self.generic_spread <= 0:
            raise ValueError(f"generic_spread must be > 0, got {self.generic_spread}")
        if self.generic_crop % 4 or self.generic_crop < 16:
            raise ValueError(f"generic_crop must be a multiple of 4 and >= 16, got {self.generic_crop}")
        self.transform_config()  # the crop and channel-shift settings check themselves
        if self.min_generic_share > 0 and self.generic_iters == 0:
            raise ValueError("min_generic_share needs the appearance evidence: set generic_iters > 0")
        self.cluster_params().validate()

    def transform_config(self):
        """Stage 1's training transform (crop size and the channel shift)."""
        from uniseg_cli.data.transforms import TrainTransformConfig

        return TrainTransformConfig.of(self)

    def cluster_params(self) -> ClusterParams:
        return ClusterParams(tau=self.tau, pair_cost_threshold=self.pair_cost_threshold,
                             extension_cost_threshold=self.extension_cost_threshold, merge_reward=self.merge_reward,
                             max_new_nodes=tuple(self.max_new_nodes), time_limit_s=self.mip_time_limit_s,
                             min_centroid_cos=self.min_centroid_cos, min_generic_share=self.min_generic_share,
                             unions=self.unions, union_min_back=self.union_min_back,
                             union_min_part=self.union_min_part, union_cover=self.union_cover,
                             grow_from_admissible=self.grow_from_admissible)


def work_dir(ctx: StageContext) -> Path:
    """Where stage-1 checkpoints live until the artifact is published (so a killed run resumes)."""
    return Path(ctx.root) / KIND / f".work-{ctx.run_id()}"


def run(ctx: StageContext) -> A.Artifact:
    """Train (or load) the Multi-SegHead model, measure the held-out confusion, cluster, publish.

    Args:
        ctx: ``ctx.params`` is :class:`Params`; ``ctx.train_datasets`` are the datasets (role train).

    Returns:
        The published ``node-estimate`` artifact (see the module docstring for its files).
    """
    from uniseg_cli.stages import stage1
    from uniseg_cli.taxonomy.clustering import estimate_nodes
    from uniseg_cli.taxonomy.confusion import write_confusion
    from uniseg_cli.training.distributed import barrier, init_distributed, shutdown

    p: Params = ctx.params
    datasets = ctx.train_datasets
    if not datasets:
        raise UsageError("estimate-nodes needs at least one dataset with role train",
                         hint="pass --dataset PATH (repeatable) or --pipeline pipeline.yaml.")
    unknown = sorted(set(p.loss_weights) - {d.name for d in datasets})
    if unknown:
        raise UsageError(f"loss_weights names unknown dataset(s) {', '.join(unknown)}",
                         hint=f"datasets: {', '.join(d.name for d in datasets)}.")
    data = stage1.open_datasets(datasets, p)  # checks splits, label spaces, the held-out images (cheap)
    dist = init_distributed(p.device)
    timings: dict[str, float] = {}
    background = None
    try:
        t0 = time.perf_counter()
        if p.multihead:
            model, train_info = stage1.load_multihead(p.multihead, data, dist.device), {"trained": False, "from": p.multihead}
        else:
            if p.generic_background and dist.world_size == 1 and dist.device.type == "cpu":
                background = stage1.BackgroundEncoder.start(datasets, p, stage1.segmenter_config(p), work_dir(ctx))
                if background is not None:
                    info("appearance encoder: training in a second process beside stage 1")
            model, train_info = stage1.train_multihead(p, data, dist, work_dir(ctx), config=ctx.params_dict())
            train_info["trained"] = True
        timings["stage1_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hist, conf_info = stage1.cross_confusion(model, data, p, dist)
        timings["confusion_s"] = time.perf_counter() - t0
        if not dist.is_main:
            barrier()  # rank 0 publishes; the others return its artifact
            return A.load_artifact(ctx.out_dir(), kind=KIND)
        generic = None
        if p.generic_iters > 0:
            t0 = time.perf_counter()
            if background is not None and not background.wait():
                info(f"appearance encoder: the background process failed (exit code {background.proc.exitcode}); "
                     "training it here")
            generic = stage1.appearance_evidence(p, data, dist.device, model.segmenter.config.to_dict(), work_dir(ctx))
            timings["appearance_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        names = [d.name for d in data]
        sums = conf_info.pop("centroid_sums")
        support = None
        if generic is not None:
            from uniseg_cli.taxonomy.evidence import pair_support

            support = pair_support(generic["shares"])
        res = estimate_nodes(hist, names, p.cluster_params(), centroid_cos=stage1.centroid_cosines(sums),
                             support=support)
        timings["clustering_s"] = time.perf_counter() - t0
        timings.update({f"clustering_{k}": v for k, v in res.timings.items()})
        classes = {d.name: list(d.classes) for d in data}
        with ctx.publish() as st:
            stage1.save_multihead(st.dir, MULTIHEAD, model, data, p, train_info)
            write_confusion(st.dir / CONFUSION, hist, classes, kind=KIND, run_id=st.run_id, split=conf_info,
                            centroid_sums=sums, generic_shares=generic["shares"] if generic else None)
            if generic is not None:
                stage1.save_generic_encoder(st.dir, GENERIC, generic["segmenter"], generic["train"])
            write_init_mapping(st.dir / INIT_MAPPING, res, classes, run_id=st.run_id)
            metrics = work_dir(ctx) / "metrics.jsonl"
            if metrics.exists():
                shutil.copyfile(metrics, st.dir / "metrics.jsonl")
            doc = estimate_doc(res, classes, p, conf_info, train_info, timings, st.run_id)
            (st.dir / ESTIMATE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            st.extra["num_nodes"] = res.num_nodes
        shutil.rmtree(work_dir(ctx), ignore_errors=True)
        barrier()
        return st.artifact
    finally:
        if background is not None:
            background.stop()
        shutdown()


# --------------------------------------------------------------------------------------------- payload


def node_names(res: ClusterResult, classes: dict[str, list[str]]) -> list[str]:
    """A readable name per node: its members' distinct names joined by " / "."""
    out = []
    for members in res.nodes():
        seen, parts = set(), []
        for d, c in members:
            lab = classes[res.datasets[d]][c].strip()
            if lab.lower() not in seen:
                seen.add(lab.lower())
                parts.append(lab)
        out.append(" / ".join(parts))
    return out


def write_init_mapping(path: Path, res: ClusterResult, classes: dict[str, list[str]], run_id: str) -> None:
    from uniseg_cli.taxonomy.schema import Taxonomy, write_taxonomy

    tax = Taxonomy.from_mappings(res.mappings(), datasets=classes, names=dict(enumerate(node_names(res, classes))),
                                 sources={"node-estimate": run_id}, kind=KIND, run_id=run_id)
    write_taxonomy(tax, path, kind=KIND, run_id=run_id)


def estimate_doc(res: ClusterResult, classes, p: Params, conf_info: dict, train_info: dict, timings: dict,
                 run_id: str) -> dict:
    from uniseg_cli.config import to_dict

    names = node_names(res, classes)
    clusters = [
        {"node": u, "name": names[u], "cost": round(float(c), 6),
         "members": [[res.datasets[d], int(i), classes[res.datasets[d]][i]] for d, i in members]}
        for u, (members, c) in enumerate(zip(res.clusters, res.cluster_costs))
    ]
    return {
        "schema": SCHEMA, "kind": KIND, "run_id": run_id,
        "num_nodes": res.num_nodes,
        "num_labels": int(sum(res.num_classes)),
        "largest_label_space": int(max(res.num_classes)),
        "num_clusters": len(res.clusters),
        "num_singletons": len(res.singletons),
        "datasets": {d: len(classes[d]) for d in res.datasets},
        "merges": res.merge_counts(),
        "clusters": clusters,
        "unions": [{"label": [res.datasets[d], int(c), classes[res.datasets[d]][c]],
                    "parts": [[res.datasets[b], int(f), classes[res.datasets[b]][f]] for b, f in u["parts"]],
                    "cover": u["cover"]} for u in res.unions for d, c in [u["label"]]],
        "selection": {"objective": res.objective, "status": res.mip_status,
                      "candidates_per_size": {str(k): v for k, v in res.candidates_per_size.items()}},
        "clustering_params": dataclasses.asdict(p.cluster_params()),
        "params": to_dict(p),
        "confusion": conf_info,
        "stage1": train_info,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }


def read_estimate(art: A.Artifact) -> dict:
    return json.loads(art.file(ESTIMATE).read_text(encoding="utf-8"))


def summary(art: A.Artifact) -> dict:
    """N and the merge counts (for ``--json`` and the pipeline report)."""
    doc = read_estimate(art)
    return {"num_nodes": doc["num_nodes"], "num_labels": doc["num_labels"], "merges": doc["merges"]}


def human_report(art: A.Artifact, top: int = 8) -> list[str]:
    """Lines for people: N, a table of merges per dataset pair, the largest clusters by name."""
    doc = read_estimate(art)
    lines = [f"N = {doc['num_nodes']} unified nodes from {doc['num_labels']} labels "
             f"({doc['num_clusters']} merged clusters, {doc['num_singletons']} labels alone)"]
    pairs = [(a, b, n) for a, row in doc["merges"].items() for b, n in row.items()]
    if pairs:
        wa = max(len(a) for a, _, _ in pairs)
        wb = max(len(b) for _, b, _ in pairs)
        lines.append(f"  {'dataset':<{wa}}  {'dataset':<{wb}}  merges")
        lines += [f"  {a:<{wa}}  {b:<{wb}}  {n:>6}" for a, b, n in pairs]
    big = sorted(doc["clusters"], key=lambda c: (-len(c["members"]), c["cost"]))[:top]
    if big:
        lines.append("largest clusters:")
        for c in big:
            members = ", ".join(f"{d}:{lab}" for d, _, lab in c["members"])
            lines.append(f"  {c['name']}  [{members}]  cost {c['cost']:.3f}")
    return lines


SPEC = register(StageSpec("estimate-nodes", KIND, Params, run, needs=(), datasets="full", summary=summary))
