"""Training output on rank 0: a tqdm bar, stdout summary lines, TensorBoard scalars and audio.

TensorBoard is optional: without the ``tensorboard`` package a note is printed once and only
stdout is used. Losses are read back from the device only at the logging intervals.
"""
from __future__ import annotations

import os
import sys
import time

import torch

__all__ = ["TrainLogger", "peak_memory_gb"]


def peak_memory_gb(device: torch.device) -> float:
    """Peak CUDA memory allocated (GPU), or the process's peak resident memory (CPU), in GB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1e9 if sys.platform == "darwin" else 1e6)
    except ImportError:  # Windows
        return float("nan")


class TrainLogger:
    """All of a run's output; a no-op on ranks other than 0.

    The progress bar shows a running loss: the mean since the last summary line, refreshed at
    most every ``POSTFIX_SECONDS`` (each refresh reads the loss back from the device).

    Args:
        cfg: the TrainConfig (intervals, checkpoint_path, progress, tensorboard).
        rank: this process's rank.
        device: for peak-memory readings.
    """

    POSTFIX_SECONDS = 0.5

    def __init__(self, cfg, rank: int, device: torch.device):
        self.cfg, self.enabled, self.device = cfg, rank == 0, device
        self.bar, self.writer, self.smooth_loss, self.last_loss = None, None, None, None
        self._loss_sum, self._n, self._t = None, 0, time.monotonic()
        self._postfix_t = -float("inf")

    def write(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def start(self, model, cfg_yaml: str, precision: str, n_train: int, n_valid: int, world: int) -> None:
        if not self.enabled:
            return
        n_params = sum(p.numel() for p in model.parameters())
        self.write(f"training {type(model).__name__} ({n_params:,d} parameters) on {self.device} ({precision}), "
                   f"{world} process(es); {n_train:,d} training / {n_valid:,d} validation files")
        self.write("config:\n" + cfg_yaml.rstrip())
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.write("note: tensorboard is not installed, so no TensorBoard logs "
                           "(pip install tensorboard); summaries go to stdout only")
            else:
                self.writer = SummaryWriter(os.path.join(self.cfg.checkpoint_path, "logs"))
                self.writer.add_text("config", "```\n" + cfg_yaml + "\n```")
        if self.cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.cfg.max_steps, unit="step", dynamic_ncols=True, desc="training")
        self._t = time.monotonic()

    def train_step(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float, final: bool = False) -> None:
        """Called after every optimizer step (cheap: syncs with the device only at intervals).

        ``final``: the run's last step, always printed."""
        if not self.enabled:
            return
        if self.bar is not None:
            if self.bar.n == 0 and step > 1:
                self.bar.reset(total=self.cfg.max_steps)
                self.bar.update(step - 1)
            self.bar.update(1)
        self._loss_sum = loss.float() if self._loss_sum is None else self._loss_sum + loss.float()
        self._n += 1
        if self.bar is not None and (final or time.monotonic() - self._postfix_t >= self.POSTFIX_SECONDS):
            self.bar.set_postfix(loss=f"{float(self._loss_sum) / self._n:.3f}", refresh=False)
            self._postfix_t = time.monotonic()
        summary = step % self.cfg.summary_interval == 0 and self.writer is not None
        stdout = step % self.cfg.stdout_interval == 0
        if not (summary or stdout or step == 1 or final):
            return
        value = float(loss)
        self.smooth_loss = value if self.smooth_loss is None else self.smooth_loss + 0.1 * (value - self.smooth_loss)
        if summary:
            self.writer.add_scalar("training/loss", value, step)
            self.writer.add_scalar("training/loss_smooth", self.smooth_loss, step)
            self.writer.add_scalar("opt/lr", lr, step)
            self.writer.add_scalar("opt/grad_norm", float(grad_norm), step)
        if stdout or step == 1 or final:
            mean = self.last_loss = float(self._loss_sum) / self._n
            sec = (time.monotonic() - self._t) / self._n
            self.write(f"step {step:,d} | loss {value:.4f} (mean {mean:.4f}) | {sec:.3f} s/batch | "
                       f"lr {lr:.3g} | grad norm {float(grad_norm):.3g} | peak mem {peak_memory_gb(self.device):.2f} GB")
            self._loss_sum, self._n, self._t = None, 0, time.monotonic()

    def validation(self, step: int, result: tuple[float, float], task, lr: float) -> None:
        if not self.enabled:
            return
        mean, reported = result
        unit = " bits/sample" if task.metric_name == "nll_bits" else ""
        self.write(f"validation at step {step:,d}: {task.metric_name} {reported:.4f}{unit} (loss {mean:.4f})")
        if self.writer is not None:
            self.writer.add_scalar("validation/loss", mean, step)
            self.writer.add_scalar(f"validation/{task.metric_name}", reported, step)
            self.writer.add_scalar("opt/lr", lr, step)
            self.writer.add_scalar("memory/peak_gb", peak_memory_gb(self.device), step)

    def audio(self, step: int, audio: torch.Tensor, sample_rate: int) -> None:
        """Log generated (N, L) audio to TensorBoard."""
        if self.enabled and self.writer is not None:
            for i, wav in enumerate(audio):
                self.writer.add_audio(f"samples/{i}", wav.clamp(-1, 1).unsqueeze(0), step, sample_rate=sample_rate)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
