"""The exported EDF in a user's own PyTorch loop, on data the study never saw: with the recipe
it was exported with it beats plain cross-entropy; with a learning rate it was not validated
at, the guard stops the collapse with a clear error."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from dm_search import TrainingCollapsed, load_loss, load_recipe
from dm_search.results.export import export_trial
from dm_search.training.exported import write_export

pytestmark = pytest.mark.slow

# The study searched MNIST-1D; the loop below trains on scikit-learn's digits.
RECIPE = {"lr": 0.02, "momentum": 0.9, "schedule": "cosine", "batch_size": 64, "epochs": 150}


@pytest.fixture
def exported(tmp_path, make_study):
    study = make_study(
        f"sqlite:///{tmp_path}/studies.db",
        trials=[({"family": "dm", "dm.mode": 0.5, "dm.spread": 20.0}, [.5, .6, .7, .8, .8, .8],
                 "full")],
        base={"data": {"name": "mnist1d", "noise": {"kind": "symmetric", "rate": 0.4}},
              "optim": RECIPE})
    return write_export(export_trial(study), tmp_path / "best_edf.yaml")


def _digits(rate: float = 0.4) -> tuple[torch.Tensor, ...]:
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    n = int(0.8 * len(y))
    noisy = y[:n].clone()
    flip = torch.rand(n, generator=g) < rate
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return x[:n], noisy, x[n:], y[n:]


def _train(loss_fn: nn.Module, recipe, seed: int) -> float:
    """The loop a user writes: their model and data, the file's loss and recipe."""
    x, y, x_test, y_test = _digits()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    steps = len(y) // recipe.batch_size
    opt = recipe.optimizer(model.parameters())
    sched = recipe.scheduler(opt, total_steps=recipe.epochs * steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(y), generator=g)
        for b in range(steps):
            idx = perm[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def test_the_exported_edf_with_its_recipe_beats_ce_in_a_plain_loop(exported):
    recipe = load_recipe(exported)
    assert (recipe.lr, recipe.epochs, recipe.batch_size) == (0.02, 150, 64)
    dm = [_train(load_loss(exported), recipe, seed) for seed in (0, 1)]
    ce = [_train(nn.CrossEntropyLoss(), recipe, seed) for seed in (0, 1)]
    assert sum(dm) / 2 > sum(ce) / 2 + 0.02, (dm, ce)


def test_a_collapse_ends_in_the_guards_clear_error(exported):
    # Five times the validated lr, and no schedule to calm it: the network dies.
    recipe = load_recipe(exported)
    hot = type(recipe).from_config(recipe.optim.model_copy(
        update={"lr": 0.1, "schedule": "constant"}), recipe.epochs)
    with pytest.raises(TrainingCollapsed, match=r"training has collapsed by step .* chance "
                                                 r"accuracy .*load_recipe"):
        _train(load_loss(exported, guard=True), hot, seed=0)
