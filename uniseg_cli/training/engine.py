"""The iteration-based training loop shared by stage 1 (estimate-nodes), stage 2/3 (train) and baselines.

How a stage uses it::

    class Task(nn.Module):                       # owns every trainable part (segmenter, heads, GNN)
        def forward(self, batch, info: StepInfo) -> dict[str, Tensor]:
            ...                                  # return {"loss": total, "ce_cs": ..., ...}
                                                 # (no "loss" key: the values are summed)
    phases = [Phase("gnn", 15000, train=("gnn",), eval_modules=("segmenter",)),
              Phase("gnn-fixed-adj", 5000, train=("gnn",), freeze=("gnn.adj_logits",), eval_modules=("segmenter",)),
              Phase("seg", 20000, train=("segmenter",), eval_modules=("gnn",))]
    trainer = Trainer(task, phases, OptimConfig(lr=1e-4), batches=make_batches, stage="stage2",
                      dist=init_distributed("auto"), work_dir=work / "stage2", checkpoint_every=5000,
                      seed=0, hooks=MyHooks(), config=resolved_params_dict)
    summary = trainer.run()                      # resumes from work_dir's newest checkpoint, if any

Contract:

- ``batches(start_iteration)`` returns an iterator yielding the batch of iteration ``start``,
  ``start+1``, ... For an exact resume the batch of iteration i must depend only on (seed, rank,
  i); batches are moved to the device by the engine (tensors inside dicts/lists/tuples).
- Phases run in order; their lengths sum to the stage's iterations, over which the LR schedule
  (linear warmup from ``warmup_factor``·lr, then poly decay with power 0.9) runs. A parameter
  trains in a phase iff its name (in ``task.named_parameters()``) starts with a ``train`` prefix
  (``""`` = everything) and with no ``freeze`` prefix. ``eval_modules`` are held in eval mode
  (BatchNorm uses running statistics, dropout is off); everything else is in train mode.
- **Frozen means frozen.** One AdamW holds every parameter (name-keyed state survives phases);
  at each phase start ``requires_grad`` is set for the phase and every ``.grad`` is set to None,
  and gradients are zeroed with ``set_to_none``. AdamW skips parameters whose grad is None, so a
  frozen parameter gets neither weight decay nor a momentum update, and its moments wait
  unchanged for its next phase. Under DDP the module is re-wrapped per phase
  (see :mod:`uniseg_cli.training.distributed`).
- AdamW groups: LR × ``backbone_lr_mult`` for names containing ``backbone`` (× every matching
  ``lr_mults`` prefix multiplier, e.g. ``(("gnn", 5.0),)``); weight decay 0 for
  norm-layer parameters, biases and embeddings. Gradient clipping on the full model's L2 norm.
  AMP (fp16 autocast + GradScaler) on CUDA only.
- Randomness: before each iteration the python, numpy and torch RNGs are seeded from
  (seed, rank, iteration), so dropout and augmentation replay identically after a resume.
- ``hooks`` (subclass :class:`Hooks`): ``on_phase_start`` runs at the first iteration of each
  phase (e.g. solve the mapping, copy prototypes); ``after_step`` after each optimiser step;
  ``extra_state``/``load_extra_state`` put stage state (e.g. the solver's EMA) into checkpoints;
  ``on_end`` once at the end.
- Checkpoints (rank 0, every ``checkpoint_every`` iterations and at the end) go to ``work_dir`` as
  ``ckpt-<iteration>`` pairs (:mod:`uniseg_cli.training.checkpoint`); ``run()`` resumes from the
  newest one. ``metrics.jsonl`` (one JSON line per logging step: stage, phase, iteration, lr,
  losses, images/s, ETA) is written beside them; TensorBoard events too when it is installed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from uniseg_cli.errors import ArtifactError, UnisegError
from uniseg_cli.training import checkpoint as C
from uniseg_cli.training.distributed import DistContext, barrier, broadcast_module_buffers, wrap_ddp
from uniseg_cli.training.monitor import MetricsLogger, StepTimer

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
               nn.modules.instancenorm._InstanceNorm)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # base learning rate (AdamW)
    backbone_lr_mult: float = 0.1  # LR multiplier for parameters whose name contains "backbone"
    weight_decay: float = 0.05  # decoupled weight decay (0 for norms, biases, embeddings)
    warmup_iters: int = 1000  # linear warmup length (iterations)
    warmup_factor: float = 0.001  # LR factor at iteration 0 of the warmup (< 1: a real warmup)
    poly_power: float = 0.9  # poly decay power over the stage's iterations
    lr_mults: tuple[tuple[str, float], ...] = ()  # (parameter-name prefix, LR multiplier); every match multiplies
    clip_grad_norm: float | None = 0.01  # full-model gradient L2-norm clip (None: off)
    amp: bool = True  # fp16 autocast + GradScaler (CUDA only; ignored on CPU)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str  # shown in progress and logs, stored in checkpoints
    iters: int  # iterations in this phase
    train: tuple[str, ...] = ("",)  # parameter-name prefixes that train ("" = all)
    freeze: tuple[str, ...] = ()  # prefixes frozen even if matched by ``train``
    eval_modules: tuple[str, ...] = ()  # submodule prefixes held in eval mode
    meta: tuple[tuple[str, Any], ...] = ()  # stage-specific flags, e.g. (("kind", "gnn"),)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.meta).get(key, default)

    def trains(self, name: str) -> bool:
        return any(_under(name, p) for p in self.train) and not any(_under(name, p) for p in self.freeze)


@dataclasses.dataclass(frozen=True)
class StepInfo:
    iteration: int  # global iteration within the stage, 0-based
    total: int  # iterations in the stage
    phase: Phase
    phase_index: int
    phase_iter: int  # iteration within the phase, 0-based

    @property
    def phase_progress(self) -> float:
        return self.phase_iter / max(self.phase.iters, 1)


class Hooks:
    """Stage callbacks; override what you need."""

    def on_phase_start(self, trainer: "Trainer", info: StepInfo) -> None: ...

    def after_step(self, trainer: "Trainer", info: StepInfo, losses: dict[str, torch.Tensor]) -> None: ...

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {}

    def load_extra_state(self, tensors: dict[str, torch.Tensor], doc: dict) -> None: ...

    def on_end(self, trainer: "Trainer") -> None: ...


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def lr_factor(it: int, total: int, cfg: OptimConfig) -> float:
    """Warmup-poly multiplier at iteration ``it`` (detectron2 ``WarmupPolyLR`` with a real warmup)."""
    f = (1.0 - min(it, total) / max(total, 1)) ** cfg.poly_power
    if it < cfg.warmup_iters:
        a = it / cfg.warmup_iters
        f *= cfg.warmup_factor * (1 - a) + a
    return f


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW groups by (LR multiplier, weight decay); every parameter, frozen or not, exactly once."""
    no_decay: set[int] = set()
    for m in model.modules():
        if isinstance(m, _NORM_TYPES) or isinstance(m, nn.Embedding):
            no_decay.update(id(p) for p in m.parameters(recurse=False))
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        mult = cfg.backbone_lr_mult if "backbone" in name else 1.0
        for prefix, m in cfg.lr_mults:
            if _under(name, prefix):
                mult *= m
        wd = 0.0 if (id(p) in no_decay or name.endswith("bias") or "embed" in name.rsplit(".", 1)[-1]) else cfg.weight_decay
        groups.setdefault((mult, wd), []).append(p)
    return [{"params": ps, "lr": cfg.lr * m, "lr_mult": m, "weight_decay": wd} for (m, wd), ps in sorted(groups.items())]


def seed_step(seed: int, rank: int, iteration: int) -> None:
    """Seed python, numpy and torch from (seed, rank, iteration)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{iteration}".encode()).digest()[:8], "little")
    random.seed(h)
    np.random.seed(h % (2**32))
    torch.manual_seed(h % (2**63))


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict) and torch.is_tensor(batch.get("image")):
        return int(batch["image"].shape[0])
    if torch.is_tensor(batch):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch and torch.is_tensor(batch[0]):
        return int(batch[0].shape[0])
    return 0


class Trainer:
    """Runs the phases of one stage over ``task`` (see the module docstring)."""

    def __init__(self, task: nn.Module, phases: Sequence[Phase], optim: OptimConfig, *,
                 batches: Callable[[int], Iterator[Any]], stage: str = "train", dist: DistContext | None = None,
                 work_dir: str | Path | None = None, checkpoint_every: int = 0, keep_checkpoints: int = 2,
                 log_every: int = 20, seed: int = 0, hooks: Hooks | None = None, config: dict | None = None,
                 find_unused_parameters: bool = False, progress: bool = True):
        if not phases or any(p.iters < 0 for p in phases):
            raise UnisegError("training needs at least one phase with a non-negative length")
        self.dist = dist or DistContext()
        self.task = task.to(self.dist.device)
        self.phases = list(phases)
        self.cfg = optim
        self.total = sum(p.iters for p in self.phases)
        self.batches, self.stage, self.seed = batches, stage, seed
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.checkpoint_every, self.keep_checkpoints, self.log_every = checkpoint_every, keep_checkpoints, max(1, log_every)
        self.hooks = hooks or Hooks()
        self.config = config or {}
        self.find_unused = find_unused_parameters
        self.show_progress = progress
        self.iteration = 0
        self.use_amp = bool(optim.amp) and self.dist.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(param_groups(self.task, optim), lr=optim.lr, betas=optim.betas, eps=optim.eps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self._names = {id(p): n for n, p in self.task.named_parameters()}
        self._model: nn.Module = self.task
        self._eval_mods: list[nn.Module] = []
        self._phase_index = -1
        self.logger = MetricsLogger(self.work_dir / "metrics.jsonl" if self.work_dir and self.dist.is_main else None)

    # ------------------------------------------------------------------ phases

    def phase_at(self, it: int) -> tuple[int, int]:
        """(phase index, iteration within the phase) of global iteration ``it``."""
        start = 0
        for k, p in enumerate(self.phases):
            if it < start + p.iters:
                return k, it - start
            start += p.iters
        return len(self.phases) - 1, self.phases[-1].iters

    def apply_phase(self, k: int) -> None:
        """Set requires_grad, clear grads, set train/eval modes and (re)wrap for DDP."""
        ph = self.phases[k]
        for name, p in self.task.named_parameters():
            p.requires_grad_(ph.trains(name))
            p.grad = None
        self._eval_mods = [m for n, m in self.task.named_modules() if n and any(_under(n, e) for e in ph.eval_modules)]
        self._set_modes()
        self._model = None  # drop the old DDP wrapper (and its hooks) first
        self._model = wrap_ddp(self.task, self.dist, find_unused_parameters=self.find_unused)
        self._phase_index = k

    def _set_modes(self) -> None:
        self.task.train()
        for m in self._eval_mods:
            m.eval()

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BN statistics drift apart by the last step's batch under DDP)."""
        broadcast_module_buffers(self.task)

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.task.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"model.{k}": v for k, v in self.task.state_dict().items()}
        ot, odoc = C.optimizer_state_to_flat(self.optimizer, self._names)
        rt, rdoc = C.rng_state()
        et, edoc = self.hooks.extra_state()
        tensors.update(ot)
        tensors.update(rt)
        tensors.update({f"extra.{k}": v for k, v in et.items()})
        k, _ = self.phase_at(self.iteration)
        meta = {"stage": self.stage, "iteration": self.iteration, "total": self.total,
                "phase": self.phases[k].name, "phase_index": k,
                "phases": [dataclasses.asdict(p) for p in self.phases], "optim_config": dataclasses.asdict(self.cfg),
                "optimizer": odoc, "scheduler": {"kind": "warmup_poly", "iteration": self.iteration, "lr_factor": lr_factor(self.iteration, self.total, self.cfg)},
                "scaler": self.scaler.state_dict() if self.use_amp else {}, "rng": rdoc, "extra": edoc,
                "config": self.config, "seed": self.seed, "world_size": self.dist.world_size}
        return tensors, meta

    def save_checkpoint(self) -> None:
        if self.work_dir is None:
            return
        if self.dist.is_main:
            tensors, meta = self._state()
            C.write_checkpoint(self.work_dir, C.checkpoint_name(self.iteration), tensors, meta)
            C.prune_checkpoints(self.work_dir, keep=self.keep_checkpoints)
        barrier()

    def load_checkpoint(self, name: str) -> None:
        tensors, meta = C.read_checkpoint(self.work_dir, name)
        self.check_compatible(meta)
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = self.task.load_state_dict(model_sd, strict=False)
        if missing or unexpected:
            raise ArtifactError(f"checkpoint {self.work_dir / name}.json does not fit the model "
                                f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})",
                                hint=f"delete {self.work_dir} to start this run afresh.")
        params = dict(self.task.named_parameters())
        C.optimizer_state_from_flat(self.optimizer, params, tensors, meta["optimizer"])
        C.set_rng_state(tensors, meta.get("rng", {}))
        if self.use_amp and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.hooks.load_extra_state({k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}, meta.get("extra", {}))
        self.iteration = int(meta["iteration"])

    def check_compatible(self, meta: dict) -> None:
        mine = [dataclasses.asdict(p) for p in self.phases]
        if json.loads(json.dumps(meta.get("phases"))) != json.loads(json.dumps(mine)) or meta.get("stage") != self.stage:
            raise ArtifactError(f"the checkpoint in {self.work_dir} was written for another schedule ({meta.get('stage')}, "
                                f"{[p['name'] + ':' + str(p['iters']) for p in meta.get('phases', [])]})",
                                hint=f"delete {self.work_dir} to start this run afresh.")

    # ------------------------------------------------------------------ loop

    def run(self, until: int | None = None) -> dict:
        """Train to the end of the last phase (resuming if a checkpoint exists); return a summary.

        ``until``: stop after this many iterations (checkpointing there), e.g. for benchmarks/tests.
        """
        stop = self.total if until is None else min(int(until), self.total)
        resumed_from = None
        if self.work_dir is not None:
            name = C.latest_checkpoint(self.work_dir)
            if name is not None:
                self.load_checkpoint(name)
                resumed_from = self.iteration
        self.logger.truncate_after(self.iteration)
        timer = StepTimer(start_iteration=self.iteration, total=self.total)
        if self.iteration < stop:
            batches = self.batches(self.iteration)
            with self.logger.display(self.stage, self.total, self.iteration, enabled=self.show_progress and self.dist.is_main) as disp:
                while self.iteration < stop:
                    self._one_iteration(batches, timer, disp)
            self.sync_buffers()
            self.save_checkpoint()
        elif resumed_from is None:
            self.save_checkpoint()
        if self.iteration >= self.total:
            self.hooks.on_end(self)
        self.logger.close()
        return {"stage": self.stage, "iterations": self.total, "resumed_from": resumed_from,
                "last": self.logger.last, "seconds": timer.elapsed()}

    def _one_iteration(self, batches: Iterator[Any], timer: StepTimer, disp) -> None:
        it = self.iteration
        k, k_it = self.phase_at(it)
        info = StepInfo(it, self.total, self.phases[k], k, k_it)
        if k != self._phase_index or k_it == 0:
            if k != self._phase_index:
                self.apply_phase(k)
            if k_it == 0:
                self.hooks.on_phase_start(self, info)
                self._set_modes()
        batch = to_device(next(batches), self.dist.device)
        seed_step(self.seed, self.dist.rank, it)  # after fetching: whatever the batch source draws cannot matter
        self._set_modes()
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            out = self._model(batch, info)
        loss = out["loss"] if "loss" in out else sum(out.values())
        self.scaler.scale(loss).backward()
        trainable = [p for p in self.task.parameters() if p.grad is not None]
        if self.cfg.clip_grad_norm and trainable:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.clip_grad_norm)
        f = lr_factor(it, self.total, self.cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.lr * g["lr_mult"] * f
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration = it + 1
        losses = {"loss": loss.detach(), **{n: v.detach() for n, v in out.items() if n != "loss" and torch.is_tensor(v)}}
        timer.step(_batch_size(batch) * self.dist.world_size)
        self.hooks.after_step(self, info, losses)
        self.logger.accumulate(losses)
        if self.iteration % self.log_every == 0 or self.iteration == self.total:
            rec = self.logger.flush(stage=self.stage, phase=info.phase.name, iteration=self.iteration, total=self.total,
                                    lr=self.cfg.lr * f, images_per_s=timer.images_per_s(), eta_s=timer.eta_s(self.iteration))
            if not np.isfinite(rec.get("loss", 0.0)):
                raise UnisegError(f"{self.stage}: the loss became {rec['loss']} at iteration {self.iteration} (phase {info.phase.name})",
                                  hint="lower --lr or enable gradient clipping; the last checkpoint in the work directory is intact.")
        disp.update(self.iteration, info.phase.name, self.logger.last)
        if self.checkpoint_every and self.iteration % self.checkpoint_every == 0 and self.iteration < self.total:
            self.save_checkpoint()
