"""The training recipe an EDF was validated with, as standard PyTorch objects.

Derivative normalisation fixes each batch's total push, so an EDF and the learning rate it
won with go together: the export file carries both, and ``load_recipe`` gives the recipe back
as a ``torch.optim`` optimizer and a ``torch.optim.lr_scheduler`` that follow the trainer's
own schedule step for step.

    recipe = load_recipe("best_edf.yaml")
    opt = recipe.optimizer(model.parameters())
    sched = recipe.scheduler(opt, total_steps=recipe.epochs * len(loader))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from dm_search.training.config import OptimConfig

__all__ = ["Recipe", "lr_factor", "make_optimizer"]


def lr_factor(o: OptimConfig, step: int, total: int, warmup: int) -> float:
    """The learning-rate multiplier at optimiser step ``step`` of ``total``: linear warm-up
    over ``warmup`` steps, then the schedule over the fraction of training done."""
    if step < warmup:
        return (step + 1) / warmup
    t = step / max(total, 1)
    if o.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if o.schedule == "multistep":
        return float(o.gamma ** sum(1 for m in o.milestones if t >= m))
    return 1.0


def make_optimizer(o: OptimConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimiser ``o`` names, with its learning rate as the base rate."""
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    cls = torch.optim.Adam if o.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


@dataclass(frozen=True)
class Recipe:
    """Optimiser, learning rate, schedule, batch size and length of training."""

    optim: OptimConfig
    epochs: int  # how long the EDF was trained (iteration budgets are converted)

    FIELDS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "batch_size",
              "schedule", "milestones", "gamma", "warmup_epochs")

    @classmethod
    def from_config(cls, optim: dict[str, Any] | OptimConfig, epochs: int) -> Recipe:
        o = optim if isinstance(optim, OptimConfig) else OptimConfig.model_validate(optim)
        # One budget: the epochs the EDF actually trained, however they were asked for.
        return cls(o.model_copy(update={"epochs": epochs, "iterations": None}), epochs)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Recipe:
        """From :meth:`to_dict`'s mapping. Raises ValueError naming a bad field."""
        from pydantic import ValidationError

        if not isinstance(doc, dict):
            raise ValueError(f"recipe must be a mapping; got {type(doc).__name__}")
        unknown = sorted(set(doc) - {*cls.FIELDS, "epochs"})
        if unknown:
            raise ValueError(f"recipe has unknown field(s) {', '.join(unknown)}")
        epochs = doc.get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"recipe.epochs must be a whole number >= 1; got {epochs!r}")
        try:
            return cls.from_config({k: doc[k] for k in cls.FIELDS if k in doc}, epochs)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "recipe"
            raise ValueError(f"recipe.{where}: {first['msg']}") from None

    def to_dict(self) -> dict[str, Any]:
        d = self.optim.model_dump(mode="json", include=set(self.FIELDS))
        return {**{k: d[k] for k in self.FIELDS}, "epochs": self.epochs}

    @property
    def lr(self) -> float:
        return self.optim.lr

    @property
    def batch_size(self) -> int:
        return self.optim.batch_size

    def with_lr(self, lr: float) -> Recipe:
        return Recipe(self.optim.model_copy(update={"lr": lr}), self.epochs)

    def optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The optimiser, with the recipe's learning rate as its base rate."""
        return make_optimizer(self.optim, params)

    def warmup_steps(self, total_steps: int) -> int:
        return round(self.optim.warmup_epochs * total_steps / self.epochs)

    def scheduler(self, optimizer: torch.optim.Optimizer,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        """The schedule over ``total_steps`` optimiser steps (``epochs * len(loader)``):
        call ``scheduler.step()`` after every ``optimizer.step()``."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1; got {total_steps}")
        warmup = self.warmup_steps(total_steps)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(self.optim, step, total_steps, warmup))

    def describe(self) -> str:
        o = self.optim
        extra = {"sgd": f", momentum {o.momentum:g}{', nesterov' if o.nesterov else ''}"}.get(
            o.optimizer, "")
        sched = o.schedule + (f" (milestones {list(o.milestones)}, gamma {o.gamma:g})"
                              if o.schedule == "multistep" else "")
        warm = f", warm-up {o.warmup_epochs:g} epochs" if o.warmup_epochs else ""
        return (f"{o.optimizer} lr {o.lr:g}{extra}, weight decay {o.weight_decay:g}, batch "
                f"{o.batch_size}, {sched} schedule{warm}, {self.epochs} epochs")
