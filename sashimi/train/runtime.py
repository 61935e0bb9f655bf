"""Process-level plumbing for training: devices, the DDP process group, and clean stopping."""
from __future__ import annotations

import atexit
import multiprocessing.util  # noqa: F401  (registers its exit handler before ours)
import os
import signal
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.utils.data  # noqa: F401  (registers its exit handler before ours)

from .config import ConfigError, TrainConfig

__all__ = ["Runtime", "select_device", "setup_runtime", "StopFlag", "quiet_worker", "stop_loader_workers",
           "track_loader_workers"]


@dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1


def select_device(spec: str, local_rank: int | None = None) -> torch.device:
    """'auto' -> CUDA (this process's GPU under torchrun) if available, else CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(f"config key 'device': {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'device' is {spec!r} but CUDA is not available (use device=cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(cfg.device, local if world > 1 else None)
    if world > 1:
        backend = cfg.distributed.dist_backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl" and device.type != "cuda":
            raise ConfigError("distributed.dist_backend=nccl needs GPUs; use gloo (or auto) on CPU")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, init_method="env://")
    return Runtime(rank, world, local, device)


class StopFlag:
    """SIGINT / SIGTERM: finish the current step, save a checkpoint, exit. A second Ctrl-C aborts."""

    def __init__(self):
        self.signum, self._old = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum


def quiet_worker(_: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave Ctrl-C / SIGTERM to the main process, which
    stops cleanly (a worker killed by a job-wide SIGTERM would make the DataLoader raise in the
    main process at an arbitrary point, before it could save).

    The price: ``multiprocessing`` cannot end such a worker at interpreter exit (it sends SIGTERM,
    then waits for it forever). So the training loop stops its workers on every exit path
    (:func:`stop_loader_workers`), and any still running at exit (persistent workers, or a path
    that missed them) are stopped then (:func:`track_loader_workers`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_loader_workers(it) -> None:
    """Shut down a DataLoader iterator's worker processes now (a no-op without workers).

    Not left to garbage collection: an exception's traceback keeps the iterator alive (its frames
    form a reference cycle) until after ``multiprocessing``'s exit handler has hung on them."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


_tracked = weakref.WeakSet()
_exit_handler_registered = False


def track_loader_workers(it) -> None:
    """Stop the workers of DataLoader iterator ``it`` at interpreter exit if they still run.

    The exit handler is registered at the first call, not on import (importing changes nothing).
    Exit handlers run last registered, first run: by then multiprocessing's (which would wait for
    the workers forever) and torch's (after which shutting down is a no-op) are registered, both
    imported above, so this one runs before them."""
    global _exit_handler_registered
    if not hasattr(it, "_shutdown_workers"):
        return
    if not _exit_handler_registered:
        atexit.register(_stop_tracked_workers)
        _exit_handler_registered = True
    _tracked.add(it)


def _stop_tracked_workers() -> None:
    for it in list(_tracked):
        stop_loader_workers(it)
