"""The training engine shared by estimate-nodes (stage 1), train (stages 2 and 3) and baselines.

- :mod:`~uniseg_cli.training.engine`: :class:`Trainer`, :class:`Phase`, :class:`OptimConfig`,
  :class:`StepInfo`, :class:`Hooks` — the iteration loop, AdamW groups, warmup-poly LR, phase
  freezing, AMP, clipping, checkpoints and resume.
- :mod:`~uniseg_cli.training.checkpoint`: safetensors + JSON checkpoints (no pickle).
- :mod:`~uniseg_cli.training.distributed`: torchrun/DDP context, all-reduce helpers, sharding.
- :mod:`~uniseg_cli.training.metrics`: confusion-matrix mIoU.
- :mod:`~uniseg_cli.training.monitor`: metrics.jsonl, progress display, TensorBoard (optional).
"""
from uniseg_cli.training.engine import Hooks, OptimConfig, Phase, StepInfo, Trainer, lr_factor, param_groups  # noqa: F401
