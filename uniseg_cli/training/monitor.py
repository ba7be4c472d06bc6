"""Training logs: ``metrics.jsonl``, the rich progress display, optional TensorBoard, throughput.

``metrics.jsonl`` holds one JSON object per logging step::

    {"stage": "stage2", "phase": "gnn", "iteration": 40, "total": 400, "lr": 9.1e-05,
     "loss": 1.73, "ce/cityscapes": 0.91, ..., "images_per_s": 21.4, "eta_s": 512.0, "time": 1764...}

Loss values are means over the steps since the previous line. After a resume, lines beyond the
resumed iteration are dropped, so the file reads like one uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

import torch


class StepTimer:
    """Images per second and ETA over a sliding window of steps."""

    def __init__(self, start_iteration: int, total: int, window: int = 50):
        self.t0 = time.perf_counter()
        self.total, self.window = total, window
        self._times: list[tuple[float, int]] = []

    def step(self, images: int) -> None:
        self._times.append((time.perf_counter(), images))
        if len(self._times) > self.window + 1:
            self._times.pop(0)

    def images_per_s(self) -> float:
        if len(self._times) < 2:
            return 0.0
        dt = self._times[-1][0] - self._times[0][0]
        return sum(n for _, n in self._times[1:]) / dt if dt > 0 else 0.0

    def its_per_s(self) -> float:
        if len(self._times) < 2:
            return 0.0
        dt = self._times[-1][0] - self._times[0][0]
        return (len(self._times) - 1) / dt if dt > 0 else 0.0

    def eta_s(self, iteration: int) -> float:
        r = self.its_per_s()
        return (self.total - iteration) / r if r > 0 else float("nan")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class _Display:
    def __init__(self, progress, task_id):
        self.p, self.task_id = progress, task_id

    def update(self, iteration: int, phase: str, last: dict | None) -> None:
        if self.p is None:
            return
        info = f"phase {phase}"
        if last:
            info += f" | loss {last.get('loss', float('nan')):.4f} | {last.get('images_per_s', 0.0):.1f} img/s"
        self.p.update(self.task_id, completed=iteration, info=info)


class MetricsLogger:
    """Accumulates step losses and writes a line per logging step (rank 0 only: ``path`` None elsewhere)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._sums: dict[str, torch.Tensor] = {}
        self._n = 0
        self.last: dict | None = None
        self._tb = None
        if self.path is not None:
            try:  # optional dependency
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))
            except Exception:  # not installed (or broken): TensorBoard is optional
                self._tb = None

    def truncate_after(self, iteration: int) -> None:
        """Drop lines logged after ``iteration`` (left by a run that was killed later)."""
        if self.path is None or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if rec.get("iteration", 0) <= iteration:
                keep.append(line)
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)
        if keep:
            self.last = json.loads(keep[-1])

    def accumulate(self, losses: dict[str, torch.Tensor]) -> None:
        for k, v in losses.items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._n += 1

    def flush(self, **fields) -> dict:
        rec = dict(fields)
        for k, v in self._sums.items():
            rec[k] = float(v.item()) / max(self._n, 1)
        rec["time"] = time.time()
        self._sums, self._n = {}, 0
        self.last = rec
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(rec, sort_keys=True, default=float) + "\n")
            if self._tb is not None:
                step = int(rec.get("iteration", 0))
                for k, v in rec.items():
                    if isinstance(v, (int, float)) and k not in ("iteration", "total", "time"):
                        self._tb.add_scalar(f"{rec.get('stage', 'train')}/{k}", v, step)
        return rec

    @contextlib.contextmanager
    def display(self, stage: str, total: int, start: int, enabled: bool = True) -> Iterator[_Display]:
        """A rich progress bar (stage, phase, iteration, loss, images/s, ETA) on stderr."""
        if not enabled:
            yield _Display(None, None)
            return
        from rich.progress import TextColumn

        from uniseg_cli import ui

        with ui.progress(TextColumn("{task.fields[info]}")) as p:
            tid = p.add_task(stage, total=total, completed=start, info="")
            yield _Display(p, tid)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
