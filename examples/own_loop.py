"""A study of your own network, trained by your own loop: which EDF makes a small CNN without
batch norm robust to 40% symmetric label noise on MNIST-1D?

    python examples/own_loop.py                 # a few minutes on 2 CPU cores
    python examples/own_loop.py --name again    # a second study (or --resume to continue)

dm-search calls ``train(trial)`` once per trial, reference (plain CE through this same loop),
race run and final-stage run. Everything the loop needs comes from the TrialContext:

    trial.loss      the run's EDF as a loss: loss(logits, labels)
    trial.recipe    optimiser, lr, schedule, batch size (trial.recipe.optimizer(params) ...)
    trial.epochs    how long to train; trial.seed the run's seed
    trial.params    your own hyperparameters (the spec's base.params, searched ones included)
    trial.data      the spec's dataset: noisy training split, clean validation split, test set
                    (in the final stage: the full training set, and no validation split)
    trial.device    where to train
    trial.report    after each epoch: trial.report(epoch=..., val_acc=..., test_acc=...)
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

import dm_search


class SignalNet(nn.Module):
    """Three 1-D convolutions and a linear head; no batch norm, so the EDF and the learning
    rate have to suit it on their own."""

    def __init__(self, channels: int, length: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            features = self.body(torch.zeros(1, channels, length)).shape[1]
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    if len(y) == 0:
        return float("nan")  # the final stage has no validation split
    model.eval()
    correct = sum(int((model(x[i:i + 1024]).argmax(1) == y[i:i + 1024]).sum())
                  for i in range(0, len(y), 1024))
    model.train()
    return correct / len(y)


def train(trial: dm_search.TrialContext) -> None:
    """One run: the whole loop is ours; dm-search only hands in the loss and the recipe."""
    d = trial.data
    assert d is not None, "the spec below gives a dataset"
    x, y = d.x_train.to(trial.device), d.y_train.to(trial.device)
    channels, length = x.shape[1:]
    model = SignalNet(channels, length, d.num_classes, trial.params.get("width", 32))
    model.to(trial.device)
    recipe = trial.recipe
    steps = len(y) // recipe.batch_size
    opt = recipe.optimizer(model.parameters())
    sched = recipe.scheduler(opt, total_steps=trial.epochs * steps)
    shuffle = torch.Generator().manual_seed(trial.seed)
    for epoch in range(1, trial.epochs + 1):
        order = torch.randperm(len(y), generator=shuffle).to(trial.device)
        total = 0.0
        for b in range(steps):
            idx = order[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            loss = trial.loss(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        trial.report(epoch=epoch,
                     val_acc=accuracy(model, d.x_val.to(trial.device), d.y_val.to(trial.device)),
                     test_acc=accuracy(model, d.x_test.to(trial.device),
                                       d.y_test.to(trial.device)),
                     dm_loss=total / steps)


SPEC = {
    "name": "own-loop",
    "base": {
        "data": {"name": "mnist1d", "noise": {"kind": "symmetric", "rate": 0.4},
                 "val_fraction": 0.2, "seed": 0},
        "optim": {"epochs": 20, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
                  "weight_decay": 1.0e-4, "schedule": "cosine"},
        "params": {"width": 32},
    },
    "space": {"families": {"dm": {"mode": [0.0, 0.75], "spread": [4.0, 24.0]},
                           "gce": {"mode": [0.2, 0.5]}}},
    "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 6}},
    "n_trials": 14,
    "max_concurrent": 2,
    "final": {"enabled": True, "seeds": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=SPEC["name"], help="the study's name")
    parser.add_argument("--resume", action="store_true", help="continue the study")
    parser.add_argument("--trials", type=int, default=SPEC["n_trials"], help="searched trials")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--study-dir", default="runs", help="where the study's files go")
    args = parser.parse_args()
    spec = {**SPEC, "n_trials": args.trials, "study_dir": args.study_dir,
            "sampler": {**SPEC["sampler"], "seed": args.seed},
            "base": {**SPEC["base"], "optim": {**SPEC["base"]["optim"], "epochs": args.epochs}}}
    result = dm_search.search(spec, trainer=train, name=args.name, resume=args.resume)
    print(f"best EDF: {result.best_edf!r} (clean val acc {result.best_value:.3f})")
    for row in result.final_table():
        print(f"  {row['label']:<32} test {row['test_mean']:.3f} +- {row['test_std']:.3f} "
              f"over {row['seeds']} seeds")
    path = result.export(f"{args.study_dir}/{args.name}_best_edf.yaml")
    print(f"exported to {path}: dm_search.load_loss({str(path)!r})")


if __name__ == "__main__":
    main()
