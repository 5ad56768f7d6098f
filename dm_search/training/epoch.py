"""One trial, step by step: its run state (model, data, optimiser, generators), one epoch of
training with its diagnostics, evaluation, checkpoints and the collapse check."""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm_search._version import __version__
from dm_search.common.records import without_unset
from dm_search.common.safe_load import load_plain
from dm_search.loss import DMLoss, collapse_signs, logit_health
from dm_search.training.config import ConfigError, TrialConfig
from dm_search.training.data import PreparedData, prepare_data
from dm_search.training.helpers import (
    COLLAPSE_EPOCHS,
    COLLAPSE_FROM_EPOCH,
    NAN,
    TrialCollapsed,
    TrialDiverged,
    augment,
    budget,
    mean_of,
    optimizer_for,
    predict,
    resolve_device,
    threads_for,
    workers_for,
    x_batches,
)
from dm_search.training.inputs import Stream
from dm_search.training.models import create_model
from dm_search.training.recipe import lr_factor

__all__ = ["Run", "check_alive", "evaluate", "restore", "save_state", "set_up", "train_epoch"]


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
class Run:
    """One trial's state between its steps: what set-up built and training changes."""

    cfg: TrialConfig
    data: PreparedData
    device: torch.device
    amp: Any
    channels_last: bool
    tensors: dict[str, Any]  # the splits and the corrupted mask, on the device (or streamed)
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
    workers: int = 0  # DataLoader processes reading streamed inputs


def set_up(cfg: TrialConfig, data: PreparedData | None) -> Run:
    """Device, data on it, model, optimiser, loss, random generators and the budget."""
    device = resolve_device(cfg.device)
    torch.set_num_threads(threads_for(cfg))
    if data is None:
        assert cfg.data is not None, "the built-in loop trains on a dataset (validated)"
        data = prepare_data(cfg.data)
    use_bf16 = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    if cfg.precision == "bf16" and device.type != "cuda":
        use_bf16 = device.type == "cpu"  # an explicit request is honoured on the CPU too
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext())
    # Streamed inputs stay where they are: DataLoader workers read them batch by batch.
    tensors = {k: v if isinstance(v, Stream) else v.to(device) for k, v in {
        "x_train": data.x_train, "y_train": data.y_train, "corrupted": data.corrupted,
        "x_val": data.x_val, "y_val": data.y_val, "x_test": data.x_test, "y_test": data.y_test,
    }.items()}
    # Model initialisation is the one place that draws from torch's global generator; fork it
    # so that a trial neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model.name, data.input_shape, data.num_classes,
                             **cfg.model.options)
    model.to(device)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model.to(memory_format=torch.channels_last)
    bs, steps_per_epoch, total_steps = budget(cfg, len(data.y_train))
    return Run(
        cfg=cfg, data=data, device=device, amp=amp, channels_last=channels_last,
        tensors=tensors,
        crop_pad=data.crop_pad if cfg.augment.crop_pad is None else cfg.augment.crop_pad,
        flip=data.flip if cfg.augment.flip is None else cfg.augment.flip,
        # The compiled forward shares the model's parameters; checkpoints save the model itself.
        model=model, net=cast(nn.Module, torch.compile(model)) if cfg.compile else model,
        opt=optimizer_for(cfg, model),
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
        workers=workers_for(cfg) if data.streamed else 0,
    )


def restore(run: Run) -> None:
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


def train_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One pass over the shuffled training set; returns the epoch's training metrics."""
    t, device, bs = run.tensors, run.device, run.batch_size
    t0 = time.perf_counter()
    run.model.train()
    n = len(t["y_train"])
    perm_cpu = torch.randperm(n, generator=run.g_shuffle)
    perm = perm_cpu.to(device)
    ce_sum = torch.zeros((), device=device)
    dm_sum = torch.zeros((), device=device)
    w_noisy = torch.zeros((), device=device)
    w_total = torch.zeros((), device=device)
    w_var = torch.zeros((), device=device)
    spread_sum = torch.zeros((), device=device)
    absmax = torch.zeros((), device=device)
    seen = 0
    scheduled = run.loss_fn.schedule is not None
    steps = max(0, min(run.steps_per_epoch, run.total_steps - run.step))
    xs = x_batches(t["x_train"], [perm_cpu[b * bs:(b + 1) * bs] for b in range(steps)],
                   device, run.workers)
    for b, xb in zip(range(steps), xs, strict=True):
        if scheduled:  # a function of the step alone: a resumed run follows the same path
            run.loss_fn.set_step(run.step, run.total_steps)
        idx = perm[b * bs:(b + 1) * bs]
        yb = t["y_train"][idx]
        loss, logits = _step(run, xb, yb)
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


def _step(run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One optimiser step on a batch at the step's learning rate; (loss, float32 logits)."""
    cfg = run.cfg
    lr = cfg.optim.lr * lr_factor(cfg.optim, run.step, run.total_steps, run.warmup)
    for group in run.opt.param_groups:
        group["lr"] = lr
    xb = augment(x, run.crop_pad, run.flip, run.g_aug)
    if run.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with run.amp:
        logits = run.net(xb)
    logits = logits.float()
    loss = run.loss_fn(logits, y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return loss, logits


def evaluate(run: Run) -> dict[str, float]:
    """Validation and test accuracy; with diagnostics, how the training labels are fitted."""
    t, ebs = run.tensors, run.cfg.eval_batch_size

    def on(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return predict(run.net, x, y, ebs, run.amp, run.channels_last, run.workers)

    val_correct, _ = on(t["x_val"], t["y_val"])
    test_correct, _ = on(t["x_test"], t["y_test"])
    out = {"val_acc": mean_of(val_correct), "test_acc": mean_of(test_correct)}
    if not run.cfg.diagnostics:
        return {**out, "intact_acc": NAN, "memorised": NAN, "p_clean": NAN, "p_noisy": NAN}
    corrupted, has_noise = t["corrupted"], run.has_noise
    tr_correct, tr_p = on(t["x_train"], t["y_train"])
    return {
        **out,
        "intact_acc": mean_of(tr_correct[~corrupted]),
        "memorised": mean_of(tr_correct[corrupted]) if has_noise else NAN,
        "p_clean": mean_of(tr_p[~corrupted]),
        "p_noisy": mean_of(tr_p[corrupted]) if has_noise else NAN,
    }


def save_state(run: Run, epoch: int) -> None:
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


def check_alive(run: Run, m: dict[str, float], dead: list[str]) -> None:
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
