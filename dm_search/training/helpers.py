"""What the training loop needs besides a run: the errors a trial stops with, the device and
threads, the budget in epochs, the optimiser, augmentation, evaluation in batches, and the
checks of a config before anything is loaded."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm_search.common import plugins
from dm_search.common.paths import file_in_the_way
from dm_search.training.config import ConfigError, TrialConfig
from dm_search.training.inputs import Inputs, Stream
from dm_search.training.recipe import make_optimizer

__all__ = [
    "COLLAPSE_EPOCHS",
    "COLLAPSE_FROM_EPOCH",
    "NAN",
    "TrialCollapsed",
    "TrialDiverged",
    "augment",
    "budget",
    "check_code",
    "check_config",
    "check_folder",
    "get_trainer",
    "mean_of",
    "optimizer_for",
    "predict",
    "resolve_device",
    "threads_for",
    "total_epochs",
    "workers_for",
    "x_batches",
]
NAN = float("nan")


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss; the trial stops."""

    what = "diverged"

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"trial {self.what} in epoch {epoch}: {reason}")
        self.epoch = epoch
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[int, str]]:
        # Sent between processes (a Ray task's or a process pool's error) with its own fields.
        return type(self), (self.epoch, self.reason)


class TrialCollapsed(TrialDiverged):
    """The network died: chance accuracy with constant or exploding logits, or a loss that
    never moved. A failure with its reason, never a poor-but-valid result."""

    what = "collapsed"


# A collapse is declared only from this epoch on, and after this many dead epochs in a row:
# a slow start must never be mistaken for a dead network.
COLLAPSE_FROM_EPOCH = 5
COLLAPSE_EPOCHS = 3


# ------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available here; "
                          "use device: auto or cpu")
    return dev


def threads_for(cfg: TrialConfig) -> int:
    if cfg.threads:
        return cfg.threads
    # Ray and most schedulers say how many CPUs a task has through OMP_NUM_THREADS.
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers_for(cfg: TrialConfig) -> int:
    """DataLoader processes for streamed inputs: data.workers, else the trial's CPUs (at most
    4: reading and decoding small images rarely needs more)."""
    if cfg.data is not None and cfg.data.workers is not None:
        return cfg.data.workers
    return min(4, threads_for(cfg))


def budget(cfg: TrialConfig, num_train: int) -> tuple[int, int, int]:
    """(batch size, steps per epoch, total steps) for ``num_train`` training examples.

    The last partial batch is dropped: a batch of one breaks batch norm, and equal batches keep
    derivative normalisation comparable from step to step.
    """
    bs = min(cfg.optim.batch_size, num_train)
    steps_per_epoch = num_train // bs
    if cfg.optim.iterations is not None:
        return bs, steps_per_epoch, cfg.optim.iterations
    return bs, steps_per_epoch, (cfg.optim.epoch_budget or 1) * steps_per_epoch


def total_epochs(cfg: TrialConfig, num_train: int) -> int:
    _, per_epoch, total = budget(cfg, num_train)
    return math.ceil(total / per_epoch)


def optimizer_for(cfg: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    # The recipe's own optimiser: what an export hands to users is what trained here.
    return make_optimizer(cfg.optim, model.parameters())


def augment(x: Tensor, crop_pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Batched random crop (after zero padding by ``crop_pad``) and horizontal flip of
    images ``(N, C, H, W)`` on their device. Random draws come from a CPU generator."""
    if x.dim() != 4 or (crop_pad == 0 and not flip):
        return x
    n, _, h, w = x.shape
    if crop_pad:
        padded = F.pad(x, (crop_pad,) * 4)
        oy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * crop_pad + 1, (n,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(mask, x.flip(3), x)
    return x.contiguous()


def x_batches(x: Inputs, index_batches: list[Tensor], device: torch.device,
              workers: int = 0) -> Iterator[Tensor]:
    """The inputs of each batch of indices, on ``device``: sliced from memory, or read from
    disk by ``workers`` DataLoader processes (a few batches ahead of the training)."""
    if not isinstance(x, Stream):
        yield from (x[idx.to(x.device)] for idx in index_batches)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(x, batch_sampler=[idx.tolist() for idx in index_batches],
                        num_workers=workers, collate_fn=torch.stack,
                        pin_memory=device.type == "cuda")
    for xb in loader:
        yield xb.to(device, non_blocking=True)


@torch.inference_mode()
def predict(model: nn.Module, x: Inputs, y: Tensor, batch: int, amp: Any,
            channels_last: bool, workers: int = 0) -> tuple[Tensor, Tensor]:
    """(correct (N,) bool, p of the given label (N,)) in eval mode."""
    model.eval()
    correct, probs = [], []
    starts = range(0, len(y), batch)
    if isinstance(x, Stream):
        order = torch.arange(len(y))
        xs = x_batches(x, [order[i:i + batch] for i in starts], y.device, workers)
    else:
        xs = (x[i:i + batch] for i in starts)  # views: no copy of the split
    for i, xb in zip(starts, xs, strict=True):
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with amp:
            logits = model(xb).float()
        yb = y[i:i + batch]
        correct.append(logits.argmax(1) == yb)
        probs.append(torch.log_softmax(logits, 1).gather(1, yb[:, None]).squeeze(1).exp())
    model.train()
    if not correct:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(correct), torch.cat(probs)


def mean_of(t: Tensor) -> float:
    # In float64 an accuracy k/n is the nearest double to k/n, which prints as 0.825, where a
    # float32 mean printed as 0.824999988079071 in every table and the dashboard.
    return float(t.double().mean()) if t.numel() else NAN


def get_trainer(ref: str) -> Callable[..., Any]:
    """The trainer ``ref`` names, checked to be callable with one argument."""
    fn = plugins.load_reference(ref, "trainer")
    problem = plugins.call_problem(fn, (None,), {})
    if problem:
        raise plugins.UserCodeError(f"trainer {ref!r} is called as train(trial) and cannot "
                                    f"be: {problem}")
    return fn


def check_code(cfg: TrialConfig) -> None:
    """The user's code a config names (trainer, model factory, dataset loader): importable and
    callable as dm-search calls it, checked without running it or reading any data. What a
    detached study can be checked for on the submitting machine, whose data may be elsewhere.
    Raises ConfigError naming the field."""
    from dm_search.training.data import check_loader
    from dm_search.training.models import check_options

    def loader() -> None:
        if cfg.data is not None:
            check_loader(cfg.data)

    _run_checks([
        ("trainer", lambda: cfg.trainer and get_trainer(cfg.trainer)),
        ("model", lambda: check_options(cfg.model.name, cfg.model.options)),
        ("data", loader),
    ])


def check_config(cfg: TrialConfig) -> None:
    """What a trial would fail on at once, found before anything is spent: the user's code
    (:func:`check_code`), the dataset (files, label noise; a loader of one's own is called once
    and what it returns checked), the EDF and the checkpoint folder. Raises ConfigError naming
    the field."""
    from dm_search.training.data import check_available, is_builtin, load_raw

    def check_data() -> None:
        if cfg.data is None:
            return
        check_available(cfg.data)
        if not is_builtin(cfg.data.name):
            # A loader of one's own is called once here: what it returns (shapes, labels)
            # would otherwise fail every trial, one at a time, on the cluster.
            load_raw(cfg.data)

    check_code(cfg)
    _run_checks([
        ("data", check_data),
        ("loss.edf", cfg.loss.build_edf),
        ("checkpoint.dir", lambda: check_folder(cfg.checkpoint.dir)),
    ])


def _run_checks(checks: list[tuple[str, Callable[[], object]]]) -> None:
    """Each check in turn; the first ValueError (or missing dataset) as a ConfigError that
    names its field."""
    from dm_search.training.data import DatasetUnavailable

    for field_name, check in checks:
        try:
            check()
        except (ValueError, DatasetUnavailable) as err:
            raise ConfigError(f"{field_name}: {err}") from None


def check_folder(folder: str | None) -> None:
    # Found after an epoch of training otherwise, when the first checkpoint is saved.
    blocked = file_in_the_way(folder) if folder else None
    if blocked is not None:
        raise ValueError(f"{folder} cannot be created: {blocked} is a file, not a folder")
