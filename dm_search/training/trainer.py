"""One trial: train one network with one EDF and measure why it works. No Ray, no Optuna.

``run_trial(cfg, report)`` follows the paper's protocol (docs/method.md, "The protocol"): the
model trains on the (noisy) training split, is selected on the clean validation split, and is
measured on the untouched test set. After every epoch ``report(metrics)`` receives:

==================== ======================================================================
epoch                1-based epoch just finished
train_loss           mean cross-entropy against the labels training saw (noisy)
dm_loss              mean of DMLoss's value (the emphasis-weighted cross-entropy)
val_acc              accuracy on the clean validation split: the search objective
test_acc             accuracy on the test set
intact_acc           accuracy on training examples whose label is intact
memorised            fraction of corrupted training examples predicted as their WRONG label
p_clean / p_noisy    mean p (probability of the given label) on intact / corrupted examples
noisy_weight_share   share of the DM weight that went to corrupted examples this epoch
weight_var           variance of the normalised weights within a batch, averaged over batches
mode / spread        the EDF's emphasis mode and spread at the end of the epoch (they move
                     during training under an emphasis schedule, loss.edf_end; NaN where the
                     family has none)
lr                   learning rate at the end of the epoch
epoch_s              wall time of the epoch (training and evaluation)
samples_per_s        training examples per second (training phase only)
==================== ======================================================================
Metrics that do not apply (no corrupted examples, no validation split) are NaN.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm_search._version import __version__
from dm_search.common.paths import file_in_the_way
from dm_search.common.records import without_unset
from dm_search.common.safe_load import load_plain
from dm_search.loss import DMLoss, collapse_signs, logit_health
from dm_search.training.config import ConfigError, TrialConfig
from dm_search.training.data import PreparedData, prepare_data
from dm_search.training.models import create_model
from dm_search.training.recipe import lr_factor, make_optimizer

__all__ = ["METRICS", "TrialCollapsed", "TrialDiverged", "TrialResult", "run_trial"]

METRICS = (
    "epoch", "train_loss", "dm_loss", "val_acc", "test_acc", "intact_acc", "memorised",
    "p_clean", "p_noisy", "noisy_weight_share", "weight_var", "mode", "spread", "lr", "epoch_s",
    "samples_per_s",
)  # fmt: skip

Report = Callable[[dict[str, float]], None]
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


@dataclass
class TrialResult:
    """What a finished trial hands back (JSON-safe through :meth:`to_dict`)."""

    config: dict[str, Any]
    history: list[dict[str, float]]
    epochs_completed: int
    best_epoch: int
    best_val_acc: float
    test_acc_at_best: float
    final: dict[str, float]
    noise_rate: float
    num_train: int
    num_params: int
    fingerprint: str
    device: str
    wall_s: float
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available here; "
                          "use device: auto or cpu")
    return dev


def _threads(cfg: TrialConfig) -> int:
    if cfg.threads:
        return cfg.threads
    # Ray and most schedulers say how many CPUs a task has through OMP_NUM_THREADS.
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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


def _optimizer(cfg: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
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


@torch.inference_mode()
def _predict(model: nn.Module, x: Tensor, y: Tensor, batch: int, amp: Any,
             channels_last: bool) -> tuple[Tensor, Tensor]:
    """(correct (N,) bool, p of the given label (N,)) in eval mode."""
    model.eval()
    correct, probs = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
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


def _mean(t: Tensor) -> float:
    # In float64 an accuracy k/n is the nearest double to k/n, which prints as 0.825, where a
    # float32 mean printed as 0.824999988079071 in every table and the dashboard.
    return float(t.double().mean()) if t.numel() else NAN


def check_config(cfg: TrialConfig) -> None:
    """What a trial would fail on at once, found before anything is spent: the dataset (name,
    files, label noise), the model (name, options), the EDF and the checkpoint folder. Raises
    ConfigError naming the field."""
    from dm_search.training.data import DatasetUnavailable, check_available
    from dm_search.training.models import check_options

    checks: list[tuple[str, Callable[[], object]]] = [
        ("data", lambda: check_available(cfg.data)),
        ("model", lambda: check_options(cfg.model.name, cfg.model.options)),
        ("loss.edf", cfg.loss.build_edf),
        ("checkpoint.dir", lambda: _check_folder(cfg.checkpoint.dir)),
    ]
    for field_name, check in checks:
        try:
            check()
        except (ValueError, DatasetUnavailable) as err:
            raise ConfigError(f"{field_name}: {err}") from None


def _check_folder(folder: str | None) -> None:
    # Found after an epoch of training otherwise, when the first checkpoint is saved.
    blocked = file_in_the_way(folder) if folder else None
    if blocked is not None:
        raise ValueError(f"{folder} cannot be created: {blocked} is a file, not a folder")


# ------------------------------------------------------------------ checkpoints
_CKPT = "checkpoint.pt"
_CKPT_KEYS = ("config", "model", "optimizer", "g_shuffle", "g_aug", "step", "epoch", "history")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)  # a crash mid-write leaves the previous checkpoint intact


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's state, read as plain data only: a checkpoint directory can be shared
    or copied in, and unpickling a planted file would run its code."""
    retry = "delete it, or set checkpoint.resume: false to start over"
    try:
        state = load_plain(path, "checkpoint")
    except ValueError as err:
        raise ConfigError(f"{err}; {retry}") from None
    missing = [k for k in _CKPT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"checkpoint {path} is not a dm-search trial checkpoint (no "
                          f"{', '.join(missing)}); {retry}")
    return state


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return without_unset({k: v for k, v in cfg.items()
                          if k not in ("checkpoint", "threads", "eval_batch_size", "compile")})


# ------------------------------------------------------------------ the trial, step by step
@dataclass
class _Run:
    """One trial's state between its steps: what set-up built and training changes."""

    cfg: TrialConfig
    data: PreparedData
    device: torch.device
    amp: Any
    channels_last: bool
    tensors: dict[str, Tensor]  # the splits and the corrupted mask, on the device
    crop_pad: int
    flip: bool
    model: nn.Module
    net: nn.Module  # the model's forward: torch.compile'd with cfg.compile
    opt: torch.optim.Optimizer
    loss_fn: DMLoss
    g_shuffle: torch.Generator
    g_aug: torch.Generator
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup: int
    ckpt_path: Path | None
    cfg_dict: dict[str, Any]
    has_noise: bool  # any corrupted training label: the noise diagnostics apply
    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    start_epoch: int = 0
    chance: float | None = None  # accuracy of a constant answer on the evaluation split


def _set_up(cfg: TrialConfig, data: PreparedData | None) -> _Run:
    """Device, data on it, model, optimiser, loss, random generators and the budget."""
    device = resolve_device(cfg.device)
    torch.set_num_threads(_threads(cfg))
    if data is None:
        data = prepare_data(cfg.data)
    use_bf16 = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    if cfg.precision == "bf16" and device.type != "cuda":
        use_bf16 = device.type == "cpu"  # an explicit request is honoured on the CPU too
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext())
    tensors = {
        "x_train": data.x_train.to(device), "y_train": data.y_train.to(device),
        "corrupted": data.corrupted.to(device),
        "x_val": data.x_val.to(device), "y_val": data.y_val.to(device),
        "x_test": data.x_test.to(device), "y_test": data.y_test.to(device),
    }
    # Model initialisation is the one place that draws from torch's global generator; fork it
    # so that a trial neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model.name, data.input_shape, data.num_classes,
                             **cfg.model.options)
    model.to(device)
    channels_last = device.type == "cuda" and data.x_train.dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    bs, steps_per_epoch, total_steps = budget(cfg, len(data.y_train))
    return _Run(
        cfg=cfg, data=data, device=device, amp=amp, channels_last=channels_last,
        tensors=tensors,
        crop_pad=data.crop_pad if cfg.augment.crop_pad is None else cfg.augment.crop_pad,
        flip=data.flip if cfg.augment.flip is None else cfg.augment.flip,
        # The compiled forward shares the model's parameters; checkpoints save the model itself.
        model=model, net=cast(nn.Module, torch.compile(model)) if cfg.compile else model,
        opt=_optimizer(cfg, model),
        loss_fn=DMLoss(cfg.loss.build_schedule() or cfg.loss.build_edf(),
                       normalise=cfg.loss.normalise, eps=cfg.loss.eps,
                       compile=bool(cfg.compile)),
        g_shuffle=torch.Generator().manual_seed(cfg.seed + 1),
        g_aug=torch.Generator().manual_seed(cfg.seed + 2),
        batch_size=bs, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        epochs=math.ceil(total_steps / steps_per_epoch),
        warmup=round(cfg.optim.warmup_epochs * steps_per_epoch),
        ckpt_path=Path(cfg.checkpoint.dir) / _CKPT if cfg.checkpoint.dir else None,
        cfg_dict=cfg.to_dict(),
        has_noise=bool(data.corrupted.any()),
    )


def _restore(run: _Run) -> None:
    """Continue from the trial's checkpoint when there is one and resuming is on."""
    path = run.ckpt_path
    if path is None or not run.cfg.checkpoint.resume or not path.is_file():
        return
    # Loaded onto the CPU: the generators are CPU ones, and load_state_dict moves the model's
    # and the optimiser's tensors to where their parameters live.
    state = _load_checkpoint(path)
    if _comparable(state["config"]) != _comparable(run.cfg_dict):
        raise ConfigError(
            f"{path} was written by a different configuration; point "
            "checkpoint.dir elsewhere or set checkpoint.resume: false to start over"
        )
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.g_shuffle.set_state(state["g_shuffle"])
    run.g_aug.set_state(state["g_aug"])
    run.step, run.start_epoch, run.history = state["step"], state["epoch"], state["history"]


def _train_epoch(run: _Run, epoch: int) -> dict[str, float]:
    """One pass over the shuffled training set; returns the epoch's training metrics."""
    cfg, t, device, bs = run.cfg, run.tensors, run.device, run.batch_size
    t0 = time.perf_counter()
    run.model.train()
    n = len(t["y_train"])
    perm = torch.randperm(n, generator=run.g_shuffle).to(device)
    ce_sum = torch.zeros((), device=device)
    dm_sum = torch.zeros((), device=device)
    w_noisy = torch.zeros((), device=device)
    w_total = torch.zeros((), device=device)
    w_var = torch.zeros((), device=device)
    spread_sum = torch.zeros((), device=device)
    absmax = torch.zeros((), device=device)
    seen = 0
    scheduled = run.loss_fn.schedule is not None
    for b in range(run.steps_per_epoch):
        if run.step >= run.total_steps:
            break
        if scheduled:  # a function of the step alone: a resumed run follows the same path
            run.loss_fn.set_step(run.step, run.total_steps)
        lr = cfg.optim.lr * lr_factor(cfg.optim, run.step, run.total_steps, run.warmup)
        for group in run.opt.param_groups:
            group["lr"] = lr
        idx = perm[b * bs:(b + 1) * bs]
        xb = augment(t["x_train"][idx], run.crop_pad, run.flip, run.g_aug)
        if run.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = t["y_train"][idx]
        with run.amp:
            logits = run.net(xb)
        logits = logits.float()
        loss = run.loss_fn(logits, yb)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        # Running sums stay on the device: no synchronisation inside the epoch.
        w = run.loss_fn.last_weights
        assert w is not None
        dm_sum += loss.detach()
        ce_sum += F.cross_entropy(logits.detach(), yb)
        w_noisy += torch.dot(w, t["corrupted"][idx].to(w.dtype))  # boolean indexing would sync
        w_total += w.sum()
        w_var += w.var(unbiased=False)
        spread, top = logit_health(logits)
        spread_sum += spread
        absmax = torch.maximum(absmax, top)
        seen += len(idx)
        run.step += 1
    batches = max(seen // bs, 1)
    train_s = time.perf_counter() - t0
    train_loss = float(ce_sum) / batches
    dm_loss = float(dm_sum) / batches
    if not (math.isfinite(train_loss) and math.isfinite(dm_loss)):
        raise TrialDiverged(epoch + 1, f"training loss is {train_loss} (DM value {dm_loss})")
    edf = run.loss_fn.set_step(run.step, run.total_steps) if scheduled else run.loss_fn.edf
    return {
        "train_loss": train_loss,
        "dm_loss": dm_loss,
        "noisy_weight_share": float(w_noisy / w_total) if run.has_noise else NAN,
        "weight_var": float(w_var) / batches,
        "mode": NAN if edf.mode is None else edf.mode,
        "spread": NAN if edf.spread is None else edf.spread,
        "lr": float(run.opt.param_groups[0]["lr"]),
        "samples_per_s": seen / train_s if train_s > 0 else NAN,
        "logit_spread": float(spread_sum) / batches,
        "logit_absmax": float(absmax),
    }


def _evaluate(run: _Run) -> dict[str, float]:
    """Validation and test accuracy; with diagnostics, how the training labels are fitted."""
    t, ebs = run.tensors, run.cfg.eval_batch_size

    def predict(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return _predict(run.net, x, y, ebs, run.amp, run.channels_last)

    val_correct, _ = predict(t["x_val"], t["y_val"])
    test_correct, _ = predict(t["x_test"], t["y_test"])
    out = {"val_acc": _mean(val_correct), "test_acc": _mean(test_correct)}
    if not run.cfg.diagnostics:
        return {**out, "intact_acc": NAN, "memorised": NAN, "p_clean": NAN, "p_noisy": NAN}
    corrupted, has_noise = t["corrupted"], run.has_noise
    tr_correct, tr_p = predict(t["x_train"], t["y_train"])
    return {
        **out,
        "intact_acc": _mean(tr_correct[~corrupted]),
        "memorised": _mean(tr_correct[corrupted]) if has_noise else NAN,
        "p_clean": _mean(tr_p[~corrupted]),
        "p_noisy": _mean(tr_p[corrupted]) if has_noise else NAN,
    }


def _checkpoint(run: _Run, epoch: int) -> None:
    """Save every ``checkpoint.every`` epochs and after the last one."""
    if run.ckpt_path is None:
        return
    if (epoch + 1) % run.cfg.checkpoint.every and epoch + 1 != run.epochs:
        return
    _save_checkpoint(run.ckpt_path, {
        "config": run.cfg_dict, "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(), "g_shuffle": run.g_shuffle.get_state(),
        "g_aug": run.g_aug.get_state(), "step": run.step, "epoch": epoch + 1,
        "history": run.history, "version": __version__,
    })


def run_trial(
    cfg: TrialConfig,
    report: Report | None = None,
    *,
    data: PreparedData | None = None,
) -> TrialResult:
    """Train and evaluate one configuration, calling ``report(metrics)`` after every epoch.

    Args:
        cfg: the validated trial configuration.
        report: called once per epoch with the metrics listed in the module docstring.
        data: already prepared data (saves loading it again for several trials in one process).

    Returns:
        The :class:`TrialResult`, with the whole per-epoch history.

    Raises:
        TrialDiverged: the training loss became NaN or infinite.

    Example:
        >>> from dm_search.training.config import load_trial_config
        >>> cfg = load_trial_config("examples/mnist1d_dm.yaml", ["optim.epochs=2"])
        >>> result = run_trial(cfg, report=print)  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    run = _set_up(cfg, data)
    _restore(run)
    dead: list[str] = []
    for epoch in range(run.start_epoch, run.epochs):
        t0 = time.perf_counter()
        train = _train_epoch(run, epoch)
        metrics: dict[str, float] = {"epoch": epoch + 1, **train, **_evaluate(run)}
        metrics["epoch_s"] = time.perf_counter() - t0
        _check_alive(run, metrics, dead)
        metrics = {k: metrics[k] for k in METRICS}  # the documented order
        run.history.append(metrics)
        _checkpoint(run, epoch)
        if report is not None:
            report(dict(metrics))
    return _result(run, time.perf_counter() - t_start)


def _check_alive(run: _Run, m: dict[str, float], dead: list[str]) -> None:
    """Raise TrialCollapsed after COLLAPSE_EPOCHS dead epochs in a row (``dead`` carries the
    reasons from one epoch to the next)."""
    y = run.tensors["y_val"] if len(run.data.y_val) else run.tensors["y_test"]
    acc = m["val_acc"] if len(run.data.y_val) else m["test_acc"]
    c = run.data.num_classes
    if run.chance is None:  # what a constant answer scores: the largest class's share
        run.chance = max(1.0 / c, float(torch.bincount(y, minlength=c).max()) / max(len(y), 1))
    reason = collapse_signs(acc=acc, chance=run.chance, spread=m["logit_spread"],
                            absmax=m["logit_absmax"], loss=m["train_loss"], num_classes=c)
    if reason is None:
        dead.clear()
        return
    dead.append(reason)
    epoch = int(m["epoch"])
    if len(dead) >= COLLAPSE_EPOCHS and epoch >= COLLAPSE_FROM_EPOCH:
        raise TrialCollapsed(epoch, f"{reason}, at chance accuracy ({acc:.1%}) for "
                                    f"{len(dead)} epochs")


def _result(run: _Run, wall_s: float) -> TrialResult:
    history = run.history
    assert history, "epochs >= 1 always runs or resumes at least one epoch"
    has_val = len(run.data.y_val) > 0
    key = "val_acc" if has_val else "test_acc"
    best = max(history, key=lambda m: (m[key], -m["epoch"]))
    return TrialResult(
        config=run.cfg_dict,
        history=history,
        epochs_completed=len(history),
        best_epoch=int(best["epoch"]),
        best_val_acc=best["val_acc"] if has_val else NAN,
        test_acc_at_best=best["test_acc"],
        final=dict(history[-1]),
        noise_rate=run.data.noise_rate,
        num_train=len(run.data.y_train),
        num_params=sum(p.numel() for p in run.model.parameters()),
        fingerprint=run.data.fingerprint,
        device=str(run.device),
        wall_s=wall_s,
    )
